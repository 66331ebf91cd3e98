"""Serving the app for a browser: ``streamlit run`` on a free local port, and Debian's Chromium.

Shared by the end-to-end tests (tests/e2e/conftest.py) and the browser benchmark (benchmarks/interactive.py); it
needs neither pytest nor a test: only the standard library (and Playwright's page object where one is passed).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from tests.waits import wait_until

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--no-first-run",
]
IDLE = "[data-testid='stApp'][data-test-script-state='notRunning']"


def wait_for_app_run(page, timeout: float = 120_000) -> None:
    """Wait until the app's script run is over (as Streamlit's own e2e tests do) before interacting."""
    page.wait_for_selector(IDLE, timeout=timeout)


def free_port() -> int:
    """A TCP port on localhost that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def streamlit_command(port: int, script: str | Path = "streamlit_app.py") -> list[str]:
    """``streamlit run`` of ``script`` (the app), headless, on localhost:``port`` (as Streamlit's own e2e tests do)."""
    return [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(script),
        "--server.headless",
        "true",
        "--server.port",
        str(port),
        "--server.address",
        "127.0.0.1",
        "--browser.gatherUsageStats",
        "false",
        "--server.fileWatcherType",
        "none",
    ]


def start_server(
    env: dict, log: Path, *, command: list[str] | None = None, port: int | None = None
) -> tuple[subprocess.Popen, str]:
    """Start the app (or ``command`` serving it on ``port``) in its own process group; wait for /_stcore/health."""
    port = port or free_port()
    with open(log, "a") as handle:
        proc = subprocess.Popen(
            command or streamlit_command(port),
            cwd=REPO,
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"the app server exited early; see {log}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    try:
        wait_until(healthy, "the app server to answer /_stcore/health", timeout=180, interval=0.5)
    except BaseException:
        stop_server(proc)
        raise
    return proc, url


def stop_server(proc: subprocess.Popen) -> None:
    """Stop a server started by ``start_server``, with everything its process group started (e.g. make's child)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=20)


@contextlib.contextmanager
def streamlit_server(env: dict, log: Path, **kwargs) -> Iterator[str]:
    """The app served for the duration of a ``with`` block; yields its URL."""
    proc, url = start_server(env, log, **kwargs)
    try:
        yield url
    finally:
        stop_server(proc)
