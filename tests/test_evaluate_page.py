"""AppTest checks of the Evaluate page on two tiny hand-built runs."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from tests.test_cli_eval_predict import make_tiny_run, tiny_model
from tests.waits import wait_until
from utkface_core.evaluation import evalcharts
from utkface_core.evaluation.evaluation import evaluate_run
from utkface_core.jobs import list_jobs

APP = "../streamlit_app.py"


@pytest.fixture(scope="module")
def runs_root(tmp_path_factory):
    """A runs folder with two finished tiny runs, 'run-a' (older) and 'run-b' (newer)."""
    root = tmp_path_factory.mktemp("eval-runs")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("UTKFACE_RUNS_DIR", str(root))
        make_tiny_run(root, "run-a")
        import keras

        model_b = tiny_model()
        model_b.get_layer("race").set_weights([w * 3 for w in model_b.get_layer("race").get_weights()])
        make_tiny_run(root, "run-b", model=model_b, seed=1)
        keras.backend.clear_session()
        yield root


def settle(at: AppTest) -> AppTest:
    """Run the page, wait until no evaluation job is active, then run it once more.

    The last run must start after the jobs ended: a page drawn while a job was still running holds no
    results yet (AppTest does not run fragment timers, so nothing redraws it by itself).
    """
    at.run()
    # Evaluations run in worker processes: wait on their job folders.
    wait_until(lambda: not any(j.active for j in list_jobs("evaluate")), "the evaluation jobs to end")
    return at.run()


def evaluate_page(**query) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    for key, value in query.items():
        at.query_params[key] = value
    at.switch_page("pages/evaluate.py")
    return settle(at)


def metric(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def test_without_runs_the_page_points_to_train(tmp_path, monkeypatch):
    monkeypatch.setenv("UTKFACE_RUNS_DIR", str(tmp_path / "empty"))
    at = evaluate_page()
    assert not at.exception
    assert any("No trained model yet" in i.value for i in at.info)


def test_url_picks_the_run_and_metrics_match_evaluate_run(runs_root):
    at = evaluate_page(run="run-a")
    assert not at.exception
    assert at.selectbox(key="run").value == "run-a"
    ev = evaluate_run(runs_root / "run-a")
    assert metric(at, "Images") == f"{ev.n:,}"
    assert metric(at, "Age MAE") == f"{ev.age_mae:.2f} y"
    assert metric(at, "Race accuracy") == f"{ev.race_accuracy:.1%}"


def test_choosing_a_run_is_mirrored_in_the_url(runs_root):
    at = evaluate_page(run="run-a")
    at.selectbox(key="run").set_value("run-b")
    settle(at)
    # The browser writes a bound widget's URL itself (AppTest has none): the page's shareable link shows it.
    assert any("run=run-b" in c.value for c in at.sidebar.code)
    assert metric(at, "Age MAE") == f"{evaluate_run(runs_root / 'run-b').age_mae:.2f} y"


def test_unknown_run_in_the_url_falls_back_to_the_newest(runs_root):
    at = evaluate_page(run="no-such-run")
    assert not at.exception
    assert at.selectbox(key="run").value == "run-b"


def test_confusion_cell_shows_its_images(runs_root):
    at = evaluate_page(run="run-a", eval_tab="Gender & race")
    at.selectbox(key="eval_cell_head").set_value("race").run()
    at.selectbox(key="eval_cell_true").set_value("Black")
    at.selectbox(key="eval_cell_pred").set_value("Indian").run()
    ev = evaluate_run(runs_root / "run-a")
    expected = len(evalcharts.confusion_cell_frame(ev, "race", "Black", "Indian"))
    assert expected == ev.confusion_race.loc["Black", "Indian"]
    assert any(
        f"**{expected:,}** image(s) with true race **Black** predicted as **Indian**" in m.value for m in at.markdown
    )


def test_switching_the_cell_head_resets_the_classes(runs_root):
    at = evaluate_page(run="run-a", eval_tab="Gender & race")
    at.selectbox(key="eval_cell_head").set_value("gender").run()
    assert not at.exception
    assert at.selectbox(key="eval_cell_true").value in ("male", "female")


def test_comparison_shows_both_runs_and_deltas(runs_root):
    at = evaluate_page(run="run-a", compare="run-b")
    assert not at.exception
    table = next(d.value for d in at.dataframe if "run" in d.value.columns)  # AppTest drops dataframe keys
    assert table["run"].tolist() == ["run-a", "run-b"]
    a, b = evaluate_run(runs_root / "run-a"), evaluate_run(runs_root / "run-b")
    mae = next(m for m in at.metric if m.label == "Age MAE")
    assert mae.delta == f"{a.age_mae - b.age_mae:+.2f} y"


def test_model_card_is_offered_for_download(runs_root):
    at = evaluate_page(run="run-a", eval_tab="Model card")
    assert at.get("download_button")
    assert any(m.value.startswith("# Model card: run-a") for m in at.markdown)
    assert any("Subgroup performance" in m.value for m in at.markdown)


def test_sidebar_data_set_is_evaluated_instead_of_the_test_split(runs_root):
    data = Path(pd.read_csv(runs_root / "run-a" / "split.csv")["path"].iloc[0]).parent
    at = AppTest.from_file(APP, default_timeout=120)
    at.session_state["data_kind"] = "folder"
    at.session_state["data_folder"] = str(data)
    at.session_state["eval_data"] = "sidebar"
    at.query_params["run"] = "run-a"
    at.switch_page("pages/evaluate.py")
    settle(at)
    assert not at.exception
    assert metric(at, "Images") == f"{evaluate_run(runs_root / 'run-a', data_dir=data).n:,}"


def test_a_failed_evaluation_is_reported_with_a_retry(runs_root, tmp_path, monkeypatch):
    root = tmp_path / "runs"
    run = make_tiny_run(root, "run-gone")
    for image in Path(pd.read_csv(run / "split.csv")["path"].iloc[0]).parent.glob("*.jpg"):
        image.unlink()  # every test image is gone: nothing can be decoded
    monkeypatch.setenv("UTKFACE_RUNS_DIR", str(root))
    at = evaluate_page(run="run-gone")
    assert not at.exception
    assert any("failed" in e.value and "could be decoded" in e.value for e in at.error)
    assert any(b.label == "Try again" for b in at.button)
