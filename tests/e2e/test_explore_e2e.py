"""The Explore page in a real browser: demo counts, then a filter change changes them."""

import re

from playwright.sync_api import expect


def images_shown(page) -> int:
    metric = page.get_by_test_id("stMetric").filter(has_text="Images shown").get_by_test_id("stMetricValue")
    return int(metric.inner_text().replace(",", ""))


def test_demo_counts_then_filter_changes_them(page, app_url):
    page.goto(app_url)
    expect(page.get_by_text("Synthetic demo data")).to_be_visible(timeout=120_000)
    expect(page.get_by_test_id("stMetric").filter(has_text="Images shown")).to_be_visible()
    before = images_shown(page)
    assert before == 3000
    thumb = page.get_by_role("slider").first
    thumb.focus()
    for _ in range(20):
        page.keyboard.press("ArrowRight")
    expect(page).to_have_url(re.compile(r"age=20-116"), timeout=30_000)
    page.wait_for_function(
        "() => [...document.querySelectorAll('[data-testid=stMetric]')].some(m => m.innerText.includes('Images shown') && !m.innerText.includes('3,000'))",
        timeout=30_000,
    )
    after = images_shown(page)
    assert 0 < after < before
    page.screenshot(path="/tmp/explore_e2e.png", full_page=True)
