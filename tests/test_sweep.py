"""Loss-weight sweeps: the simplex grid, results, resume after a kill or a stop, Optuna, CLI and the Ray backend.

Trials are tiny (48 random 32 px images, 1 epoch, a narrow network) so the whole file stays fast.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REPO, write_jpeg
from utkface_core import runs, sweep
from utkface_core.cli import main
from utkface_core.labels import HEADS
from utkface_core.sweep import (
    SweepError,
    SweepSpec,
    floored_fractions,
    load_sweep,
    run_sweep,
    simplex_grid,
    summarize,
    trained_weights,
    weight_distance,
)

SMALL_STAGES = ((8, 1), (16, 1))
WAIT_S = 300.0  # an upper bound against hangs, never a timing assumption


@pytest.fixture(autouse=True)
def small_fast_net(monkeypatch):
    """Trials train a narrower fast network: the sweep's behaviour is the same and tests trace faster."""
    monkeypatch.setattr("utkface_core.training.model.FAST_STAGES", SMALL_STAGES)


@pytest.fixture
def tiny_data(tmp_path, app_dir) -> Path:
    root = tmp_path / "tiny"
    for i in range(48):
        write_jpeg(root / f"{15 + i}_{i % 2}_{i % 5}_201701011200{i:05d}.jpg.chip.jpg", seed=i)
    return root


def _spec(data: Path, **overrides) -> SweepSpec:
    values = {
        "data": str(data),
        "strategy": "grid",
        "trials": 3,
        "trial_budget_s": None,
        "epochs": 1,
        "image_size": 32,
        "batch_size": 8,
        "augment": False,
    }
    values.update(overrides)
    return SweepSpec(**values)


def _wait_until(condition, what: str, timeout: float = WAIT_S):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.05)


def _study(sweep_dir: Path):
    import optuna

    stored = json.loads((sweep_dir / "sweep.json").read_text())
    return optuna.load_study(study_name=f"utkface-sweep-{stored['id']}", storage=f"sqlite:///{sweep_dir / 'study.db'}")


# --- weights (no training) -------------------------------------------------------------------------------------


def _covering_radius(points) -> float:
    fine = np.asarray(sweep._lattice(60))
    grid = np.asarray(points)
    return float(np.min(np.linalg.norm(fine[:, None, :] - grid[None, :, :], axis=2), axis=1).max())


def test_simplex_grid_covers_the_simplex():
    radii = []
    for n in range(1, 31):
        grid = simplex_grid(n)
        array = np.asarray(grid)
        assert len(grid) == n and len(set(grid)) == n, n
        assert np.all(array >= 0) and np.allclose(array.sum(axis=1), 1.0), n
        if n >= 3:
            assert {(1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)} <= set(grid), n
        radii.append(_covering_radius(grid))
    # More points never cover worse, and full lattices leave no big holes.
    assert all(a >= b - 1e-12 for a, b in zip(radii, radii[1:], strict=False))
    assert radii[10 - 1] < 0.27 and radii[21 - 1] < 0.17 < radii[6 - 1]
    assert any(np.allclose(p, 1 / 3) for p in simplex_grid(10))  # the 10-point lattice holds the centre
    assert simplex_grid(10) == simplex_grid(10)  # deterministic


@pytest.mark.parametrize("n", [0, -1, 2.5, True])
def test_simplex_grid_rejects_bad_sizes(n):
    with pytest.raises(SweepError, match="integer number of points"):
        simplex_grid(n)


def test_fractions_are_floored_and_scaled_to_mean_one():
    fractions = floored_fractions((1.0, 0.0, 0.0), 0.05)
    assert fractions == pytest.approx({"age": 0.9, "gender": 0.05, "race": 0.05})
    assert sum(fractions.values()) == pytest.approx(1.0)
    assert trained_weights(floored_fractions((1, 1, 1), 0.05)) == pytest.approx({"age": 1, "gender": 1, "race": 1})
    assert weight_distance({"age": 2, "gender": 1, "race": 1.5}, {"age": 4, "gender": 2, "race": 3}) == pytest.approx(0)
    with pytest.raises(SweepError, match="not all 0"):
        floored_fractions((0, 0, 0), 0.05)


