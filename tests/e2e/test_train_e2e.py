"""The Train page in a real browser: start on the demo data, move every weight slider several times while the
worker trains, reload mid-run, and check that the sliders always equal the weights in force; then stop."""

from __future__ import annotations

import json
import re

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import steer as move_slider
from tests.e2e.conftest import wait_for_app_run
from utkface_core import runs
from utkface_core.labels import HEADS

# A small run with a long time budget (no early stopping): the test stops it. Bound widgets read the URL.
URL_SETTINGS = "train_budget=30&train_size_fast=32"
TRAINING = re.compile(r"training · \d+:\d\d / 30:00 of the time budget")


def thumb(page, head: str):
    # By its exact label: "Age" must not match the "Age range" slider.
    return page.locator(f'[data-testid="stSlider"] input[type="range"][aria-label="{head.capitalize()}"]')


def slider_value(page, head: str) -> float:
    return float(thumb(page, head).get_attribute("aria-valuetext"))


def steer(page, head: str, target: float) -> None:
    """Move a weight slider to ``target`` (key presses are read back: one sent during a rerun can be lost)."""
    move_slider(page, thumb(page, head), target)
    expect(thumb(page, head)).to_have_attribute("aria-valuetext", f"{target:.2f}")


def in_force_caption(page):
    return page.get_by_text(re.compile(r"Weights in force \(fixed\):"))


def expect_in_force(page, weights: dict[str, float]) -> None:
    text = " · ".join(f"{h} {weights[h]:.2f}" for h in HEADS)
    expect(page.get_by_text(f"Weights in force (fixed): {text}")).to_be_visible(timeout=90_000)


def expect_sliders(page, weights: dict[str, float]) -> None:
    for head in HEADS:
        expect(thumb(page, head)).to_have_attribute("aria-valuetext", f"{weights[head]:.2f}", timeout=30_000)


@pytest.fixture
def stop_left_runs(runs_root):
    """A failed test must not leave its detached worker training: ask every run's worker to stop."""
    yield
    for control in runs_root.glob("*/control.json"):
        runs.write_control(control.parent, stop=True)


def test_live_weights_survive_moves_and_a_reload_and_the_run_stops(page, app_url, runs_root, stop_left_runs):
    page.goto(f"{app_url}/train?{URL_SETTINGS}")
    expect(page.get_by_role("heading", name="Train a multi-task model")).to_be_visible(timeout=120_000)
    start = page.get_by_role("button", name="Start training")
    expect(start).to_be_enabled(timeout=600_000)  # the demo faces are drawn once per server
    start.click()
    progress = page.get_by_test_id("stProgress")
    expect(progress).to_contain_text(TRAINING, timeout=300_000)
    expect(progress).not_to_contain_text("100%")

    weights = {"age": 2.0, "gender": 1.0, "race": 1.5}
    expect_in_force(page, weights)
    expect_sliders(page, weights)
    # Every slider, several times, while the worker trains.
    for step in ({"gender": 0.5}, {"age": 1.2}, {"race": 2.0}, {"gender": 0.8}, {"age": 2.5}, {"race": 0.7}):
        for head, value in step.items():
            wait_for_app_run(page)
            steer(page, head, value)
            weights[head] = value
        expect_in_force(page, weights)
        expect_sliders(page, weights)
    expect(page).to_have_url(re.compile(r"train_w_gender=0\.8"), timeout=30_000)

    # A reload mid-run: a new session of the same browser finds the training and shows the weights in force.
    page.reload()
    expect(page.get_by_role("heading", name="Train a multi-task model")).to_be_visible(timeout=120_000)
    expect_in_force(page, weights)
    expect_sliders(page, weights)
    expect(page.get_by_role("button", name="Stop")).to_be_enabled()

    run = max((p for p in runs_root.iterdir() if (p / "events.jsonl").exists()), key=lambda p: p.stat().st_mtime)
    changes = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
    changes = [e for e in changes if e.get("kind") == "weight_change"]
    assert len(changes) >= 6 and changes[-1]["new"] == weights

    page.get_by_role("button", name="Stop").click()
    expect(page.get_by_text(re.compile("stopping|was stopped"))).to_be_visible(timeout=2_000 + 10_000)
    expect(page.get_by_text(re.compile("was stopped"))).to_be_visible(timeout=180_000)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["weight_changes"] == len(changes) and metrics["loss_weights_final"] == weights
    page.screenshot(path="/tmp/train_e2e.png", full_page=True)
