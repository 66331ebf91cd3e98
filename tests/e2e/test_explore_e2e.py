"""The Explore page in a real browser: demo counts, filters in the URL, and filters that survive a source switch."""

import re

from playwright.sync_api import expect

from tests.e2e.conftest import steer, wait_for_app_run


def images_shown(page) -> int:
    metric = page.get_by_test_id("stMetric").filter(has_text="Images shown").get_by_test_id("stMetricValue")
    return int(metric.inner_text().replace(",", ""))


def chips(page, label: str) -> list[str]:
    """The selected options of a multiselect, read from its chips."""
    box = page.get_by_test_id("stMultiSelect").filter(has_text=label)
    return [t.strip() for t in box.locator("[data-tag] span[title]").all_inner_texts()]


def test_demo_counts_then_filter_changes_them(page, app_url):
    page.goto(app_url)
    expect(page.get_by_text("Synthetic demo data")).to_be_visible(timeout=120_000)
    expect(page.get_by_test_id("stMetric").filter(has_text="Images shown")).to_be_visible()
    before = images_shown(page)
    assert before == 3000
    steer(page, page.get_by_role("slider").first, 20)
    expect(page).to_have_url(re.compile(r"age=20&age=116"))
    page.wait_for_function(
        "() => [...document.querySelectorAll('[data-testid=stMetric]')]"
        ".some(m => m.innerText.includes('Images shown') && !m.innerText.includes('3,000'))",
        timeout=120_000,
    )
    after = images_shown(page)
    assert 0 < after < before
    page.screenshot(path="/tmp/explore_e2e.png", full_page=True)


def test_switching_source_demo_folder_demo_keeps_the_filters(page, app_url):
    page.goto(f"{app_url}/?age=20&age=40&gender=female")
    expect(page.get_by_test_id("stPlotlyChart").first).to_be_visible(timeout=120_000)
    wait_for_app_run(page)
    shown = images_shown(page)
    assert chips(page, "Gender") == ["female"]

    page.get_by_test_id("stSidebar").get_by_text("A folder", exact=True).click()
    folder = page.get_by_test_id("stSidebar").get_by_role("textbox", name="Folder with UTKFace images")
    folder.fill("/no/such/utkface/folder")
    folder.press("Enter")
    expect(page.get_by_test_id("stSidebar").get_by_test_id("stAlert").filter(has_text="folder")).to_be_visible()
    wait_for_app_run(page)
    # No usable data: the page says so, and the filters keep their values (they used to go blank).
    expect(page.get_by_text("Choose a data set in the sidebar")).to_be_visible()
    assert chips(page, "Gender") == ["female"]
    slider = page.get_by_test_id("stSlider").filter(has_text="Age range").get_by_role("slider")
    assert [s.get_attribute("aria-valuetext") for s in slider.all()] == ["20", "40"]

    page.get_by_test_id("stSidebar").get_by_text("Demo data (synthetic)", exact=True).click()
    expect(page.get_by_test_id("stPlotlyChart").first).to_be_visible()
    wait_for_app_run(page)
    assert chips(page, "Gender") == ["female"]
    assert [s.get_attribute("aria-valuetext") for s in slider.all()] == ["20", "40"]
    value = page.get_by_test_id("stMetric").filter(has_text="Images shown").get_by_test_id("stMetricValue")
    expect(value).to_have_text(f"{shown:,}")
    expect(page).to_have_url(re.compile(r"age=20&age=40.*gender=female|gender=female.*age=20&age=40"))


def test_the_app_requests_nothing_from_other_hosts(page, app_url):
    # A visitor's browser talks to this server only: no fonts, icons or scripts from a CDN (a shared link must
    # not hand its visitors to third parties, and an offline classroom has none).
    elsewhere = []
    page.on("request", lambda request: None if request.url.startswith(app_url) else elsewhere.append(request.url))
    page.goto(app_url)
    expect(page.get_by_test_id("stPlotlyChart").first).to_be_visible(timeout=120_000)
    wait_for_app_run(page)
    assert elsewhere == []
