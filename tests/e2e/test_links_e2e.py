"""Links and cold starts in a real browser: a copied link reopens the view in a fresh browser; a stale run link
says so; a cold server shows Explore's charts with the app's own menu (never Streamlit's pages/ listing)."""

from __future__ import annotations

import os
import re
from pathlib import Path

from playwright.sync_api import expect

from tests.e2e.conftest import steer, streamlit_server, wait_for_app_run
from utkface_core.data.demo import demo_index
from utkface_core.data.splits import filter_frame

CHART = "[data-testid='stPlotlyChart'] .main-svg"
# Records every text the sidebar menu ever showed, from the first byte of the page on.
RECORD_MENU = """
window.__menuSeen = new Set();
new MutationObserver(() => {
  document.querySelectorAll("[data-testid='stSidebarNav'] a, [data-testid='stSidebar'] [data-testid='stPageLink'] a")
    .forEach(a => window.__menuSeen.add(a.innerText.trim().split("\\n").pop().trim()));
}).observe(document, {subtree: true, childList: true, characterData: true});
"""


def images_shown(page) -> int:
    metric = page.get_by_test_id("stMetric").filter(has_text="Images shown").get_by_test_id("stMetricValue")
    return int(metric.inner_text().replace(",", ""))


def wait_for_metric(page, label: str, value: str) -> None:
    """Wait until the metric ``label`` shows ``value`` (a rerun may still be on its way)."""
    metric = page.get_by_test_id("stMetric").filter(has_text=label).get_by_test_id("stMetricValue")
    expect(metric).to_have_text(value, timeout=120_000)


def chips(page, label: str) -> list[str]:
    box = page.get_by_test_id("stMultiSelect").filter(has_text=label)
    return [t.strip() for t in box.locator("[data-tag] span[title]").all_inner_texts()]


def copy_link_parts(page):
    """The sidebar's "Copy link" button and the code box (the link) of its popover."""
    button = page.get_by_test_id("stSidebar").get_by_role("button", name=re.compile("Copy link"))
    return button, page.get_by_test_id("stPopoverBody").get_by_test_id("stCode")


def copied_link(page) -> str:
    """Open the sidebar's "Copy link" popover (once the page's run is over) and read the link."""
    button, code = copy_link_parts(page)
    wait_for_app_run(page)
    button.click()
    expect(code).to_be_visible()
    return code.inner_text().strip()


def test_the_copy_link_popover_stays_open_while_reruns_change_its_link(page, app_url):
    # The popover is drawn once per run and its link rewritten in place: a rerun does not close it (a popover
    # replaced during the run did, now and then). Key presses on a focused slider rerun the page without a click
    # outside the popover (which closes it by design).
    page.goto(f"{app_url}/")
    expect(page.locator(CHART).first).to_be_visible(timeout=120_000)
    link = copied_link(page)
    slider = page.get_by_role("slider").first
    for press in range(1, 6):
        slider.focus()
        page.keyboard.press("ArrowRight")
        _, code = copy_link_parts(page)
        expect(code).to_contain_text(f"age={press}&", timeout=60_000)  # the rerun landed and rewrote the link
        wait_for_app_run(page)
        assert code.is_visible()
        assert code.inner_text().strip() != link
        link = code.inner_text().strip()


