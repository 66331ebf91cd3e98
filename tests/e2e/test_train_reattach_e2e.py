"""A training outlives its Streamlit server: kill the server with SIGKILL mid-training, start a new one on the same
folders, and the Train page finds the same live worker and keeps showing its progress."""

from __future__ import annotations

import os
import re
import signal

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import REPO, start_server, stop_server
from tests.waits import wait_until


@pytest.fixture
def folders(tmp_path, monkeypatch):
    env = {
        **os.environ,
        "UTKFACE_APP_DIR": str(tmp_path / "app"),
        "UTKFACE_RUNS_DIR": str(tmp_path / "runs"),
        "PYTHONPATH": str(REPO),
    }
    monkeypatch.setenv("UTKFACE_APP_DIR", env["UTKFACE_APP_DIR"])
    monkeypatch.setenv("UTKFACE_RUNS_DIR", env["UTKFACE_RUNS_DIR"])
    return env, tmp_path


def test_the_page_reattaches_to_a_live_worker_after_the_server_is_killed(page, folders):
    from utkface_core import jobs
    from utkface_core.config import TrainConfig
    from utkface_core.data.demo import generate_demo_dataset
    from utkface_core.workflow import start_training_job

    env, tmp = folders
    first, url = start_server(env, tmp / "server1.log")
    second = None
    data = generate_demo_dataset(tmp / "data", n=120, seed=0)
    job = start_training_job(
        TrainConfig(epochs=400, image_size=32, batch_size=8, min_age=0, max_age=116, early_stopping_patience=None),
        data,
        owner="a-visitor",
    )
    try:
        page.goto(f"{url}/train")
        # The training's bar (the demo faces, drawn meanwhile, have a bar of their own).
        progress = page.get_by_test_id("stProgress").filter(has_text="Training")
        expect(progress).to_contain_text(re.compile(r"training · epoch \d+/400"), timeout=300_000)
        worker_pid = jobs.load_job(job.dir).status["pid"]

        os.kill(first.pid, signal.SIGKILL)
        first.wait(timeout=30)
        second, url = start_server(env, tmp / "server2.log")

        page.goto(f"{url}/train")
        expect(progress).to_contain_text(re.compile(r"training · epoch \d+/400"), timeout=120_000)
        before = progress.inner_text()
        expect(progress).not_to_have_text(before, timeout=120_000)  # still advancing
        live = jobs.load_job(job.dir)
        assert live.active and live.status["pid"] == worker_pid  # the same worker, never restarted
        expect(page.get_by_text(re.compile("This training belongs to another visitor")).first).to_be_visible()
        assert "a-visitor" not in page.content()  # the owner token is never shown
    finally:
        current = jobs.load_job(job.dir)
        if current is not None and current.active:
            jobs.request_stop(current, "a-visitor")
        wait_until(lambda: not jobs.load_job(job.dir).active, "the worker to stop", timeout=300)
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                stop_server(proc)