@pytest.mark.parametrize(
    "field, value",
    [
        ("strategy", "random"),
        ("trials", 0),
        ("trial_budget_s", -1.0),
        ("epochs", 0),
        ("sampler", "cmaes"),
        ("min_weight", 0.5),
        ("storage", "study.db"),
        ("backend", "slurm"),
        ("trial_cpus", 0),
        ("max_concurrent", 0),
        ("split_method", "final"),
    ],
)
def test_spec_validation_names_the_bad_field(field, value):
    with pytest.raises(SweepError, match=field):
        SweepSpec(**{field: value}).validate()


def test_spec_rejects_bad_training_settings_and_unknown_keys():
    with pytest.raises(SweepError, match="batch_size"):
        SweepSpec(batch_size=0).validate()
    with pytest.raises(SweepError, match=r"unknown sweep spec keys \['colour'\]"):
        SweepSpec.from_dict({"colour": "red"})
    assert SweepSpec.from_dict(SweepSpec().to_dict()) == SweepSpec()


def test_summarize_keeps_only_non_dominated_completed_trials():
    def trial(mae, gender, race, state="completed"):
        return {"state": state, "age_mae": mae, "gender_accuracy": gender, "race_accuracy": race}

    trials = [
        trial(8.0, 0.90, 0.70),  # 0 front
        trial(9.0, 0.85, 0.65),  # 1 dominated by 0
        trial(7.0, 0.80, 0.60),  # 2 front (best age)
        trial(8.0, 0.90, 0.70),  # 3 duplicate of 0: front too
        trial(1.0, 0.99, 0.99, state="failed"),  # 4 failed: never on the front
        trial(10.0, 0.95, 0.50),  # 5 front (best gender)
    ]
    result = summarize(trials, 10, 65)
    assert result["pareto"] == [0, 2, 3, 5]
    assert 1 not in result["pareto"] and 4 not in result["pareto"]
    assert result["best"] in result["pareto"]
    assert 0 < result["hypervolume"] < 1
    assert summarize([], 10, 65) == {"pareto": [], "hypervolume": 0.0, "best": None}


# --- sweeps that train -------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_grid_sweep_writes_comparable_trial_runs_and_a_study(tiny_data, tmp_path):
    events = []
    out = tmp_path / "sweep"
    result = run_sweep(_spec(tiny_data, with_auto=True), out, report=events.append)
    assert result["state"] == "completed"
    trials = result["trials"]
    assert len(trials) == 4 and all(t["state"] == "completed" for t in trials)
    fixed = [t for t in trials if t["mode"] == "fixed"]
    expected = [floored_fractions(p, 0.05) for p in simplex_grid(3)]
    assert sorted(tuple(t["weights"].values()) for t in fixed) == sorted(tuple(w.values()) for w in expected)
    splits = set()
    for t in trials:
        info = runs.load_run(t["run_dir"])  # an ordinary run folder: Evaluate and Predict can open it
        assert info.state == "completed" and info.has_model
        assert info.config["time_budget_s"] is None and info.config["epochs"] == 1 and info.config["seed"] == 0
        splits.add((Path(t["run_dir"]) / "split.csv").read_text())
        assert t["test"]["age_mae"] is not None and 0 <= t["gender_accuracy"] <= 1
    assert len(splits) == 1  # every trial trained and validated on the same split
    auto = next(t for t in trials if t["mode"] == "auto")
    assert auto["trained_weights"] == "auto" and sum(auto["weights"].values()) == pytest.approx(1.0)
    vectors = [sweep.objective_vector(t, 10, 65) for t in trials]
    from utkface_core.evaluation.pareto import dominates

    for i in result["pareto"]:
        assert not any(dominates(vectors[j], vectors[i]) for j in range(len(trials)))
    assert result["hypervolume"] > 0
    study = _study(out)
    assert len(study.trials) == 4 and {t.user_attrs["run_name"] for t in study.trials} == {t["name"] for t in trials}
    assert json.loads((out / "results.json").read_text())["pareto"] == result["pareto"]
    kinds = [e["kind"] for e in events]
    assert kinds.count("trial") == 4 and kinds[-1] == "sweep_end"
    # Resumed with more trials, the grid keeps the settings it has and trains only the new one (the centre).
    again = run_sweep(_spec(tiny_data, with_auto=True, trials=4), out)
    assert [t["run_dir"] for t in again["trials"][:4]] == [t["run_dir"] for t in trials]
    assert len(again["trials"]) == 5
    assert again["trials"][4]["weights"] == pytest.approx(floored_fractions((1, 1, 1), 0.05))