def test_a_copied_link_reopens_source_page_filters_and_tab_in_a_fresh_browser(browser, app_url):
    first = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = first.new_page()
    page.goto(f"{app_url}/?gender=female")
    expect(page.locator(CHART).first).to_be_visible(timeout=120_000)
    wait_for_app_run(page)
    steer(page, page.get_by_role("slider").first, 15)
    expect(page).to_have_url(re.compile(r"age=15&age=116"), timeout=60_000)
    page.get_by_role("tab", name="Counts").click()
    expect(page).to_have_url(re.compile(r"tab=Counts"), timeout=60_000)
    expected = len(filter_frame(demo_index().frame, 15, 116, ["female"]))
    wait_for_metric(page, "Images shown", f"{expected:,}")
    link = copied_link(page)
    assert link.startswith(app_url) and "tab=Counts" in link and "data_kind=" in link
    first.close()

    fresh = browser.new_context(viewport={"width": 1400, "height": 1000})
    again = fresh.new_page()
    again.goto(link)
    expect(again.get_by_role("heading", name="Explore the data")).to_be_visible(timeout=120_000)
    expect(again.get_by_role("tab", name="Counts")).to_have_attribute("aria-selected", "true")
    expect(again.locator(CHART).first).to_be_visible()
    wait_for_app_run(again)
    assert chips(again, "Gender") == ["female"]
    slider = again.get_by_test_id("stSlider").filter(has_text="Age range").get_by_role("slider")
    assert [s.get_attribute("aria-valuetext") for s in slider.all()] == ["15", "116"]
    assert again.get_by_test_id("stSidebar").get_by_role("radio", name="Demo data (synthetic)").is_checked()
    wait_for_metric(again, "Images shown", f"{expected:,}")
    fresh.close()


def test_a_link_to_a_page_reopens_that_page(page, app_url):
    page.goto(f"{app_url}/evaluate")
    expect(page.get_by_role("heading", name="Evaluate a trained model")).to_be_visible(timeout=120_000)
    wait_for_app_run(page)
    assert f"{app_url}/evaluate" in copied_link(page)


def test_a_link_to_a_run_that_no_longer_exists_says_so(page, app_url, runs_root):
    from tests.test_cli_eval_predict import make_tiny_run

    if not (runs_root / "e2e-links").exists():
        make_tiny_run(runs_root, "e2e-links")
    page.goto(f"{app_url}/predict?run=deleted-long-ago")
    expect(page.get_by_text("deleted-long-ago")).to_be_visible(timeout=120_000)
    expect(page.get_by_test_id("stAlert").filter(has_text="does not exist on this server")).to_be_visible()
    expect(page.get_by_role("combobox", name="Model (training run)")).to_have_value("e2e-links")


# --- cold servers: each test starts its own, with an empty app folder --------------------------------------


def cold_server(tmp_path: Path):
    """A new server with an empty app folder (nothing drawn, indexed or decoded yet)."""
    env = {**os.environ, "UTKFACE_APP_DIR": str(tmp_path / "app"), "UTKFACE_RUNS_DIR": str(tmp_path / "runs")}
    return streamlit_server(env, tmp_path / "streamlit.log")


def menu_seen(page) -> set[str]:
    return set(page.evaluate("() => [...window.__menuSeen]"))


def test_a_cold_server_shows_the_explore_charts_under_the_apps_own_menu(browser, tmp_path):
    with cold_server(tmp_path) as url:
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        context.add_init_script(RECORD_MENU)
        page = context.new_page()
        page.goto(url)
        expect(page.locator(CHART).first).to_be_visible(timeout=120_000)
        assert images_shown(page) == 3000  # the labels, before every face is drawn
        wait_for_app_run(page)
        seen = menu_seen(page)
        context.close()
    assert seen == {"Explore", "Train", "Evaluate", "Predict"}, seen


def test_a_cold_server_opens_a_direct_page_link_inside_the_app(browser, tmp_path):
    with cold_server(tmp_path) as url:
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        context.add_init_script(RECORD_MENU)
        page = context.new_page()
        page.goto(f"{url}/evaluate")
        expect(page.get_by_role("heading", name="Evaluate a trained model")).to_be_visible(timeout=120_000)
        expect(page.get_by_text("No trained model yet")).to_be_visible()
        expect(page.get_by_test_id("stSidebar").get_by_text("Demo data (synthetic)")).to_be_visible()
        wait_for_app_run(page)
        seen = menu_seen(page)
        context.close()
    assert seen == {"Explore", "Train", "Evaluate", "Predict"}, seen
