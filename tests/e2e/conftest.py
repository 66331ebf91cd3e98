"""End-to-end fixtures: `streamlit run` on localhost and Debian's Chromium driven by Playwright."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest
from playwright.sync_api import expect

# The server helpers live in tests/e2e/server.py (the browser benchmark uses them too); tests import them from here.
from tests.e2e.server import (  # noqa: F401 - re-exported for the tests
    CHROMIUM,
    CHROMIUM_ARGS,
    REPO,
    start_server,
    stop_server,
    streamlit_command,
    streamlit_server,
    wait_for_app_run,
)
from tests.e2e.server import free_port as _free_port  # noqa: F401 - re-exported for the tests

# Upper bounds, not timings: the slowest machines (2 AVX2 cores shared with TensorFlow, or one core) need them.
expect.set_options(timeout=120_000)


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
