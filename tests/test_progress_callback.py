"""ProgressCallback: what it reports at the first batch, and the mean training speed it measures."""

from __future__ import annotations

import pytest

from utkface_core.training import callbacks
from utkface_core.training.callbacks import ProgressCallback


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(callbacks.time, "monotonic", fake)
    return fake


def make(events: list, **kwargs) -> ProgressCallback:
    return ProgressCallback(events.append, None, total_epochs=2, steps_per_epoch=3, batch_size=10, **kwargs)


def test_the_first_batch_is_reported_at_once_without_a_speed(clock):
    events: list[dict] = []
    progress = make(events)
    progress.on_train_begin()
    progress.on_epoch_begin(0)
    clock.now += 2.0  # the first step traces the graph
    progress.on_train_batch_end(0, {"loss": 1.0})
    (batch,) = [e for e in events if e["kind"] == "batch"]
    assert batch["batch"] == 0 and batch["images_per_s"] == 0.0


def test_the_mean_speed_leaves_out_the_first_step_and_validation(clock):
    progress = make([], images_per_epoch=25)
    progress.on_train_begin()
    progress.on_epoch_begin(0)
    for batch, seconds in enumerate((5.0, 1.0, 1.0)):  # 5 s: tracing, left out
        clock.now += seconds
        progress.on_train_batch_end(batch)
    progress.on_test_begin()
    clock.now += 30.0  # validation and a checkpoint: left out
    progress.on_test_end()
    progress.on_epoch_begin(1)
    for batch in range(3):
        clock.now += 1.0
        progress.on_train_batch_end(batch)
    # Counted: epoch 0's batches 1 and 2 (10 + 5 images, the last one partial), all three of epoch 1 (10 + 10 + 5).
    assert progress.mean_images_per_s == pytest.approx(40 / 5.0)


def test_the_mean_speed_is_zero_before_two_steps(clock):
    progress = make([])
    assert progress.mean_images_per_s == 0.0
    progress.on_train_begin()
    progress.on_epoch_begin(0)
    clock.now += 1.0
    progress.on_train_batch_end(0)
    assert progress.mean_images_per_s == 0.0
