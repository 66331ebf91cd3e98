"""The Train page in a real browser: start on the demo data, watch progress and curves, move a weight, stop."""

import re

from playwright.sync_api import expect


def test_training_progress_curves_live_weight_and_stop(page, app_url):
    page.goto(f"{app_url}/train")
    expect(page.get_by_role("heading", name="Train a multi-task model")).to_be_visible(timeout=120_000)
    page.get_by_role("button", name="Start training").click()
    progress = page.get_by_test_id("stProgress")
    expect(progress).to_contain_text("batch", timeout=180_000)
    first = progress.inner_text()
    expect(progress).not_to_have_text(first, timeout=60_000)  # the bar advances
    expect(page.get_by_test_id("stPlotlyChart").first).to_be_visible(timeout=180_000)  # curves after epoch 1
    assert page.get_by_test_id("stPlotlyChart").count() >= 5

    thumb = page.get_by_test_id("stSlider").filter(has_text="Gender").get_by_role("slider")
    # Key presses during a rerun can be dropped or doubled: steer to 0.5 by reading the value back.
    for _ in range(30):
        value = float(thumb.get_attribute("aria-valuetext"))
        if abs(value - 0.5) < 1e-6:
            break
        thumb.focus()
        page.keyboard.press("ArrowLeft" if value > 0.5 else "ArrowRight")
        page.wait_for_timeout(700)
    expect(thumb).to_have_attribute("aria-valuetext", "0.50", timeout=30_000)
    expect(page).to_have_url(re.compile(r"w=[0-9.]+(%2C|,)0\.5(%2C|,)[0-9.]+"), timeout=30_000)
    expect(page.get_by_text(re.compile(r"Weights in force \(fixed\): age [0-9.]+ · gender 0\.50"))).to_be_visible(timeout=30_000)

    page.get_by_role("button", name="Stop").click()
    expect(page.get_by_text(re.compile("was stopped"))).to_be_visible(timeout=120_000)
    page.screenshot(path="/tmp/train_e2e.png", full_page=True)
