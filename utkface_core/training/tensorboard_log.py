"""TensorBoard event files for a training run: per-head scalars, the loss weights in force and the learning rate.

``tensorboard --logdir RUNS_DIR`` then shows every run; train and validation curves of one metric share a chart.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np

from utkface_core.labels import HEADS

# The run folder's subfolder for event files (``<run>/tensorboard/train`` and ``<run>/tensorboard/validation``).
LOG_DIR = "tensorboard"


def scalar_tag(key: str) -> str | None:
    """Return the TensorBoard tag of a Keras log key without its ``val_`` prefix, or None for keys not logged.

    ``age_mae`` -> ``age/mae``, ``gender_loss`` -> ``gender/loss``, ``loss`` -> ``total/loss``; loss-weight
    keys (``w_age``) and the learning rate are written under their own tags by :class:`TensorBoardLog`.
    """
    if key.startswith("w_") or key in ("lr", "learning_rate"):
        return None
    for head in HEADS:
        if key.startswith(f"{head}_"):
            return f"{head}/{key[len(head) + 1 :]}"
    return f"total/{key}"


class TensorBoardLog(keras.callbacks.Callback):
    """Write one TensorBoard step per epoch into ``log_dir``: ``train`` and ``validation`` event files.

    Scalars: each head's metrics and losses (``age/mae``, ``gender/accuracy``, ``race/loss``...), the total loss,
    the loss weights in force (``weights/age``... from ``weights_fn``, else the ``w_*`` log keys) and the
    learning rate (``learning_rate``). Files are flushed after every epoch, so a crashed run keeps its curves.
    """

    def __init__(self, log_dir: str | Path, weights_fn: Callable[[], dict] | None = None):
        super().__init__()
        self.log_dir = Path(log_dir)
        self.weights_fn = weights_fn
        self._writers: dict = {}

    def _writer(self, name: str):
        import tensorflow as tf

        if name not in self._writers:
            self._writers[name] = tf.summary.create_file_writer(str(self.log_dir / name))
        return self._writers[name]

    def _learning_rate(self, logs: dict) -> float | None:
        for key in ("lr", "learning_rate"):
            if key in logs:
                return float(np.asarray(logs[key]))
        optimizer = getattr(self.model, "optimizer", None) if self.model is not None else None
        if optimizer is None:
            return None
        return float(np.asarray(optimizer.learning_rate))

    def on_train_begin(self, logs=None):
        self.log_dir.mkdir(parents=True, exist_ok=True)

    def on_epoch_end(self, epoch, logs=None):
        import tensorflow as tf

        logs = dict(logs or {})
        rows: dict[str, dict[str, float]] = {"train": {}, "validation": {}}
        for key, value in logs.items():
            split, name = ("validation", key[4:]) if key.startswith("val_") else ("train", key)
            tag = scalar_tag(name)
            try:
                number = float(np.asarray(value))
            except (TypeError, ValueError):
                continue
            if tag is not None and math.isfinite(number):
                rows[split][tag] = number
        weights = (
            dict(self.weights_fn())
            if self.weights_fn is not None
            else {key[2:]: float(np.asarray(value)) for key, value in logs.items() if key.startswith("w_")}
        )
        rows["train"].update({f"weights/{head}": float(value) for head, value in weights.items()})
        lr = self._learning_rate(logs)
        if lr is not None:
            rows["train"]["learning_rate"] = lr
        for split, values in rows.items():
            if not values:
                continue
            writer = self._writer(split)
            with writer.as_default():
                for tag, number in values.items():
                    tf.summary.scalar(tag, number, step=epoch + 1)
            writer.flush()

    def on_train_end(self, logs=None):
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()
