"""End-to-end fixtures: `streamlit run` on localhost and Debian's Chromium driven by Playwright."""

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

import pytest
from playwright.sync_api import expect

from tests.waits import wait_until

# Upper bounds, not timings: the slowest machines (2 AVX2 cores shared with TensorFlow, or one core) need them.
expect.set_options(timeout=120_000)

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


def pytest_collection_modifyitems(items):
    for item in items:
        if "/e2e/" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)


def steer(page, thumb, target: float, attempts: int = 200) -> None:
    """Move a slider thumb to ``target`` with the keyboard, reading the value back after each press.

    A key press sent while the app reruns can be lost, so presses are checked and repeated, never counted.
    """
    for _ in range(attempts):
        text = thumb.get_attribute("aria-valuetext")
        value = float(text)
        if abs(value - target) < 1e-6:
            return
        thumb.focus()
        page.keyboard.press("ArrowRight" if value < target else "ArrowLeft")
        with contextlib.suppress(AssertionError):
            expect(thumb).not_to_have_attribute("aria-valuetext", text, timeout=5_000)
    raise AssertionError(f"the slider did not reach {target} in {attempts} key presses")


def wait_for_app_run(page, timeout: float = 120_000) -> None:
    """Wait until the app's script run is over (as Streamlit's own e2e tests do) before interacting."""
    page.wait_for_selector("[data-testid='stApp'][data-test-script-state='notRunning']", timeout=timeout)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def streamlit_command(port: int) -> list[str]:
    """``streamlit run`` of the app, headless, on localhost:``port`` (the way Streamlit's own e2e tests start it)."""
    return [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        "streamlit_app.py",
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
    port = port or _free_port()
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


@pytest.fixture(scope="session")
def app_url(tmp_path_factory):
    """Start the app headless on a free port and wait for /_stcore/health."""
    data = tmp_path_factory.mktemp("e2e-app")
    env = {**os.environ, "UTKFACE_APP_DIR": str(data / "app"), "UTKFACE_RUNS_DIR": str(data / "runs")}
    with streamlit_server(env, data / "streamlit.log") as url:
        yield url


@pytest.fixture(scope="session")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.skip(f"Chromium not found at {CHROMIUM}: install it with 'apt-get install -y chromium' (.ci/run does)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(120_000)
    yield page
    context.close()


@pytest.fixture(scope="session")
def runs_root(app_url, tmp_path_factory) -> Path:
    """The runs folder (UTKFACE_RUNS_DIR) of the server started by ``app_url``: put runs there for the pages."""
    # pytest adds an "e2e-appcurrent" link to the numbered folder: count each folder once.
    logs = sorted({p.resolve() for p in tmp_path_factory.getbasetemp().glob("e2e-app*/streamlit.log")})
    if len(logs) != 1:
        raise RuntimeError(f"expected one app server folder under {tmp_path_factory.getbasetemp()}, found {logs}")
    root = logs[0].parent / "runs"
    root.mkdir(parents=True, exist_ok=True)
    return root
