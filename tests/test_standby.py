"""Standby workers (utkface_core.standby): started ahead of the Start click, handed the next job, never misused."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import threading

import pytest

from tests.waits import wait_until
from utkface_core import jobs, runs, standby
from utkface_core.config import TrainConfig
from utkface_core.workflow import start_training_job


@pytest.fixture
def standbys_on(app_dir, monkeypatch):
    """Standbys on for this test; every standby process it started is ended afterwards."""
    monkeypatch.setenv(standby.STANDBY_ENV, "1")
    yield app_dir
    while FAKES:
        FAKES.pop().die()
    for info in standby.standbys(any_fingerprint=True):
        try:
            os.kill(int(info["pid"]), signal.SIGKILL)
        except OSError:
            pass
    wait_until(lambda: not standby.standbys(any_fingerprint=True), "the test's standbys to end")


FAKES: list[FakeStandby] = []
NO_PID = 5_000_000  # above Linux's largest pid (2**22): no process can have it


class FakeStandby:
    """A standby's files, with its liveness lock held by this test (no process): offer() cannot tell the difference."""

    def __init__(self, pid: int, fingerprint: str) -> None:
        self.pid = pid
        self.paths = standby._paths(pid)
        self.fd = os.open(self.paths["lock"], os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        FAKES.append(self)
        runs.write_json_atomic(
            self.paths["json"],
            {"pid": pid, "fingerprint": fingerprint, "server_pid": os.getpid(), "state": "ready", "started": 1.0},
        )

    def claim_soon(self) -> threading.Thread:
        """Claim the next handoff the way a standby does (rename .job to .taken), on a thread."""

        def claim() -> None:
            wait_until(self.paths["job"].exists, "the handoff", interval=0.01)
            os.replace(self.paths["job"], self.paths["taken"])

        thread = threading.Thread(target=claim, daemon=True)
        thread.start()
        return thread

    def die(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def long_config() -> TrainConfig:
    return TrainConfig(epochs=400, image_size=32, batch_size=8, min_age=0, max_age=116, early_stopping_patience=None)


# --- the pool files (no standby process) -----------------------------------------------------------------------


def test_the_fingerprint_follows_the_job_environment_only(monkeypatch):
    before = standby.fingerprint()
    monkeypatch.setenv("SOME_UNRELATED_VARIABLE", "x")
    assert standby.fingerprint() == before
    monkeypatch.setenv("UTKFACE_PUBLIC", "1")
    assert standby.fingerprint() != before
    monkeypatch.delenv("UTKFACE_PUBLIC")
    monkeypatch.setenv("TF_NUM_INTEROP_THREADS", "1")
    assert standby.fingerprint() != before


def test_standbys_off_means_no_process_and_no_handoff(app_dir, monkeypatch):
    monkeypatch.setenv(standby.STANDBY_ENV, "0")
    FakeStandby(NO_PID + 1, standby.fingerprint())
    assert standby.ensure() is None
    assert standby.offer(app_dir / "some-job") is None
    assert not standby._paths(NO_PID + 1)["job"].exists()


def test_a_job_is_handed_to_an_idle_standby_of_the_same_environment(standbys_on):
    fake = FakeStandby(NO_PID + 2, standby.fingerprint())
    fake.claim_soon()
    assert standby.offer(standbys_on / "job-a") == NO_PID + 2
    handoff = runs.read_json(fake.paths["taken"])
    assert handoff == {"job_dir": str((standbys_on / "job-a").resolve())}
    # Busy now: the next job is not handed to it.
    assert standby.offer(standbys_on / "job-b") is None


def test_a_standby_of_another_environment_is_never_handed_a_job(standbys_on):
    fake = FakeStandby(NO_PID + 3, "other-code-or-settings")
    assert standby.offer(standbys_on / "job") is None
    assert not fake.paths["job"].exists()


def test_a_dead_standby_is_forgotten_and_not_handed_a_job(standbys_on):
    fake = FakeStandby(NO_PID + 4, standby.fingerprint())
    fake.die()
    assert standby.offer(standbys_on / "job") is None
    assert not fake.paths["json"].exists() and not fake.paths["lock"].exists()


def test_a_standby_that_died_before_it_was_ready_stops_new_ones_for_a_while(standbys_on):
    fake = FakeStandby(NO_PID + 7, standby.fingerprint())
    runs.write_json_atomic(fake.paths["json"], {**runs.read_json(fake.paths["json"]), "state": "warming"})
    fake.paths["log"].write_text("ImportError: libtensorflow is broken\n")
    fake.die()
    assert standby.ensure() is None  # no respawn loop of processes that cannot start
    assert "libtensorflow" in (standby.pool_dir() / "last-failure.log").read_text()
    assert standby.standbys() == []


def test_a_handoff_not_claimed_in_time_is_taken_back(standbys_on, monkeypatch):
    monkeypatch.setattr(standby, "CLAIM_TIMEOUT_S", 0.3)
    fake = FakeStandby(NO_PID + 5, standby.fingerprint())  # never claims: a stuck standby
    assert standby.offer(standbys_on / "job") is None
    assert not fake.paths["job"].exists() and not fake.paths["taken"].exists()


def test_spawn_worker_falls_back_to_a_fresh_worker_when_no_standby_takes_the_job(standbys_on, monkeypatch):
    monkeypatch.setattr(standby, "CLAIM_TIMEOUT_S", 0.3)
    FakeStandby(NO_PID + 6, standby.fingerprint())
    job = jobs.submit_job("evaluate", {"run_dir": str(standbys_on / "no-such-run")}, "alice")
    ended = wait_until(lambda: (j := jobs.load_job(job.dir)) is not None and not j.active and j, "the job to end")
    assert ended.state == "failed"  # it ran (in a fresh worker) and said what was wrong
    assert ended.status["pid"] not in (NO_PID + 6, os.getpid())


# --- real standby processes ------------------------------------------------------------------------------------


def test_ensure_starts_one_standby_and_a_second_call_none(standbys_on):
    pid = standby.ensure()
    assert isinstance(pid, int) and runs.process_alive(pid)
    assert standby.ensure() is None
    (info,) = standby.standbys()
    assert info["pid"] == pid and info["server_pid"] == os.getpid()


def test_no_standby_starts_while_a_training_runs(standbys_on, tmp_path):
    from utkface_core.data.demo import generate_demo_dataset

    data = generate_demo_dataset(tmp_path / "demo", n=20, seed=0)
    start_training_job(long_config(), data, owner="alice", spawn=False)  # active, with this process as its worker
    assert standby.ensure() is None
    assert standby.standbys() == []


@pytest.mark.slow
def test_a_training_runs_in_the_standby_and_a_successor_takes_its_place(standbys_on, tmp_path):
    from utkface_core.data.demo import generate_demo_dataset

    data = generate_demo_dataset(tmp_path / "demo", n=60, seed=0)
    pid = standby.ensure()
    wait_until(lambda: standby.standbys() and standby.standbys()[0]["state"] == "ready", "the standby to be ready")
    job = start_training_job(long_config(), data, owner="alice")
    wait_until(lambda: jobs.load_job(job.dir).phase in ("training", "validating"), "the training to start")
    running = jobs.load_job(job.dir)
    assert running.status["pid"] == pid  # the standby runs it: no fresh process
    assert (job.dir / "worker.log").is_file()
    assert any(e.get("kind") == "first_batch" for e in runs.read_events(job.dir)[0])
    jobs.request_stop(running, "alice")
    ended = wait_until(lambda: (j := jobs.load_job(job.dir)) is not None and not j.active and j, "the job to end")
    assert ended.state == "stopped" and (job.dir / "model.keras").is_file()
    successor = wait_until(lambda: [s for s in standby.standbys() if s["pid"] != pid], "the successor standby")
    assert successor[0]["server_pid"] == os.getpid()
    # The successor prepares for the training just run: the next one is most often the same, other weights aside.
    assert successor[0]["warm"] == {"config": long_config().to_dict(), "data": str(data)}
    wait_until(lambda: not runs.process_alive(pid), "the used standby to exit")


@pytest.mark.slow
def test_a_standby_traces_the_expected_training_and_its_job_starts_with_that_model(standbys_on, tmp_path):
    from utkface_core.data.demo import generate_demo_dataset

    data = generate_demo_dataset(tmp_path / "demo", n=60, seed=0)
    expected = {"config": long_config().to_dict(), "data": str(data)}
    pid = standby._spawn(os.getpid(), standby.fingerprint(), expected)
    wait_until(lambda: standby.standbys() and standby.standbys()[0].get("tracing") is False, "the model traced ahead")
    other_weights = {**long_config().to_dict(), "loss_weights": {"age": 1.0, "gender": 2.0, "race": 0.5}}
    job = start_training_job(TrainConfig.from_dict(other_weights), data, owner="alice")
    wait_until(lambda: jobs.load_job(job.dir).phase in ("training", "validating"), "the training to start")
    assert jobs.load_job(job.dir).status["pid"] == pid
    messages = [str(e.get("message")) for e in runs.read_events(job.dir)[0]]
    assert any("traced ahead" in m for m in messages), messages
    jobs.request_stop(jobs.load_job(job.dir), "alice")
    ended = wait_until(lambda: (j := jobs.load_job(job.dir)) is not None and not j.active and j, "the job to end")
    assert ended.state == "stopped"
    assert runs.read_json(job.dir / runs.CONFIG_FILE)["loss_weights"] == other_weights["loss_weights"]


def test_a_successor_prepares_for_the_training_just_run_else_what_its_parent_expected(tmp_path):
    expected = {"config": TrainConfig().to_dict(), "data": "demo"}
    train_job, eval_job = tmp_path / "train", tmp_path / "eval"
    for folder, spec in (
        (train_job, {"kind": "train", "args": {"config": long_config().to_dict(), "data": "/data/x"}}),
        (eval_job, {"kind": "evaluate", "args": {"run_dir": "/runs/r"}}),
    ):
        folder.mkdir()
        runs.write_json_atomic(folder / runs.JOB_FILE, spec)
    assert standby._next_training(train_job, expected) == {"config": long_config().to_dict(), "data": "/data/x"}
    assert standby._next_training(eval_job, expected) == expected
    assert standby._next_training(tmp_path / "gone", None) is None


def test_an_idle_standby_ends_with_its_server(standbys_on):
    server = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        pid = standby._spawn(server.pid, standby.fingerprint())
        wait_until(lambda: standby.standbys(), "the standby to appear")
    finally:
        server.kill()
        server.wait()
    wait_until(lambda: not standby._alive(pid), "the standby to notice its server is gone", timeout=60)
    assert standby.standbys() == []
    assert not (standby.pool_dir() / standby.FAILED_MARK).exists()  # a clean end, not a failure


def test_this_servers_standby_of_older_code_is_ended_and_replaced(standbys_on):
    stale = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])  # stands in for the process
    try:
        old = FakeStandby(stale.pid, "older-code-or-settings")  # this server's, but it can never serve it
        pid = standby.ensure()
        assert pid is not None and pid != stale.pid
        assert stale.wait(timeout=30) == -signal.SIGTERM
        assert not old.paths["json"].exists()
    finally:
        stale.kill()
