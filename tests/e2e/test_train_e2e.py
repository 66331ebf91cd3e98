"""The Train page in a real browser: start on the demo data, move each weight slider in turn 10 times while the
worker trains, reload mid-run, and check that the sliders always equal the weights in force and that the run
records every change; then stop."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import steer as move_slider
from tests.e2e.conftest import wait_for_app_run
from utkface_core import runs
from utkface_core.labels import HEADS

# A run with a long time budget (no early stopping) that the test stops. A time-budget run has at most 200 epochs:
# at 128 px they take much longer than all the moves below, even on a fast machine. Bound widgets read the URL.
URL_SETTINGS = "train_budget=30&train_size_fast=128"
TRAINING = re.compile(r"training · \d+:\d\d / 30:00 of the time budget")
STEP = 0.1  # one key press
MOVES = (1, 1, -1, 1, 1, -1, 1, 1, -1, 1)  # each slider moves 10 times and ends 0.4 higher than it started


def thumb(page, head: str):
    # By its exact label: "Age" must not match the "Age range" slider.
    return page.locator(f'[data-testid="stSlider"] input[type="range"][aria-label="{head.capitalize()}"]')


def slider_value(page, head: str) -> float:
    return float(thumb(page, head).get_attribute("aria-valuetext"))


def steer(page, head: str, target: float) -> None:
    """Move a weight slider to ``target`` (key presses are read back: one sent during a rerun can be lost)."""
    move_slider(page, thumb(page, head), target)
    expect(thumb(page, head)).to_have_attribute("aria-valuetext", f"{target:.2f}")


def rounded(weights: dict[str, float]) -> dict[str, float]:
    return {head: round(float(value), 2) for head, value in weights.items()}


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
    # Each slider in turn, len(MOVES) times, while the worker trains: one step (one key press) per move, and each move
    # waits until the worker reports it in force, so the run must record exactly these changes, in this order.
    expected = []
    for direction in MOVES:
        for head in HEADS:
            wait_for_app_run(page)
            target = round(weights[head] + direction * STEP, 2)
            steer(page, head, target)
            weights[head] = target
            expected.append(dict(weights))
            expect_in_force(page, weights)
            expect_sliders(page, weights)
    expect(page).to_have_url(re.compile(rf"train_w_gender={weights['gender']:g}"), timeout=30_000)

    # A reload mid-run: a new session of the same browser finds the training and shows the weights in force.
    page.reload()
    expect(page.get_by_role("heading", name="Train a multi-task model")).to_be_visible(timeout=120_000)
    expect_in_force(page, weights)
    expect_sliders(page, weights)
    expect(page.get_by_role("button", name="Stop")).to_be_enabled()

    run = max((p for p in runs_root.iterdir() if (p / "events.jsonl").exists()), key=lambda p: p.stat().st_mtime)
    changes = runs.weight_changes(run)
    assert [rounded(c["new"]) for c in changes] == expected
    assert all(c["source"] == "manual" and not c["auto"] for c in changes)

    page.get_by_role("button", name="Stop").click()
    expect(page.get_by_text(re.compile("stopping|was stopped"))).to_be_visible(timeout=2_000 + 10_000)
    expect(page.get_by_text(re.compile("was stopped"))).to_be_visible(timeout=180_000)
    metrics = runs.load_run(run).metrics
    assert metrics["weight_changes"] == len(expected) and rounded(metrics["loss_weights_final"]) == weights
    page.screenshot(path="/tmp/train_e2e.png", full_page=True)
