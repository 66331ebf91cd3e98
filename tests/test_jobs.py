import threading
import time

from utkface_core.jobs import JobRegistry, JobStopped


def wait(job, timeout=5.0):
    end = time.time() + timeout
    while job.active and time.time() < end:
        time.sleep(0.01)
    return job


def test_job_runs_off_thread_and_completes_with_result():
    reg = JobRegistry()
    caller = threading.get_ident()
    job = wait(reg.submit("decode", "demo", lambda j: threading.get_ident()))
    assert job.state == "completed"
    assert job.result != caller


def test_job_failure_is_reported_not_raised():
    reg = JobRegistry()
    job = wait(reg.submit("decode", "bad", lambda j: 1 / 0))
    assert job.state == "failed"
    assert "ZeroDivisionError" in job.error


def test_stop_event_ends_a_job_as_stopped():
    reg = JobRegistry()

    def work(job):
        while not job.stop_event.is_set():
            time.sleep(0.01)
        raise JobStopped("stopped by user")

    job = reg.submit("decode", "loop", work)
    time.sleep(0.05)
    job.stop()
    assert wait(job).state == "stopped"


def test_second_training_job_queues_until_the_first_ends():
    reg = JobRegistry(limits={"train": 1})
    gate = threading.Event()
    first = reg.submit("train", "a", lambda j: gate.wait(5))
    second = reg.submit("train", "b", lambda j: "done")
    time.sleep(0.1)
    assert first.state == "running"
    assert second.state == "queued"
    assert reg.queue_position(second) == 1
    gate.set()
    assert wait(second).state == "completed"


def test_same_key_returns_the_active_job():
    reg = JobRegistry()
    gate = threading.Event()
    a = reg.submit("decode", "x", lambda j: gate.wait(5), key="k")
    b = reg.submit("decode", "x", lambda j: None, key="k")
    gate.set()
    assert a is b


def test_latest_finds_a_job_after_reload():
    reg = JobRegistry()
    job = wait(reg.submit("train", "t", lambda j: None))
    assert reg.latest("train") is job
    assert reg.latest("train", active_only=True) is None


def test_only_the_newest_finished_jobs_are_kept():
    reg = JobRegistry(keep_finished=2)
    first = [wait(reg.submit("decode", str(i), lambda j: None)) for i in range(3)]
    wait(reg.submit("decode", "last", lambda j: None))
    ids = [j.id for j in reg.jobs()]
    assert first[0].id not in ids
    assert len(ids) == 3


def test_checking_a_sliders_weights_never_loads_tensorflow_into_the_app_server():
    import subprocess
    import sys

    code = (
        "import sys; from utkface_core import jobs; from utkface_core.config import check_loss_weights; "
        "check_loss_weights({'age': 1, 'gender': 0.5, 'race': 2.0}, complete=True); "
        "print('tensorflow' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_check_loss_weights_names_the_bad_head_or_value():
    import pytest

    from utkface_core.config import LossWeightsError, check_loss_weights

    assert check_loss_weights({"age": 1, "gender": 0.5, "race": 2}, complete=True) == {
        "age": 1.0,
        "gender": 0.5,
        "race": 2.0,
    }
    with pytest.raises(LossWeightsError, match="unknown heads"):
        check_loss_weights({"beard": 1.0})
    with pytest.raises(LossWeightsError, match="need all heads"):
        check_loss_weights({"age": 1.0}, complete=True)
    with pytest.raises(LossWeightsError, match="must be a number"):
        check_loss_weights({"age": "1"})
    with pytest.raises(LossWeightsError, match="finite and >= 0"):
        check_loss_weights({"age": float("nan")})
