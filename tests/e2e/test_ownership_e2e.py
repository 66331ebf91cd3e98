"""Issue 8, ownership, in real browsers: visitor A starts a training; visitor B (another browser context, so another
owner token) watches it live but cannot steer, stop or delete it, and B's visit writes nothing to the run's control
file; A stops its own run and may delete it."""

from __future__ import annotations

import re
import time

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import wait_for_app_run
from tests.waits import wait_until
from utkface_core import runs
from utkface_core.labels import HEADS

# A small run with a long time budget (no early stopping): the test stops it. Bound widgets read the URL.
URL_SETTINGS = "train_budget=30&train_size_fast=32"
LIVE = re.compile(r"(training|validating) · \d+:\d\d / 30:00 of the time budget")
NOT_YOURS = "This training belongs to another visitor: only they can change its weights."
ROW_HEIGHT_PX = 35  # glide-data-grid rows (and header) in st.dataframe
ROW_MARKER_X_PX = 15  # the middle of the row-selection checkbox column


def thumb(page, head: str):
    # By its exact label: "Age" must not match the "Age range" slider.
    return page.locator(f'[data-testid="stSlider"] input[type="range"][aria-label="{head.capitalize()}"]')


def open_train(context, app_url: str):
    page = context.new_page()
    page.set_default_timeout(120_000)
    page.goto(f"{app_url}/train?{URL_SETTINGS}")
    expect(page.get_by_role("heading", name="Train a multi-task model")).to_be_visible(timeout=120_000)
    return page


def control_snapshot(run) -> tuple[bytes, int]:
    path = run / runs.CONTROL_FILE
    return path.read_bytes(), path.stat().st_mtime_ns


def select_run_row(page, row: int) -> None:
    """Tick row ``row`` (0-based) of the runs table, once: its selection reruns the page and offers a Delete button."""
    table = page.locator(".st-key-train_runs_table").get_by_test_id("stDataFrame")
    expect(table.locator("canvas").first).to_be_visible(timeout=60_000)
    table.scroll_into_view_if_needed()
    wait_for_app_run(page)
    table.click(position={"x": ROW_MARKER_X_PX, "y": (row + 1) * ROW_HEIGHT_PX + ROW_HEIGHT_PX / 2})
    expect(page.locator(".st-key-train_delete")).to_be_visible(timeout=120_000)


@pytest.fixture
def two_visitors(browser):
    contexts = [browser.new_context(viewport={"width": 1400, "height": 1000}) for _ in range(2)]
    yield contexts
    for context in contexts:
        context.close()


@pytest.fixture
def stop_left_runs(runs_root):
    """A failed test must not leave its detached worker training: ask every run's worker to stop."""
    yield
    for control in runs_root.glob("*/control.json"):
        runs.write_control(control.parent, stop=True)


def test_another_visitor_watches_but_cannot_steer_stop_or_delete(two_visitors, app_url, runs_root, stop_left_runs):
    context_a, context_b = two_visitors
    before = {p.name for p in runs_root.iterdir()}

    # Visitor A starts a training and sees it as theirs.
    page_a = open_train(context_a, app_url)
    start = page_a.get_by_role("button", name="Start training")
    expect(start).to_be_enabled(timeout=600_000)  # the demo faces are drawn once per server
    start.click()
    progress_a = page_a.get_by_test_id("stProgress")
    expect(progress_a).to_contain_text(LIVE, timeout=300_000)
    expect(progress_a).to_contain_text("(yours)")
    expect(page_a.get_by_role("button", name="Stop")).to_be_enabled()
    expect(thumb(page_a, "gender")).to_be_enabled()
    new = wait_until(lambda: [p for p in runs_root.iterdir() if p.name not in before and p.is_dir()], "A's run folder")
    assert len(new) == 1, new
    run = new[0]
    assert runs.read_status(run)["state"] == "running"
    control_before = control_snapshot(run)

    # Visitor B (another browser, another owner) opens the page: the training is live, but not theirs.
    opened_b = time.time()
    page_b = open_train(context_b, app_url)
    progress_b = page_b.get_by_test_id("stProgress")
    expect(progress_b).to_contain_text(LIVE, timeout=120_000)
    expect(progress_b).to_contain_text("(another visitor's)")
    expect(progress_b).not_to_contain_text("(yours)")
    expect(page_b.get_by_text(NOT_YOURS).first).to_be_visible(timeout=60_000)
    for head in HEADS:
        expect(thumb(page_b, head)).to_be_disabled()
    expect(page_b.get_by_role("switch", name="Auto (learned)")).to_be_disabled()
    stop_b = page_b.get_by_role("button", name="Stop")
    expect(stop_b).to_be_disabled()
    # A's own page is unaffected: still A's controls.
    expect(page_a.get_by_role("button", name="Stop")).to_be_enabled()
    expect(thumb(page_a, "gender")).to_be_enabled()

    # With B's page open (its live section reruns every second), the worker keeps training for several heartbeats.
    def still_training_later() -> bool:
        status = runs.read_status(run)
        assert status.get("state") == "running", status
        return float(status.get("heartbeat") or 0.0) > opened_b + 5.0

    wait_until(still_training_later, "A's worker to beat 5 s after B opened the page", timeout=300)
    expect(progress_b).to_contain_text(LIVE)
    expect(stop_b).to_be_disabled()
    assert control_snapshot(run) == control_before, "B's visit wrote to the run's control.json"
    assert not runs.read_control(run)[0].get("stop")

    # A stops its run.
    page_a.get_by_role("button", name="Stop").click()
    expect(page_a.get_by_text(re.compile("was stopped"))).to_be_visible(timeout=180_000)
    wait_until(lambda: runs.read_status(run).get("state") == "stopped", "the run's status to read stopped", 120)
    assert runs.read_control(run)[0].get("stop") is True

    # B selects the stopped run in the runs table: nothing to delete, and why.
    names = [r.name for r in runs.list_runs(runs_root)]
    row = names.index(run.name)
    select_run_row(page_b, row)  # B's page as it is, opened while the run was live
    expect(page_b.get_by_text("Only finished runs that you started can be deleted.")).to_be_visible()
    expect(page_b.get_by_role("button", name="Delete 0 selected run(s)")).to_be_disabled()

    # A, the owner, is offered the delete of the same run (the check above is about ownership, not the table).
    page_a.reload()
    expect(page_a.get_by_role("heading", name="Runs")).to_be_visible(timeout=120_000)
    select_run_row(page_a, row)
    expect(page_a.get_by_role("button", name="Delete 1 selected run(s)")).to_be_enabled()
    expect(page_a.get_by_text("Only finished runs that you started can be deleted.")).to_have_count(0)
    assert run.is_dir()
