"""AppTest checks of the Train page: options bound to the URL, a tiny run in a worker process, live weights."""

import os
import subprocess
import sys
import textwrap

import pytest
from streamlit.testing.v1 import AppTest

from tests.conftest import REPO
from tests.waits import wait_until
from utkface_core import jobs, runs
from utkface_core.labels import HEADS

APP = "../streamlit_app.py"


@pytest.fixture(autouse=True)
def no_worker_left_running(monkeypatch):
    """Stop every worker a test left running (a failed test must not leave a training behind)."""
    yield

    def workers():  # jobs made without a worker (spawn=False) carry this process's pid: nothing to stop
        return [j for j in jobs.list_jobs() if j.active and j.status.get("pid") != os.getpid()]

    for job in workers():
        jobs.request_stop(job, None, admin=True)
    wait_until(lambda: not workers(), "the test's workers to stop")


def train_page(**query) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=180)
    for key, value in query.items():
        at.query_params[key] = value
    at.run()
    return at.switch_page("pages/train.py").run()


def weights(at: AppTest) -> list[float]:
    return [at.slider(key=f"train_w_{h}").value for h in HEADS]


def test_train_page_shows_the_options_with_keys():
    at = train_page()
    assert not at.exception
    assert at.selectbox(key="train_preset").value == "fast"
    assert weights(at) == [2.0, 1.0, 1.5]


def test_url_reopens_preset_and_auto_weights():
    at = train_page(train_preset="tutorial", train_auto="true", train_w_gender="0.7")
    assert at.selectbox(key="train_preset").value == "tutorial"
    assert at.toggle(key="train_auto").value is True
    assert at.slider(key="train_w_gender").value == pytest.approx(0.7)


def test_switching_the_data_source_keeps_the_weight_sliders():
    at = train_page()
    at.slider(key="train_w_age").set_value(3.5).run()
    at.sidebar.radio(key="data_kind").set_value("folder").run()
    at.sidebar.radio(key="data_kind").set_value("demo").run()
    assert not at.exception
    assert weights(at) == [3.5, 1.0, 1.5]


@pytest.fixture
def demo_runs(tmp_path, monkeypatch):
    """A fresh runs folder for the page and its workers."""
    monkeypatch.setenv("UTKFACE_RUNS_DIR", str(tmp_path / "runs"))
    return tmp_path / "runs"


@pytest.mark.slow
def test_tiny_training_runs_in_a_worker_takes_live_weights_and_is_listed(demo_runs):
    at = train_page()
    wait_until(lambda: not at.run().button(key="train_start").disabled, "the demo faces to be drawn")
    at.radio(key="train_mode").set_value("epochs").run()
    at.number_input(key="train_epochs").set_value(300).run()
    at.number_input(key="train_size_fast").set_value(32).run()
    at.button(key="train_start").click().run()
    assert not at.exception
    job = jobs.latest_job("train")
    assert job is not None and job.owner == at.session_state["_owner_token"]
    assert runs.load_run(job.dir).state in ("preparing", "queued", "running")  # listed at once, never "broken"
    wait_until(lambda: jobs.load_job(job.dir).phase in ("training", "validating"), "training to start")
    # The worker records its time to first batch (from the Start click) for the page and the benchmark.
    (first,) = [e for e in runs.read_events(job.dir)[0] if e.get("kind") == "first_batch"]
    assert 0 < first["since_worker_start_s"] < first["since_submit_s"]
    at.slider(key="train_w_gender").set_value(0.5).run()  # a live change reaches the worker
    wait_until(
        lambda: (jobs.weights_in_force(jobs.load_job(job.dir)) or {}).get("gender") == 0.5,
        "the worker to train with gender weight 0.5",
    )
    # A reload (a new session of the same visitor would have a new token: same session here) shows the weights in
    # force, not the defaults.
    at.run()
    assert weights(at) == [2.0, 0.5, 1.5]
    (bar,) = at.get("progress")
    assert "epoch" in bar.proto.text and bar.proto.value < 100  # never 100 % before the end
    at.button(key="train_stop").click().run()
    wait_until(lambda: not jobs.load_job(job.dir).active, "the training to stop")
    at.run()
    assert jobs.load_job(job.dir).state == "stopped"
    assert job.dir.name in str(at.dataframe(key="train_runs_table").value)
    assert runs.weight_changes(job.dir)[0]["new"]["gender"] == 0.5


@pytest.mark.slow
def test_another_visitors_training_shows_disabled_sliders_and_a_queue_entry(demo_runs, tiny_demo_dir):
    from utkface_core.config import TrainConfig
    from utkface_core.workflow import start_training_job

    other = start_training_job(
        TrainConfig(
            epochs=300,
            image_size=32,
            batch_size=8,
            min_age=0,
            max_age=116,
            early_stopping_patience=None,
            loss_weights={"age": 1.0, "gender": 2.5, "race": 0.5},
        ),
        tiny_demo_dir,
        owner="someone-else",
    )
    try:
        wait_until(lambda: jobs.load_job(other.dir).phase in ("training", "validating"), "the other training")
        at = train_page()
        assert weights(at) == [1.0, 2.5, 0.5]  # the weights in force, not the defaults
        assert all(at.slider(key=f"train_w_{h}").disabled for h in HEADS)
        assert at.button(key="train_stop").disabled
        page_text = " ".join(str(c.value) for c in at.caption)
        assert "another visitor" in page_text and "someone-else" not in page_text
    finally:
        jobs.request_stop(jobs.load_job(other.dir), "someone-else")
        wait_until(lambda: not jobs.load_job(other.dir).active, "the other training to stop")


@pytest.fixture
def tiny_demo_dir(tmp_path):
    from utkface_core.data.demo import generate_demo_dataset

    return generate_demo_dataset(tmp_path / "demo", n=120, seed=0)


