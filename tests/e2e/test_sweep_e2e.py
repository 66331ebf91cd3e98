"""The Sweep tab in a real browser (issue 10): start a 3-trial grid sweep on the demo data, watch its trials
appear on the Pareto scatter, click a point and open that trial on the Evaluate page."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import quote

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import wait_for_app_run
from utkface_core import runs, sweep

# The smallest sweep the tab allows: 3 grid trials (the full lattice of 3 points: the simplex's corners) of one
# epoch each on the fast preset (48 px), plus the tutorial's 2/1/1.5 baseline (on by default), marked on the chart.
# These widgets are bound to the URL; the baseline boxes are not.
URL_SETTINGS = "train_tab=Sweep&sweep_strategy=grid&sweep_trials=3&sweep_mode=epochs&sweep_epochs=1&sweep_preset=fast"


def app_dir(runs_root: Path) -> Path:
    """UTKFACE_APP_DIR of the server of ``app_url`` (conftest puts it next to the runs folder)."""
    return runs_root.parent / "app"


@pytest.fixture
def stop_left_sweeps(runs_root):
    """A failed test must not leave a detached sweep worker training: ask every sweep job to stop.

    The sweep worker reads the control file of its job folder (app/jobs/sweep/ID); trials read no control file
    of their own, but asking there too costs nothing."""
    yield
    root = app_dir(runs_root)
    for control in [*root.glob("jobs/sweep/*/control.json"), *root.glob("sweeps/*/trials/*/control.json")]:
        runs.write_control(control.parent, stop=True)


def test_a_three_trial_sweep_shows_its_points_and_a_clicked_point_opens_on_evaluate(
    page, app_url, runs_root, stop_left_sweeps
):
    page.goto(f"{app_url}/train?{URL_SETTINGS}")
    expect(page.get_by_role("heading", name="Train a multi-task model")).to_be_visible(timeout=120_000)
    expect(page.get_by_role("tab", name="Sweep", selected=True)).to_be_visible()
    expect(page.get_by_role("spinbutton", name="Trials")).to_have_value("3")
    expect(page.get_by_role("spinbutton", name="Epochs per trial")).to_have_value("1")

    # Three grid trials and the tutorial's weights, not the learned baseline too.
    auto_box = page.get_by_role("checkbox", name="Add the Auto baseline")
    expect(auto_box).to_be_checked()
    wait_for_app_run(page)
    page.get_by_test_id("stCheckbox").filter(has_text="Add the Auto baseline").locator("label").click()
    expect(auto_box).not_to_be_checked()

    start = page.get_by_role("button", name="Start sweep")
    expect(start).to_be_enabled(timeout=600_000)  # the demo faces are drawn once per server
    wait_for_app_run(page)
    start.click()
    expect(page.get_by_role("button", name="Stop sweep")).to_be_visible(timeout=120_000)

    # The trials land one by one; wait for all three (one epoch each on 2 shared cores: generous bound).
    finished = page.get_by_test_id("stMetric").filter(has_text="Finished trials")
    expect(finished).to_contain_text(re.compile(r"Finished trials\s*4\b"), timeout=1_200_000)
    scatter = page.locator(".st-key-sweep_scatter")  # the Train tab above may hold charts of its own
    points = scatter.locator(".scatterlayer path.point")
    expect(points).to_have_count(4, timeout=60_000)
    expect(scatter.locator(".legend")).to_contain_text("Tutorial 2 / 1 / 1.5")  # the baseline keeps its own mark
    # The ended sweep refreshes the whole tab: no stale Stop button, and a new sweep can start.
    expect(page.get_by_role("button", name="Stop sweep")).to_have_count(0, timeout=120_000)
    expect(page.get_by_role("button", name="Start sweep")).to_be_enabled(timeout=60_000)

    folders = [p for p in (app_dir(runs_root) / "sweeps").iterdir() if (p / sweep.SPEC_FILE).is_file()]
    assert len(folders) == 1, folders
    result = sweep.load_sweep(folders[0])
    assert sorted(t["name"] for t in result["trials"]) == ["trial-000", "trial-001", "trial-002", "trial-003"]
    assert [t["point"] for t in result["trials"]].count(sweep.TUTORIAL_POINT) == 1
    assert all(t["state"] == "completed" for t in result["trials"]), result["trials"]
    assert result["spec"]["epochs"] == 1 and result["spec"]["with_auto"] is False and result["spec"]["with_tutorial"]

    # Click a point: the tab offers its trial on the Evaluate page.
    trial = click_a_point(page)
    run_name = f"{folders[0].name}/{trial}"
    link = page.get_by_role("link", name=f"Open {trial} on the Evaluate page")
    assert (link.get_attribute("href") or "").endswith(f"evaluate?run={quote(run_name, safe='')}")
    link.click()
    expect(page.get_by_role("heading", name="Evaluate a trained model")).to_be_visible(timeout=120_000)
    expect(page).to_have_url(re.compile(r"/evaluate\?(.*&)?run=" + re.escape(quote(run_name, safe=""))))
    expect(page.get_by_role("combobox", name="Run", exact=True)).to_have_value(run_name, timeout=120_000)
    expect(page.get_by_text(re.compile("does not exist on this server"))).to_have_count(0)

    # Back on the Sweep tab, a clicked point's weights go to the Train tab's sliders, which the tab then shows.
    page.goto(f"{app_url}/train?train_tab=Sweep")
    expect(page.get_by_role("heading", name="Train a multi-task model")).to_be_visible(timeout=120_000)
    trial = click_a_point(page)
    record = next(t for t in result["trials"] if t["name"] == trial)
    expected = {h: min(5.0, max(0.0, round(w, 1))) for h, w in sweep.trained_weights(record["weights"]).items()}
    page.get_by_role("button", name=f"Use the weights of {trial} on the Train tab").click()
    expect(page.get_by_role("tab", name="Train", selected=True)).to_be_visible(timeout=60_000)
    for head, value in expected.items():
        thumb = page.locator(f'[data-testid="stSlider"] input[type="range"][aria-label="{head.capitalize()}"]')
        expect(thumb).to_have_attribute("aria-valuetext", f"{value:.2f}", timeout=60_000)
    expect(page.get_by_label("Auto (learned)", exact=True)).not_to_be_checked()


def click_a_point(page) -> str:
    """Click a point of the Pareto scatter as a user would; return the trial the tab then offers.

    Plotly's drag layer covers the markers, so the click goes to a marker's position on screen (scrolled into view
    first: a click outside the viewport reaches nothing)."""
    scatter = page.locator(".st-key-sweep_scatter")  # the Train tab above may hold charts of its own
    points = scatter.locator(".scatterlayer path.point")
    expect(points).to_have_count(4, timeout=120_000)
    link = page.get_by_role("link", name=re.compile(r"Open trial-\d{3} on the Evaluate page"))
    for attempt in range(3):
        wait_for_app_run(page)
        scatter.scroll_into_view_if_needed()
        box = points.nth(attempt).bounding_box()
        assert box is not None
        x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
        page.mouse.move(x - 15, y - 15)
        page.mouse.move(x, y, steps=5)  # plotly picks the point under the pointer from its hover
        page.mouse.click(x, y)
        try:
            expect(link).to_be_visible(timeout=30_000)
            break
        except AssertionError:
            continue  # a click lost to a rerun of the live fragment: try the next point
    expect(link).to_be_visible(timeout=30_000)
    return re.search(r"trial-\d{3}", link.inner_text()).group(0)
