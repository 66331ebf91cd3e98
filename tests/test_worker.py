"""Worker jobs: the control channel, one job per double click, queueing, reattaching, kills and recorded weights."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pandas as pd
import pytest

from tests.conftest import REPO
from tests.waits import wait_until
from utkface_core import jobs, runs
from utkface_core.config import TrainConfig
from utkface_core.training.callbacks import LiveControl
from utkface_core.training.lossweights import LossWeights
from utkface_core.worker import ControlReader
from utkface_core.workflow import start_training_job


@pytest.fixture(autouse=True)
def no_worker_left_running(monkeypatch):
    """Stop every worker a test left running (a failed test must not leave a training behind)."""
    yield

    def workers():  # jobs made without a worker (spawn=False) carry this process's pid: nothing to stop
        return [j for j in jobs.list_jobs() if j.active and j.status.get("pid") != os.getpid()]

    for job in workers():
        jobs.request_stop(job, None, admin=True)
    wait_until(lambda: not workers(), "the test's workers to stop")


@pytest.fixture(scope="module")
def tiny_demo(tmp_path_factory):
    """120 synthetic UTKFace-style images (shared by the tests of this module)."""
    from utkface_core.data.demo import generate_demo_dataset

    return generate_demo_dataset(tmp_path_factory.mktemp("demo") / "set", n=120, seed=0)


def long_config(**changes) -> TrainConfig:
    """A tiny run that would go on for minutes: the tests stop it."""
    values = dict(
        epochs=400,
        image_size=32,
        batch_size=8,
        min_age=0,
        max_age=116,
        early_stopping_patience=None,
        loss_weights={"age": 2.0, "gender": 1.0, "race": 1.5},
    )
    values.update(changes)
    return TrainConfig(**values)


def job_state(job_dir):
    return jobs.load_job(job_dir)


def wait_phase(job_dir, phases=("training", "validating"), what="the worker to start training"):
    return wait_until(lambda: (j := job_state(job_dir)) is not None and j.phase in phases and j, what)


def wait_end(job_dir):
    return wait_until(lambda: (j := job_state(job_dir)) is not None and not j.active and j, "the job to end")


def stop_and_wait(job):
    jobs.request_stop(job, job.owner)
    return wait_end(job.dir)


# --- the control channel (no worker process) -----------------------------------------------------------------


def test_a_weight_change_in_control_json_reaches_the_next_batch(tmp_path):
    runs.write_control(tmp_path, weights={"age": 2.0, "gender": 1.0, "race": 1.5}, auto=False)
    weights = LossWeights({"age": 2.0, "gender": 1.0, "race": 1.5})
    events = []
    live = LiveControl(ControlReader(tmp_path).poll, weights, events.append)
    live.on_train_begin()
    live.on_epoch_begin(0)
    live.on_train_batch_begin(0)
    assert events == []  # the starting weights are no change
    runs.write_control(tmp_path, weights={"age": 2.0, "gender": 0.5, "race": 1.5})
    live.on_train_batch_begin(1)
    assert weights.get()["gender"] == 0.5
    (change,) = events
    assert change["kind"] == "weight_change" and change["source"] == "manual"
    assert (change["epoch"], change["batch"]) == (0, 1)
    assert change["old"]["gender"] == 1.0 and change["new"]["gender"] == 0.5
    live.on_train_batch_begin(2)
    assert len(events) == 1  # nothing new, nothing recorded


def test_switching_auto_on_is_recorded_as_an_auto_change(tmp_path):
    runs.write_control(tmp_path, weights={"age": 2.0, "gender": 1.0, "race": 1.5}, auto=False)
    weights = LossWeights({"age": 2.0, "gender": 1.0, "race": 1.5})
    live = LiveControl(ControlReader(tmp_path).poll, weights)
    live.on_train_batch_begin(0)
    runs.write_control(tmp_path, auto=True)
    live.on_train_batch_begin(1)
    assert weights.auto and live.changes[-1]["source"] == "auto"


@pytest.mark.parametrize(
    "damage",
    [
        "{not json",
        '["a list"]',
        '{"weights": {"age": -1, "gender": 1, "race": 1}}',
        '{"weights": {"age": 1, "gender": 1}}',
        '{"auto": "yes"}',
    ],
)
def test_a_corrupt_control_json_is_ignored_with_a_warning_and_the_last_good_weights_kept(tmp_path, damage):
    runs.write_control(tmp_path, weights={"age": 1.0, "gender": 0.25, "race": 1.0}, auto=False)
    weights = LossWeights({"age": 2.0, "gender": 1.0, "race": 1.5})
    warnings = []
    live = LiveControl(ControlReader(tmp_path, warn=warnings.append).poll, weights)
    live.on_train_batch_begin(0)
    assert weights.get() == {"age": 1.0, "gender": 0.25, "race": 1.0}
    (tmp_path / runs.CONTROL_FILE).write_text(damage)
    live.on_train_batch_begin(1)
    live.on_train_batch_begin(2)
    assert weights.get() == {"age": 1.0, "gender": 0.25, "race": 1.0}
    assert len(warnings) == 1 and "ignored a damaged control file" in warnings[0]


def test_set_live_weights_refuses_other_owners_and_bad_values(app_dir, tiny_demo):
    job = start_training_job(long_config(), tiny_demo, owner="alice", spawn=False)
    assert not jobs.set_live_weights(job, "mallory", weights={"age": 1, "gender": 1, "race": 1})
    assert not jobs.request_stop(job, None)
    with pytest.raises(ValueError, match="finite and >= 0"):
        jobs.set_live_weights(job, "alice", weights={"age": -1, "gender": 1, "race": 1})
    assert jobs.set_live_weights(job, "alice", weights={"age": 1, "gender": 3, "race": 1})
    assert jobs.requested_weights(jobs.load_job(job.dir)) == ({"age": 1.0, "gender": 3.0, "race": 1.0}, False)


# --- submitting ---------------------------------------------------------------------------------------------


def test_two_start_calls_50_ms_apart_give_exactly_one_job(app_dir, tiny_demo):
    results = []

    def click():
        results.append(start_training_job(long_config(), tiny_demo, owner="alice", spawn=False))

    first = threading.Thread(target=click)
    first.start()
    time.sleep(0.05)
    second = threading.Thread(target=click)
    second.start()
    first.join()
    second.join()
    assert len(results) == 2 and results[0].id == results[1].id
    assert len(jobs.list_jobs("train")) == 1
    assert len(runs.list_runs()) == 1


def test_the_run_folder_is_complete_from_the_first_instant(app_dir, tiny_demo):
    job = start_training_job(long_config(), tiny_demo, owner="alice", spawn=False)
    config = json.loads((job.dir / "config.json").read_text())
    status = json.loads((job.dir / "status.json").read_text())
    assert status["state"] == "preparing" and status["owner"] == "alice"
    assert config["owner"] == "alice" and config["loss_weights"] == {"age": 2.0, "gender": 1.0, "race": 1.5}
    (info,) = runs.list_runs()
    assert info.state == "preparing" and info.error is None


def test_a_job_whose_worker_never_came_is_interrupted_once_its_heartbeat_is_stale(app_dir, tiny_demo):
    job = start_training_job(long_config(), tiny_demo, owner="alice", spawn=False)
    status = json.loads((job.dir / "status.json").read_text())
    status["heartbeat"] -= runs.HEARTBEAT_STALE_S + 1
    runs.write_json_atomic(job.dir / "status.json", status)
    assert jobs.load_job(job.dir).state == "interrupted"
    assert runs.load_run(job.dir).state == "interrupted"


def test_unknown_kinds_and_bad_args_are_refused(app_dir):
    with pytest.raises(jobs.JobError, match="unknown job kind"):
        jobs.submit_job("mine-bitcoin", {}, "alice", spawn=False)
    with pytest.raises(jobs.JobError, match="must be a dict"):
        jobs.submit_job("evaluate", ["x"], "alice", spawn=False)


# --- real worker processes ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_worker_started_by_another_server_process_is_found_and_controlled(app_dir, tiny_demo):
    server = (
        "from utkface_core.config import TrainConfig; from utkface_core.workflow import start_training_job; "
        f"job = start_training_job(TrainConfig(epochs=400, image_size=32, batch_size=8, min_age=0, max_age=116, "
        f"early_stopping_patience=None), {str(tiny_demo)!r}, owner='alice'); print(job.dir)"
    )
    out = subprocess.run(
        [sys.executable, "-c", server],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert out.returncode == 0, out.stderr
    # That "server" has exited; this process has never seen the job: it finds it from the files alone.
    (job,) = jobs.list_jobs("train")
    assert str(job.dir) == out.stdout.strip() and job.owner == "alice"
    job = wait_phase(job.dir)
    assert job.active and runs.load_run(job.dir).state == "running"
    assert jobs.latest_job("train", owner="alice", active_only=True).id == job.id
    ended = stop_and_wait(job)
    assert ended.state == "stopped"
    assert (job.dir / "model.keras").is_file()


@pytest.mark.slow
def test_live_weight_changes_are_recorded_in_events_history_and_metrics(app_dir, tiny_demo):
    job = start_training_job(long_config(), tiny_demo, owner="alice")
    job = wait_phase(job.dir)
    assert jobs.set_live_weights(job, "alice", weights={"age": 2.0, "gender": 0.5, "race": 1.5})
    change = wait_until(lambda: next(iter(runs.weight_changes(job.dir)), None), "the weight change event")
    assert change["new"]["gender"] == 0.5 and change["old"]["gender"] == 1.0 and change["source"] == "manual"
    assert {"t", "time", "epoch", "batch"} <= set(change)
    wait_until(
        lambda: (jobs.weights_in_force(job_state(job.dir)) or {}).get("gender") == 0.5,
        "the worker to report the new weights in force",
    )
    # Let an epoch end after the change, so history.csv has a row that logs it.
    wait_until(
        lambda: (h := runs.read_history(job.dir)).shape[0] > 0 and h["weight_changes"].sum() >= 1,
        "history.csv to log the change",
    )
    ended = stop_and_wait(job)
    assert ended.state == "stopped"
    metrics = json.loads((job.dir / "metrics.json").read_text())
    assert metrics["weight_changes"] == 1 and metrics["weights_summary"] == "changed live 1 time"
    assert metrics["loss_weights_final"]["gender"] == 0.5
    assert json.loads((job.dir / "config.json").read_text())["loss_weights"]["gender"] == 1.0
    history = pd.read_csv(job.dir / "history.csv")
    assert "gender 1.00→0.50 (manual)" in " ".join(history["weight_change_log"].fillna(""))


@pytest.mark.slow
def test_a_sigkilled_worker_is_interrupted_and_its_best_model_still_loads(app_dir, tiny_demo):
    import keras

    job = start_training_job(long_config(), tiny_demo, owner="alice")
    wait_until(
        lambda: (job.dir / "model.keras").is_file() and runs.read_history(job.dir).shape[0] >= 1, "the first checkpoint"
    )
    pid = job_state(job.dir).status["pid"]
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not jobs.load_job(job.dir).active, "the job to read as ended")
    assert jobs.load_job(job.dir).state == "interrupted"
    info = runs.load_run(job.dir)
    assert info.state == "interrupted" and info.has_model
    model = keras.saving.load_model(job.dir / "model.keras", compile=False)
    assert set(model.output_names) == {"age", "gender", "race"}


@pytest.mark.slow
def test_a_second_training_waits_in_the_queue_until_the_first_ends(app_dir, tiny_demo):
    first = start_training_job(long_config(), tiny_demo, owner="alice")
    wait_phase(first.dir)
    second = start_training_job(long_config(), tiny_demo, owner="bob")
    assert second.id != first.id
    second = wait_until(lambda: (j := job_state(second.dir)).state == "queued" and j, "the second job to queue")
    assert jobs.queue_position(second) == 1
    assert [j.id for j in jobs.queue_of("train")] == [first.id, second.id]
    assert not jobs.request_stop(first, "bob")  # bob may not stop alice's training
    stop_and_wait(job_state(first.dir))
    wait_phase(second.dir, what="the second job to start after the first")
    assert stop_and_wait(job_state(second.dir)).state == "stopped"


@pytest.mark.slow
def test_a_queued_job_stopped_before_its_turn_never_starts(app_dir, tiny_demo):
    first = start_training_job(long_config(), tiny_demo, owner="alice")
    second = start_training_job(long_config(), tiny_demo, owner="bob")
    wait_until(lambda: job_state(second.dir).state == "queued", "the second job to queue")
    ended = stop_and_wait(job_state(second.dir))
    assert ended.state == "stopped" and "before it started" in ended.message
    assert not (second.dir / "history.csv").exists()
    stop_and_wait(job_state(first.dir))


# --- honest progress ------------------------------------------------------------------------------------------


def _job_with(status: dict, state: str = "running", control: dict | None = None) -> jobs.JobInfo:
    return jobs.JobInfo(
        id="j",
        kind="train",
        dir=None,
        label="t",
        owner="a",
        key=None,
        created=0.0,
        state=state,
        status=status,
        control=control or {},
    )


def test_a_time_budget_run_reads_elapsed_of_budget_not_epochs_of_200():
    now = 1_000_000.0
    job = _job_with(
        {
            "phase": "training",
            "time_budget_s": 120,
            "train_started": now - 30,
            "epoch": 4,
            "epochs": 200,
            "batch": 3,
            "steps": 10,
            "images_per_s": 900.0,
        }
    )
    fraction, text = jobs.describe_progress(job, now=now)
    assert fraction == pytest.approx(0.25)
    assert "0:30 / 2:00" in text and "about 1:30 left" in text and "/200" not in text


def test_validation_is_its_own_phase_and_the_bar_stays_below_1_until_the_end():
    now = 1_000_000.0
    job = _job_with({"phase": "validating", "epochs": 2, "epoch": 1, "batch": 9, "steps": 10})
    fraction, text = jobs.describe_progress(job, now=now)
    assert text.startswith("validating") and fraction < 1.0
    late = _job_with({"phase": "training", "time_budget_s": 10, "train_started": now - 50})
    assert jobs.describe_progress(late, now=now)[0] < 1.0
    assert jobs.describe_progress(_job_with({"phase": "testing"}), now=now)[0] < 1.0
    assert jobs.describe_progress(_job_with({}, state="completed"), now=now)[0] == 1.0


def test_a_stop_request_shows_at_once():
    job = _job_with({"phase": "training", "epochs": 5, "epoch": 0, "batch": 0, "steps": 10}, control={"stop": True})
    assert jobs.describe_progress(job)[1].startswith("stopping")


def test_public_mode_caps_the_trainings_queued_by_all_visitors(app_dir, tiny_demo, monkeypatch):
    monkeypatch.setenv("UTKFACE_MODE", "public")
    monkeypatch.setenv("UTKFACE_MAX_ACTIVE_JOBS", "2")
    start_training_job(long_config(), tiny_demo, owner="alice", spawn=False)
    start_training_job(long_config(), tiny_demo, owner="bob", spawn=False)
    with pytest.raises(jobs.JobError, match="limit is 2"):
        start_training_job(long_config(), tiny_demo, owner="carol", spawn=False)
    assert len(jobs.list_jobs("train")) == 2


# --- sweeps: their own progress line --------------------------------------------------------------------------


def _sweep_job(status: dict, args: dict) -> jobs.JobInfo:
    return jobs.JobInfo(
        id="s",
        kind="sweep",
        dir=None,
        label="s",
        owner="a",
        key=None,
        created=0.0,
        state="running",
        status={"phase": "sweeping", **status},
        spec={"kind": "sweep", "args": args},
    )


def test_a_sweep_reads_trials_finished_and_time_into_the_current_trial():
    now = 1_000_000.0
    status = {
        "trials_done": 2,
        "trials_total": 4,
        "trial": "trial-002",
        "trial_started": now - 30,
        "trial_epochs_done": 3,
        "epochs": 200,
    }
    fraction, text = jobs.describe_progress(_sweep_job(status, {"trial_budget_s": 60.0}), now=now)
    assert fraction == pytest.approx(2.5 / 4)
    assert text == "sweeping · 2/4 trials finished · trial-002: 0:30 / 1:00"
    assert "epoch" not in text  # not a training's line


def test_an_epoch_budget_sweep_counts_the_trials_epochs():
    status = {"trials_done": 1, "trials_total": 2, "trial": "trial-001", "trial_epochs_done": 1}
    fraction, text = jobs.describe_progress(_sweep_job(status, {"trial_budget_s": None, "epochs": 4}))
    assert fraction == pytest.approx(1.25 / 2)
    assert text.endswith("trial-001: epoch 1/4")


def test_a_sweep_before_its_first_trial_shows_its_message():
    job = _sweep_job({"progress": 0.0}, {"trial_budget_s": 60.0})
    job.message = "0/9 trials finished before this session"
    fraction, text = jobs.describe_progress(job)
    assert fraction == 0.0 and text == "sweeping · 0/9 trials finished before this session"


def test_the_worker_turns_sweep_events_into_status_fields(app_dir):
    from utkface_core.worker import Worker

    job = jobs.submit_job("sweep", {"trial_budget_s": 60.0}, "a", spawn=False)
    worker = Worker(job.dir)
    worker.report({"kind": "sweep", "state": "running", "done": 1, "total": 3, "message": "1/3 trials finished"})
    worker.report({"kind": "trial_start", "trial": "trial-001", "mode": "fixed"})
    worker.report({"kind": "trial_epoch", "trial": "trial-001", "epoch": 0})
    assert worker.live["trials_done"] == 1 and worker.live["trials_total"] == 3
    assert worker.live["trial"] == "trial-001" and worker.live["trial_epochs_done"] == 1
    kinds = [e["kind"] for e in runs.read_events(job.dir)[0]]
    assert kinds == ["sweep", "trial_start", "trial_epoch"]  # still recorded in events.jsonl
    runs.write_status(job.dir, "stopped", "test over")


# --- the janitor after each job -------------------------------------------------------------------------------


def _finished_job(monkeypatch, handler) -> jobs.JobInfo:
    from utkface_core import worker as worker_module

    monkeypatch.setitem(worker_module.DISPATCH, "evaluate", handler)
    job = jobs.submit_job("evaluate", {"run_dir": "unused"}, "a", spawn=False)
    assert worker_module.Worker(job.dir).run() == 0
    return jobs.load_job(job.dir)


def test_the_worker_sweeps_app_data_over_budget_after_the_job(app_dir, monkeypatch):
    monkeypatch.setenv("UTKFACE_APP_DATA_BUDGET_MB", "1")
    old = app_dir / "index" / "old.pkl"
    old.parent.mkdir(parents=True)
    old.write_bytes(b"x" * (2 * 1024 * 1024))
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    job = _finished_job(monkeypatch, lambda worker: ("completed", "done", None))
    assert job.state == "completed"
    assert not old.exists()


def test_a_janitor_error_never_fails_the_job(app_dir, monkeypatch):
    from utkface_core import janitor

    def broken(*_, **__):
        raise OSError("disk on fire")

    monkeypatch.setattr(janitor, "sweep", broken)
    job = _finished_job(monkeypatch, lambda worker: ("completed", "done", None))
    assert job.state == "completed" and job.message == "done"
