"""Keras callbacks for the training engine: progress events, stop/NaN/time-budget guards, LR schedule, checkpoints.

They know nothing about any UI: progress goes to a plain ``report(dict)`` callable.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pandas as pd

from utkface_core.files import write_atomic
from utkface_core.labels import HEADS


def _floats(logs: dict | None) -> dict[str, float]:
    out = {}
    for key, value in (logs or {}).items():
        try:
            out[key] = float(np.asarray(value))
        except (TypeError, ValueError):
            continue
    return out


def validation_score(logs: dict | None) -> float | None:
    """Return a loss-weight-independent validation score (lower is better), or None without val metrics.

    score = val_age_mae / 10 + (1 - val_gender_accuracy) + (1 - val_race_accuracy): one year of MAE counts
    like ten points of accuracy. Loss weights change during a run, so val_loss is not comparable across epochs.
    """
    logs = logs or {}
    keys = ("val_age_mae", "val_gender_accuracy", "val_race_accuracy")
    if not all(k in logs for k in keys):
        return None
    mae, gender, race = (float(logs[k]) for k in keys)
    score = mae / 10.0 + (1.0 - gender) + (1.0 - race)
    return score if math.isfinite(score) else None


def save_model_atomic(model: keras.Model, path: str | Path) -> Path:
    """Save ``model`` to ``path`` (.keras) via a temporary file in the same folder and ``os.replace``.

    A crash while saving leaves the previous file untouched.
    """
    path = Path(path)
    if path.suffix != ".keras":
        raise ValueError(f"model path {path} must end in .keras")
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_atomic(path, model.save, suffix=".keras")  # model.save insists on a .keras name


def _inference_net(model: keras.Model) -> keras.Model:
    return getattr(model, "net", model)


class ProgressCallback(keras.callbacks.Callback):
    """Report per-batch progress (throttled) and per-epoch results; stop within a batch once ``stop_event`` is set.

    Batch event: {"kind": "batch", "epoch", "batch", "steps", "images_per_s", "eta_s", "elapsed_s", "logs"}.
    Phase event: {"kind": "phase", "phase": "training" | "validating", "epoch"} when validation starts and ends.
    Epoch event: {"kind": "epoch", "epoch", "batches" (run this epoch), "logs" (with val_*), "weights"}.
    """

    def __init__(
        self,
        report: Callable[[dict], None] | None,
        stop_event: threading.Event | None,
        total_epochs: int,
        steps_per_epoch: int,
        batch_size: int,
        *,
        min_interval_s: float = 0.3,
        time_budget_s: float | None = None,
        weights_fn: Callable[[], dict] | None = None,
        images_per_epoch: int | None = None,
    ):
        super().__init__()
        self.report = report
        self.stop_event = stop_event
        self.total_epochs = int(total_epochs)
        self.steps_per_epoch = max(1, int(steps_per_epoch))
        self.batch_size = int(batch_size)
        self.min_interval_s = min_interval_s
        self.time_budget_s = time_budget_s
        self.weights_fn = weights_fn
        self.stopped_by_request = False
        self._epoch = 0
        self._last_report = 0.0
        self._mark_time: float | None = None
        self._mark_steps = 0
        self._steps_done = 0
        self._batches = 0
        self._train_start = 0.0
        self._rate = 0.0  # images per second, smoothed
        self.images_per_epoch = images_per_epoch
        # Time in training steps only (no validation, checkpoint or first-step tracing) and the images they took.
        self._timed_s = 0.0
        self._timed_images = 0
        self._interval_start: float | None = None

    @property
    def images_per_s(self) -> float:
        """Return the smoothed training speed in images per second (0 before it is known)."""
        return self._rate

    @property
    def mean_images_per_s(self) -> float:
        """Images per second over all training steps but the first (tracing); 0 before two steps ran.

        Validation, checkpoints and anything else between epochs are left out: this is the speed of training itself,
        comparable between runs (the smoothed ``images_per_s`` is only the last few seconds').
        """
        return self._timed_images / self._timed_s if self._timed_s > 0 else 0.0

    def _batch_images(self, batch: int) -> int:
        if self.images_per_epoch is not None and batch + 1 == self.steps_per_epoch:
            return max(1, self.images_per_epoch - batch * self.batch_size)  # the epoch's last, partial batch
        return self.batch_size

    def _emit(self, event: dict) -> None:
        if self.report is not None:
            self.report(event)

    def _check_stop(self) -> None:
        if self.stop_event is not None and self.stop_event.is_set():
            self.stopped_by_request = True
            self.model.stop_training = True

    def on_train_begin(self, logs=None):
        self._train_start = time.monotonic()

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        self._batches = 0
        self._interval_start = time.monotonic() if self._mark_time is not None else None
        self._check_stop()

    def on_train_batch_begin(self, batch, logs=None):
        self._check_stop()

    def on_train_batch_end(self, batch, logs=None):
        self._steps_done += 1
        self._batches = batch + 1
        self._check_stop()
        now = time.monotonic()
        if self._interval_start is not None:
            self._timed_s += now - self._interval_start
            self._timed_images += self._batch_images(batch)
        self._interval_start = now
        if self._mark_time is None:
            # The first step includes graph tracing: measure speed from the end of it (it is reported at once,
            # without a speed: the app shows the training has begun).
            self._mark_time, self._mark_steps = now, self._steps_done
        elif now - self._last_report < self.min_interval_s and batch + 1 < self.steps_per_epoch:
            return
        if now > self._mark_time and self._steps_done > self._mark_steps:
            rate = (self._steps_done - self._mark_steps) * self.batch_size / (now - self._mark_time)
            self._rate = rate if self._rate == 0 else 0.7 * self._rate + 0.3 * rate
            self._mark_time, self._mark_steps = now, self._steps_done
        remaining_steps = (self.total_epochs - self._epoch) * self.steps_per_epoch - (batch + 1)
        eta = remaining_steps * self.batch_size / self._rate if self._rate > 0 else None
        if self.time_budget_s is not None:
            left = max(0.0, self.time_budget_s - (now - self._train_start))
            eta = left if eta is None else min(eta, left)
        self._last_report = now
        self._emit(
            {
                "kind": "batch",
                "epoch": self._epoch,
                "batch": batch,
                "steps": self.steps_per_epoch,
                "images_per_s": self._rate,
                "eta_s": eta,
                "elapsed_s": now - self._train_start,
                "logs": _floats(logs),
            }
        )

    def on_test_begin(self, logs=None):
        self._interval_start = None
        self._emit({"kind": "phase", "phase": "validating", "epoch": self._epoch})

    def on_test_end(self, logs=None):
        self._emit({"kind": "phase", "phase": "training", "epoch": self._epoch})

    def on_test_batch_begin(self, batch, logs=None):
        # Validation of a big network can take minutes: a stop request cuts it short too.
        self._check_stop()
        if self.stopped_by_request:
            self.model.stop_evaluating = True

    def on_epoch_end(self, epoch, logs=None):
        values = _floats(logs)
        weights = {h: values[f"w_{h}"] for h in HEADS if f"w_{h}" in values}
        if self.weights_fn is not None:
            weights = dict(self.weights_fn())
        self._emit({"kind": "epoch", "epoch": epoch, "batches": self._batches, "logs": values, "weights": weights})
        self._check_stop()


class NanGuard(keras.callbacks.Callback):
    """Stop training as soon as the loss is NaN or infinite; ``message`` says where and what to do."""

    def __init__(self):
        super().__init__()
        self.message: str | None = None
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def _check(self, logs, where: str) -> None:
        bad = {k: v for k, v in _floats(logs).items() if k.endswith("loss") and not math.isfinite(v)}
        if bad and self.message is None:
            names = ", ".join(f"{k}={v}" for k, v in sorted(bad.items()))
            self.message = (
                f"training diverged: {names} at {where}. Lower the learning rate, check the labels, "
                f"or reduce the loss weights."
            )
            self.model.stop_training = True

    def on_train_batch_end(self, batch, logs=None):
        self._check(logs, f"epoch {self._epoch + 1}, batch {batch + 1}")

    def on_epoch_end(self, epoch, logs=None):
        self._check(logs, f"the end of epoch {epoch + 1}")


class TimeBudget(keras.callbacks.Callback):
    """Stop training once ``seconds`` of wall time have passed since training began."""

    def __init__(self, seconds: float):
        super().__init__()
        if not seconds or seconds <= 0:
            raise ValueError(f"time budget must be a positive number of seconds, got {seconds!r}")
        self.seconds = float(seconds)
        self.triggered = False
        self._start = 0.0

    def on_train_begin(self, logs=None):
        self._start = time.monotonic()

    def on_train_batch_end(self, batch, logs=None):
        if time.monotonic() - self._start >= self.seconds:
            self.triggered = True
            self.model.stop_training = True


class BudgetCosineSchedule(keras.callbacks.Callback):
    """Warm-up then cosine decay of the learning rate to the end of the run, set before every batch.

    Progress is max(steps done / planned steps, elapsed / time budget): with a time budget the decay ends
    when the budget does, whatever the measured speed turns out to be.
    """

    def __init__(
        self,
        base_lr: float,
        total_steps: int,
        *,
        time_budget_s: float | None = None,
        warmup_fraction: float = 0.03,
        final_fraction: float = 0.02,
    ):
        super().__init__()
        if base_lr <= 0 or total_steps < 1:
            raise ValueError(f"need base_lr > 0 and total_steps >= 1, got {base_lr}, {total_steps}")
        self.base_lr = float(base_lr)
        self.total_steps = int(total_steps)
        self.time_budget_s = time_budget_s
        self.warmup_fraction = warmup_fraction
        self.final_fraction = final_fraction
        self.step = 0
        self.last_lr = self.base_lr
        self._start = 0.0

    def on_train_begin(self, logs=None):
        self._start = time.monotonic()

    def progress(self) -> float:
        """Return the fraction of the run done, 0..1."""
        p = self.step / self.total_steps
        if self.time_budget_s:
            p = max(p, (time.monotonic() - self._start) / self.time_budget_s)
        return min(1.0, p)

    def lr_at(self, p: float) -> float:
        """Return the learning rate at progress ``p``."""
        # Warm-up ends after warmup_fraction of the planned steps or of the time budget, whichever is first.
        by_steps = (self.step + 1) / max(1.0, self.warmup_fraction * self.total_steps)
        warm = min(1.0, max(by_steps, p / self.warmup_fraction))
        cosine = 0.5 * (1.0 + math.cos(math.pi * p))
        return self.base_lr * warm * (self.final_fraction + (1.0 - self.final_fraction) * cosine)

    def on_train_batch_begin(self, batch, logs=None):
        self.last_lr = self.lr_at(self.progress())
        self.model.optimizer.learning_rate = self.last_lr

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["lr"] = self.last_lr


class BestCheckpoint(keras.callbacks.Callback):
    """Save the inference network atomically to ``path`` whenever ``validation_score`` improves (unless ``skip()``)."""

    def __init__(self, path: str | Path, skip: Callable[[], bool] | None = None):
        super().__init__()
        self.path = Path(path)
        self.skip = skip  # e.g. after a stop request, when validation was cut short
        self.best: float | None = None
        self.best_epoch: int | None = None
        self.best_logs: dict[str, float] = {}

    def on_epoch_end(self, epoch, logs=None):
        score = validation_score(logs)
        if score is None or (self.skip is not None and self.skip()):
            return
        if self.best is None or score < self.best:
            save_model_atomic(_inference_net(self.model), self.path)
            self.best, self.best_epoch, self.best_logs = score, epoch, _floats(logs)


class ScoreEarlyStopping(keras.callbacks.Callback):
    """Stop when ``validation_score`` has not improved for ``patience`` epochs."""

    def __init__(self, patience: int, min_delta: float = 1e-4):
        super().__init__()
        if patience < 1:
            raise ValueError(f"patience must be >= 1, got {patience}")
        self.patience = patience
        self.min_delta = min_delta
        self.best: float | None = None
        self.wait = 0
        self.triggered = False

    def on_epoch_end(self, epoch, logs=None):
        score = validation_score(logs)
        if score is None:
            return
        if self.best is None or score < self.best - self.min_delta:
            self.best, self.wait = score, 0
            return
        self.wait += 1
        if self.wait >= self.patience:
            self.triggered = True
            self.model.stop_training = True


class LiveControl(keras.callbacks.Callback):
    """Apply loss-weight requests between batches and record every change.

    ``poll()`` returns a new request ``{"weights": {head: value}, "auto": bool}`` or None (nothing new); it is
    called before every training batch. Each change is reported as ``{"kind": "weight_change", "time", "epoch",
    "batch", "old", "new", "source": "manual" | "auto", "auto"}`` and kept in ``changes``.
    """

    def __init__(self, poll: Callable[[], dict | None], weights: Any, report: Callable[[dict], None] | None = None):
        super().__init__()
        self.poll = poll
        self.weights = weights
        self.report = report
        self.changes: list[dict[str, Any]] = []
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_begin(self, logs=None):
        self.apply(-1)

    def on_train_batch_begin(self, batch, logs=None):
        self.apply(batch)

    def apply(self, batch: int) -> dict | None:
        """Ask ``poll`` for a request and apply it; return the change recorded (None when nothing changed)."""
        request = self.poll()
        if not request:
            return None
        old, old_auto = dict(self.weights.get()), bool(self.weights.auto)
        auto = request.get("auto")
        wanted = request.get("weights")
        if auto is True:
            self.weights.set_auto(True)
        elif isinstance(wanted, dict) and wanted:
            self.weights.set(**wanted)
        elif auto is False:
            self.weights.set_auto(False)
        new, new_auto = dict(self.weights.get()), bool(self.weights.auto)
        if new == old and new_auto == old_auto:
            return None
        change = {
            "kind": "weight_change",
            "time": time.time(),
            "epoch": self._epoch,
            "batch": max(batch, 0),
            "old": old,
            "new": new,
            "source": "auto" if new_auto != old_auto else "manual",
            "auto": new_auto,
        }
        self.changes.append(change)
        if self.report is not None:
            self.report(change)
        return change

    def epoch_changes(self, epoch: int) -> list[dict[str, Any]]:
        """The changes made during epoch ``epoch`` (0-based)."""
        return [c for c in self.changes if c["epoch"] == epoch]


def describe_change(change: dict[str, Any]) -> str:
    """One line for a weight change: ``b12 gender 1.00→0.50 (manual)``."""
    moved = [
        f"{h} {change['old'].get(h, 0):.2f}→{v:.2f}"
        for h, v in change["new"].items()
        if abs(v - change["old"].get(h, v)) > 1e-9
    ]
    what = ", ".join(moved) if moved else ("auto on" if change.get("auto") else "auto off")
    return f"b{change['batch'] + 1} {what} ({change['source']})"


class CsvHistory(keras.callbacks.Callback):
    """Rewrite ``path`` (CSV, atomically) after every epoch with all logs, the score, time and weights.

    With ``changes_fn(epoch)`` (e.g. ``LiveControl.epoch_changes``) each row also counts and lists the live
    weight changes made during that epoch (``weight_changes``, ``weight_change_log``).
    """

    def __init__(
        self,
        path: str | Path,
        weights_fn: Callable[[], dict] | None = None,
        changes_fn: Callable[[int], list[dict]] | None = None,
    ):
        super().__init__()
        self.path = Path(path)
        self.weights_fn = weights_fn
        self.changes_fn = changes_fn
        self.rows: list[dict[str, Any]] = []
        self._start = 0.0

    def on_train_begin(self, logs=None):
        self._start = time.monotonic()

    def on_epoch_end(self, epoch, logs=None):
        row: dict[str, Any] = {"epoch": epoch + 1, "elapsed_s": round(time.monotonic() - self._start, 3)}
        row.update(_floats(logs))
        if "lr" not in row and self.model is not None and getattr(self.model, "optimizer", None) is not None:
            row["lr"] = float(np.asarray(self.model.optimizer.learning_rate))
        if self.weights_fn is not None:
            row.update({f"w_{h}": v for h, v in self.weights_fn().items()})
        row["val_score"] = validation_score(logs)
        if self.changes_fn is not None:
            changes = self.changes_fn(epoch)
            row["weight_changes"] = len(changes)
            row["weight_change_log"] = "; ".join(describe_change(c) for c in changes)
        self.rows.append(row)
        write_atomic(self.path, lambda tmp: pd.DataFrame(self.rows).to_csv(tmp, index=False))