@pytest.mark.slow
def test_stopped_sweep_resumes_without_repeating_or_losing_trials(tiny_data, tmp_path):
    out = tmp_path / "sweep"
    stop = threading.Event()

    def report(event):
        if event["kind"] == "trial" and event["state"] == "completed":
            stop.set()  # ask for the stop as soon as the first trial is in

    first = run_sweep(_spec(tiny_data, trials=3), out, report=report, stop_event=stop)
    assert first["state"] == "stopped" and len(first["trials"]) == 1
    assert json.loads((out / "status.json").read_text())["state"] == "stopped"
    done = first["trials"][0]
    mtime = os.stat(Path(done["run_dir"]) / "metrics.json").st_mtime_ns
    second = run_sweep(_spec(tiny_data, trials=3), out)
    assert second["state"] == "completed"
    weights = sorted(tuple(t["weights"].values()) for t in second["trials"])
    expected = sorted(tuple(floored_fractions(p, 0.05).values()) for p in simplex_grid(3))
    assert np.allclose(weights, expected)  # each setting exactly once
    kept = next(t for t in second["trials"] if t["point"] == done["point"])
    assert kept["run_dir"] == done["run_dir"]
    assert os.stat(Path(done["run_dir"]) / "metrics.json").st_mtime_ns == mtime  # not retrained


def test_a_stop_before_the_trials_start_ends_the_sweep_as_stopped(tiny_data, tmp_path):
    stop = threading.Event()
    stop.set()
    result = run_sweep(_spec(tiny_data), tmp_path / "sweep", stop_event=stop)
    assert result["state"] == "stopped" and result["trials"] == [] and "run the sweep again" in result["message"]
    assert json.loads((tmp_path / "sweep" / "status.json").read_text())["state"] == "stopped"


def test_ray_backend_without_ray_says_what_to_install(tiny_data, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if ray were not installed
    with pytest.raises(SweepError, match="needs the ray package"):
        run_sweep(_spec(tiny_data, backend="ray"), tmp_path / "sweep")
    assert json.loads((tmp_path / "sweep" / "status.json").read_text())["state"] == "failed"


@pytest.mark.slow
def test_killed_sweep_resumes_without_repeating_or_losing_a_finished_trial(tiny_data, tmp_path):
    out = tmp_path / "sweep"
    args = [
        "sweep",
        "--data",
        str(tiny_data),
        "--out",
        str(out),
        "--strategy",
        "optuna",
        "--trials",
        "4",
        "--epochs",
        "1",
        "--image-size",
        "32",
        "--batch-size",
        "8",
        "--no-augment",
        "--json",
    ]
    script = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(REPO)!r})
        import utkface_core.training.model
        utkface_core.training.model.FAST_STAGES = {SMALL_STAGES!r}
        from utkface_core.cli import main
        sys.exit(main({args!r}))
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:

        def first_finished_and_second_started():
            assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
            status = out / "trials" / "trial-000" / "status.json"
            started = out / "trials" / "trial-001" / "sweep_trial.json"
            return status.is_file() and json.loads(status.read_text())["state"] == "completed" and started.is_file()

        _wait_until(first_finished_and_second_started, "the first trial to finish")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stderr.close()
    before = load_sweep(out)
    finished = {t["name"]: os.stat(Path(t["run_dir"]) / "metrics.json").st_mtime_ns for t in before["trials"]}
    assert 1 <= len(finished) < 4
    assert before["interrupted"]  # the trial in flight was killed

    after = run_sweep(_spec(tiny_data, strategy="optuna", trials=4), out)
    assert after["state"] == "completed"
    assert len(after["trials"]) == 4 and all(t["state"] == "completed" for t in after["trials"])
    for name, mtime in finished.items():  # nothing finished was lost or trained again
        path = out / "trials" / name / "metrics.json"
        assert path.is_file() and os.stat(path).st_mtime_ns == mtime
    numbers = [t["optuna_trial"] for t in after["trials"]]
    assert len(set(numbers)) == 4
    from optuna.trial import TrialState

    study = _study(out)
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert sorted(t.number for t in complete) == sorted(numbers)
    assert all(t.state != TrialState.RUNNING for t in study.trials)  # the killed trial was failed, not left hanging