def _finished_run(root, name: str, owner: str):
    run = runs.create_job_dir(
        root,
        name,
        {"config.json": {"preset": "fast", "owner": owner}, "status.json": {"state": "completed", "owner": owner}},
    )
    runs.write_json_atomic(run / "metrics.json", {"age_mae": 9.0, "weight_changes": 0})
    return run


def test_only_your_own_finished_runs_can_be_deleted_and_they_go_to_the_trash(demo_runs):
    mine = _finished_run(demo_runs, "mine", "me")
    theirs = _finished_run(demo_runs, "theirs", "someone-else")
    at = AppTest.from_file(APP, default_timeout=180)
    at.session_state["_owner_token"] = "me"
    at.run()
    at.switch_page("pages/train.py").run()
    names = list(at.dataframe(key="train_runs_table").value["run"])
    at.session_state["train_runs_table"] = {
        "selection": {"rows": [names.index(mine.name), names.index(theirs.name)], "columns": []}
    }
    at.run()
    assert at.button(key="train_delete").label == "Delete 1 selected run(s)"
    assert any("Only finished runs that you started" in c.value for c in at.caption)
    at.button(key="train_delete").click().run()
    at.button(key="confirm_delete_yes").click().run()
    assert not at.exception
    assert not mine.exists() and theirs.exists()
    assert any(p.name.startswith(mine.name) for p in (demo_runs / runs.TRASH_DIR).iterdir())


def test_train_page_has_a_sweep_tab_that_a_link_reopens():
    at = train_page()
    assert not at.exception
    assert [t.label for t in at.tabs] == ["Train", "Sweep"]
    assert at.session_state["train_tab"] == "Train"
    assert at.selectbox(key="sweep_strategy").value == "grid"  # both tabs run: hidden settings keep their state
    linked = train_page(train_tab="Sweep", sweep_strategy="optuna")
    assert not linked.exception
    assert linked.session_state["train_tab"] == "Sweep"
    assert linked.selectbox(key="sweep_strategy").value == "optuna"
    assert linked.selectbox(key="train_preset").value == "fast"


def test_train_page_names_no_server_path_and_shows_the_limit_notes(monkeypatch):
    from utkface_core.paths import runs_dir

    monkeypatch.setenv("UTKFACE_MAX_TRAIN_MIN_PRIVATE", "1")
    at = train_page()
    assert not at.exception
    texts = [c.value for c in at.caption] + [m.value for m in at.markdown] + [i.value for i in at.info]
    assert not [t for t in texts if str(runs_dir()) in t]
    assert any("Training time limited to 1 minutes" in t for t in texts)  # 2 minutes asked by default


def test_the_train_page_draws_without_importing_tensorflow(app_dir):
    # Importing TensorFlow takes seconds: a switch to the Train page must not pay it (issue 7: within 1 s).
    code = textwrap.dedent(
        """
        import sys
        from streamlit.testing.v1 import AppTest
        at = AppTest.from_file("streamlit_app.py", default_timeout=180)
        at.run()
        at.switch_page("pages/train.py").run()
        assert not at.exception and at.slider(key="train_w_age").value == 2.0, at.exception
        print(sorted(name for name in ("tensorflow", "keras") if name in sys.modules))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=dict(os.environ), capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"


def _epoch(run_dir, epoch: int) -> None:
    logs = {"loss": 1.0 / (epoch + 1), "age_mae": 10.0 - epoch, "val_age_mae": 11.0 - epoch}
    runs.append_event(run_dir, {"kind": "epoch", "epoch": epoch, "logs": logs, "weights": {"age": 2.0}})


def _curve_specs(at: AppTest) -> list[str]:
    return [chart.proto.spec for chart in at.get("plotly_chart")]


def _epochs_drawn(spec: str) -> list[int]:
    """The epochs on a curve's x axis (plotly sends numbers as a base64 typed array: {"dtype", "bdata"})."""
    import base64
    import json

    import numpy as np

    x = json.loads(spec)["data"][0]["x"]
    return [int(v) for v in (np.frombuffer(base64.b64decode(x["bdata"]), x["dtype"]) if isinstance(x, dict) else x)]


def test_live_curves_are_resent_unchanged_until_an_epoch_arrives_and_then_at_most_every_few_seconds(demo_runs):
    # The browser redraws a Plotly chart only when its figure changed: watching must not redraw five charts per run.
    job = jobs.submit_job("train", {}, "me", label="a live run", spawn=False)  # active, this process its worker
    runs.write_status(job.dir, "running", phase="training")
    _epoch(job.dir, 0)
    at = AppTest.from_file(APP, default_timeout=180)
    at.session_state["_owner_token"] = "me"
    at.run()
    at.switch_page("pages/train.py").run()
    assert not at.exception
    first = _curve_specs(at)
    assert len(first) == 5
    assert _curve_specs(at.run()) == first  # nothing new: the very same figures

    _epoch(job.dir, 1)
    assert _curve_specs(at.run()) == first  # a new epoch right after a draw waits (LIVE_CURVES_S)
    run_dir, version, _ = at.session_state["_train_curves"]
    at.session_state["_train_curves"] = (run_dir, version, float("-inf"))  # as if the last draw were long ago
    second = _curve_specs(at.run())
    assert _epochs_drawn(first[0]) == [1] and _epochs_drawn(second[0]) == [1, 2]
    assert _curve_specs(at.run()) == second

    _epoch(job.dir, 2)
    runs.write_status(job.dir, "completed", "done")  # an ended run shows its final curves at once
    final = _curve_specs(at.run())
    assert not at.exception
    assert _epochs_drawn(final[0]) == [1, 2, 3]