@pytest.mark.slow
def test_optuna_sweep_searches_weights_and_learning_rate(tiny_data, tmp_path):
    from optuna.trial import TrialState

    out = tmp_path / "sweep"
    spec = _spec(tiny_data, strategy="optuna", trials=4, tune_learning_rate=True, sampler="nsga2", with_auto=True)
    result = run_sweep(spec, out)
    assert result["state"] == "completed" and len(result["trials"]) == 5
    assert [t["mode"] for t in result["trials"]].count("auto") == 1
    base = spec.train_config().resolved_learning_rate()
    searched = [t for t in result["trials"] if t["mode"] == "fixed"]
    for t in searched:
        assert sum(t["weights"].values()) == pytest.approx(1.0) and min(t["weights"].values()) >= 0.05 - 1e-9
        assert base / 5 <= t["learning_rate"] <= base * 5
        assert json.loads((Path(t["run_dir"]) / "config.json").read_text())["learning_rate"] == pytest.approx(
            t["learning_rate"]
        )
    study = _study(out)
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(study.trials) == len(complete) == 4 and all(len(t.values) == 3 for t in complete)  # no Auto in it
    assert [d.name for d in study.directions] == ["MINIMIZE", "MAXIMIZE", "MAXIMIZE"]
    assert len({tuple(t["weights"].values()) for t in searched}) == 4  # the sampler proposed 4 settings


@pytest.mark.slow
def test_resume_with_other_settings_or_while_running_is_refused(tiny_data, tmp_path):
    out = tmp_path / "sweep"
    run_sweep(_spec(tiny_data, strategy="auto"), out)
    with pytest.raises(SweepError, match="epochs: 1 -> 2"):
        run_sweep(_spec(tiny_data, strategy="auto", epochs=2), out)
    with sweep._sweep_lock(out):
        with pytest.raises(SweepError, match="already running"):
            run_sweep(_spec(tiny_data, strategy="auto"), out)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(SweepError, match="not empty and not a sweep folder"):
        run_sweep(_spec(tiny_data), tmp_path / "other")


@pytest.mark.slow
def test_trial_archive_is_copied_back_when_the_node_cannot_see_the_sweep(tiny_data, tmp_path):
    spec = _spec(tiny_data, trials=1)
    prepared = sweep._prepare(spec)
    fractions = floored_fractions((1, 1, 1), 0.05)
    plan = {
        "point": "grid 1/3",
        "mode": "fixed",
        "fractions": fractions,
        "trained_weights": trained_weights(fractions),
        "learning_rate": None,
        "sweep_id": "abc",
        "name": "trial-000",
    }
    remote = tmp_path / "elsewhere" / "trial-000"  # not visible to the "node": no plan there
    payload = sweep._ray_trial(spec.to_dict(), plan, str(remote), prepared.fingerprint, 1)
    assert payload["state"] == "completed" and payload["archive"] and not remote.exists()
    local = tmp_path / "sweep" / "trials" / "trial-000"
    local.mkdir(parents=True)
    sweep._unpack(payload["archive"], local)
    record = sweep.trial_record(local)
    assert record["state"] == "completed" and record["weights"] == fractions
    assert runs.load_run(local).has_model
    with pytest.raises(SweepError, match="differs from the driver"):
        sweep._ray_trial(spec.to_dict(), plan, str(remote), "0" * 16, 1)


# --- worker job entry point ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_sweep_job_runs_in_its_own_folder_inside_a_worker_job_folder(tiny_data, tmp_path):
    job_dir = tmp_path / "job"
    job_dir.mkdir()
    (job_dir / "job.json").write_text(
        json.dumps({"kind": "sweep", "args": _spec(tiny_data, strategy="auto").to_dict()})
    )
    (job_dir / "status.json").write_text(json.dumps({"state": "running", "owner": "worker's own"}))
    events = []
    result = sweep.run_sweep_job(
        json.loads((job_dir / "job.json").read_text()), job_dir, events.append, threading.Event()
    )
    assert result["state"] == "completed" and len(result["trials"]) == 1
    assert Path(result["sweep_dir"]) == job_dir / "sweep"
    assert (
        json.loads((job_dir / "status.json").read_text())["owner"] == "worker's own"
    )  # the worker's file is left alone
    kinds = {e["kind"] for e in events}
    assert {"phase", "progress", "trial", "sweep_end"} <= kinds
    assert [e["progress"] for e in events if e["kind"] == "progress"][-1] == 1.0


@pytest.mark.slow
def test_app_sweep_job_runs_in_a_worker_process(tiny_data):
    from utkface_core import jobs

    job = sweep.start_sweep_job(_spec(tiny_data, trials=2), "visitor-a", label="tiny sweep")
    folder = Path(job.spec["args"]["sweep_dir"])
    assert folder.parent == sweep.sweeps_dir()

    def ended():
        current = jobs.load_job(job.dir)
        return current if current is not None and not current.active else None

    done = _wait_until(ended, "the sweep worker to finish")
    assert done.state == "completed", (done.error, (job.dir / "worker.log").read_text()[-3000:])
    result = json.loads((job.dir / "result.json").read_text())
    assert Path(result["sweep_dir"]) == folder and len(result["trials"]) == 2
    assert all(
        json.loads((Path(t["run_dir"]) / "status.json").read_text())["pid"] != os.getpid() for t in result["trials"]
    )
    assert {r.name for r in sweep.list_trial_runs()} == {f"{folder.name}/{t['name']}" for t in result["trials"]}


def test_sweep_job_refuses_a_folder_outside_the_sweeps_root(tmp_path, app_dir):
    args = {**SweepSpec(data="demo", epochs=1).to_dict(), "sweep_dir": str(tmp_path / "elsewhere")}
    with pytest.raises(SweepError, match="not directly inside"):
        sweep.run_sweep_job({"kind": "sweep", "args": args}, tmp_path / "job", lambda e: None, threading.Event())
    assert not (tmp_path / "elsewhere").exists()
    assert sweep.new_sweep_dir("grid").parent == sweep.sweeps_dir()


# --- CLI ---------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_cli_sweep_json_and_pareto_table(tiny_data, tmp_path, capsys):
    out = tmp_path / "sweep"
    common = [
        "sweep",
        "--data",
        str(tiny_data),
        "--out",
        str(out),
        "--strategy",
        "grid",
        "--trials",
        "2",
        "--epochs",
        "1",
        "--image-size",
        "32",
        "--batch-size",
        "8",
        "--no-augment",
    ]
    assert main(common + ["--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert {"trials", "pareto", "hypervolume"} <= set(data)
    assert len(data["trials"]) == 2
    for t in data["trials"]:
        assert {"weights", "age_mae", "gender_accuracy", "race_accuracy", "run_dir", "state"} <= set(t)
    assert data["pareto"] and set(data["pareto"]) <= set(range(2))
    before = sorted(p.name for p in (out / "trials").iterdir())
    assert main(common) == 0  # resumes the finished sweep: prints the table, trains nothing
    assert sorted(p.name for p in (out / "trials").iterdir()) == before
    text = capsys.readouterr().out
    assert "Pareto-optimal trials" in text and "Hypervolume" in text
    for i in data["pareto"]:
        assert data["trials"][i]["name"] in text


def test_cli_sweep_rejects_bad_input_with_a_message(tmp_path, app_dir, capsys):
    assert main(["sweep", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "s"), "--epochs", "1"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert json.loads((tmp_path / "s" / "status.json").read_text())["state"] == "failed"
    assert main(["sweep", "--data", "demo", "--out", str(tmp_path / "t"), "--trials", "0", "--epochs", "1"]) == 2
    assert "trials" in capsys.readouterr().err
    assert main(["sweep", "--data", "demo", "--out", str(tmp_path / "u")]) == 2
    assert "budget" in capsys.readouterr().err


# --- Ray backend -------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_ray_backend_runs_trials_as_tasks_on_a_local_cluster(tiny_data, tmp_path):
    ray = pytest.importorskip("ray", reason="ray is not installed")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        out = tmp_path / "sweep"
        result = run_sweep(_spec(tiny_data, trials=2, backend="ray"), out)
    finally:
        ray.shutdown()
    assert result["state"] == "completed" and len(result["trials"]) == 2
    for t in result["trials"]:
        assert t["state"] == "completed"
        info = runs.load_run(t["run_dir"])
        assert info.has_model and info.metrics["val_age_mae"] == t["age_mae"]
        pid = json.loads((Path(t["run_dir"]) / "status.json").read_text())["pid"]
        assert pid != os.getpid()  # trained in a Ray worker process, into the same sweep folder
    assert len({t["point"] for t in result["trials"]}) == 2


# --- the server's limits -------------------------------------------------------------------------------------


def test_public_mode_keeps_a_whole_sweep_within_one_trainings_minutes():
    spec, notes = sweep.clamp_sweep_spec(sweep.SweepSpec(trials=9, trial_budget_s=60.0, with_auto=True), "public")
    assert spec.trial_budget_s == 60.0
    assert spec.trials == 4 and spec.with_auto  # 4 fixed mixes + the Auto baseline = 5 minutes
    assert len(notes) == 1 and "5 trial(s)" in notes[0]


def test_public_mode_caps_each_trial_and_gives_an_epoch_sweep_a_budget():
    spec, notes = sweep.clamp_sweep_spec(sweep.SweepSpec(trials=3, trial_budget_s=None, epochs=3), "public")
    assert spec.trial_budget_s == 300.0 and spec.trials == 1
    assert any(note.startswith("Each trial:") for note in notes)


def test_private_mode_leaves_a_sweep_within_the_limits_alone():
    original = sweep.SweepSpec(trials=30, trial_budget_s=600.0, with_auto=True)
    spec, notes = sweep.clamp_sweep_spec(original, "private")
    assert spec == original and notes == []


def test_clamp_sweep_spec_refuses_other_types():
    with pytest.raises(TypeError):
        sweep.clamp_sweep_spec({"trials": 3}, "public")


def test_start_sweep_job_applies_the_public_limits_and_records_the_owner(app_dir, monkeypatch):
    from utkface_core import jobs

    monkeypatch.setenv("UTKFACE_MODE", "public")
    monkeypatch.setattr(jobs, "spawn_worker", lambda job_dir: None)  # the queued job is enough here
    job = sweep.start_sweep_job(sweep.SweepSpec(trials=20, trial_budget_s=3600.0), "alice")
    try:
        assert job.owner == "alice"
        assert job.spec["args"]["trial_budget_s"] == 300.0 and job.spec["args"]["trials"] == 1
        assert not jobs.request_stop(job, "bob") and jobs.request_stop(job, "alice")
    finally:
        runs.write_status(job.dir, "stopped", "test over")


# --- the tutorial's weights as a baseline trial ----------------------------------------------------------------


def test_tutorial_fractions_are_the_tutorials_weights_on_the_simplex():
    fractions = sweep.tutorial_fractions()
    assert np.allclose(fractions, [2 / 4.5, 1 / 4.5, 1.5 / 4.5]) and np.isclose(sum(fractions), 1.0)


def test_with_tutorial_plans_one_more_trial_at_the_tutorials_weights(tmp_path):
    planner = sweep._Planner(SweepSpec(trials=3, with_tutorial=True), tmp_path, "id")
    plans = []
    while (plan := planner.next_plan()) is not None:
        plans.append(plan)
    assert len(plans) == 4  # the 3 grid points of a 3-trial simplex grid + the tutorial's weights
    tutorial = [p for p in plans if p["point"] == sweep.TUTORIAL_POINT]
    assert len(tutorial) == 1 and tutorial[0]["mode"] == "fixed"
    assert np.allclose([tutorial[0]["fractions"][h] for h in HEADS], sweep.tutorial_fractions())


def test_with_tutorial_must_be_a_bool():
    with pytest.raises(SweepError, match="with_tutorial"):
        SweepSpec(with_tutorial="yes").validate()


def test_public_mode_drops_the_baselines_before_the_last_fixed_mix():
    spec, _ = sweep.clamp_sweep_spec(
        SweepSpec(trials=9, trial_budget_s=300.0, with_auto=True, with_tutorial=True), "public"
    )
    assert spec.trials == 1 and not spec.with_tutorial and not spec.with_auto  # 5 minutes: one 300 s trial


def test_the_charts_name_the_same_tutorial_trial_as_the_sweep():
    from utkface_core.evaluation import sweepcharts

    assert sweepcharts.TUTORIAL_POINT == sweep.TUTORIAL_POINT
    assert np.allclose(sweepcharts.TUTORIAL_FRACTIONS, sweep.tutorial_fractions())
