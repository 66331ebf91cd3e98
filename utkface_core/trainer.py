"""Train a multi-output model into a run directory: config, split, history, best model, test metrics, status."""

from __future__ import annotations

import math
import platform
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from utkface_core import runs
from utkface_core.callbacks import (
    BestCheckpoint,
    BudgetCosineSchedule,
    CsvHistory,
    NanGuard,
    ProgressCallback,
    ScoreEarlyStopping,
    TimeBudget,
    save_model_atomic,
)
from utkface_core.config import TrainConfig
from utkface_core.inference import predict_arrays
from utkface_core.lossweights import LossWeights, MultiTaskModel
from utkface_core.model import PRESET_SPECS, build_model
from utkface_core.pipeline import make_dataset

FRAME_COLUMNS: tuple[str, ...] = ("path", "file", "age", "gender", "race")
SPLITS: tuple[str, ...] = ("train", "valid", "test")


class TrainInputError(ValueError):
    """The images, frame or split given to ``train`` do not fit together or the config."""


@dataclass
class TrainResult:
    """Outcome of ``train``: final state ("completed" | "stopped" | "failed"), test metrics and history."""

    run_dir: Path
    state: str
    metrics: dict[str, Any] | None
    history: pd.DataFrame = field(default_factory=pd.DataFrame)
    message: str = ""


def _check_inputs(config: TrainConfig, images: np.ndarray, frame: pd.DataFrame, split: pd.Series) -> np.ndarray:
    missing = [c for c in FRAME_COLUMNS if c not in frame.columns]
    if missing:
        raise TrainInputError(f"frame lacks columns {missing}; it needs {list(FRAME_COLUMNS)}")
    if len(images) != len(frame):
        raise TrainInputError(f"images has {len(images)} rows but frame has {len(frame)}: they must align row by row")
    size = config.resolved_image_size()
    if images.ndim != 4 or tuple(images.shape[1:]) != (size, size, 3) or images.dtype != np.uint8:
        raise TrainInputError(
            f"images must be uint8 of shape (N, {size}, {size}, 3) for image_size {size}, "
            f"got {images.dtype} {tuple(images.shape)}: rebuild the image cache at that size"
        )
    if len(split) != len(frame):
        raise TrainInputError(f"split has {len(split)} entries but frame has {len(frame)}")
    if isinstance(split, pd.Series) and not split.index.equals(frame.index):
        raise TrainInputError("split is not aligned with frame.index: build it from the same frame")
    labels = np.asarray(split).astype(str)
    bad = sorted(set(labels) - set(SPLITS))
    if bad:
        raise TrainInputError(f"split has unknown values {bad}; use only {list(SPLITS)}")
    for name in SPLITS:
        if not (labels == name).any():
            raise TrainInputError(f"split has no {name!r} rows: every split needs at least one image")
    ages = frame["age"].to_numpy()
    if ((ages < config.min_age) | (ages > config.max_age)).any():
        raise TrainInputError(
            f"frame has ages outside {config.min_age}..{config.max_age}: filter the frame to the config's age range"
        )
    if not frame["gender"].isin([0, 1]).all() or not frame["race"].isin([0, 1, 2, 3, 4]).all():
        raise TrainInputError("frame has gender codes outside 0..1 or race codes outside 0..4")
    return labels


def make_strategy(name: str) -> tf.distribute.Strategy:
    """Return the default strategy, or a MirroredStrategy over all GPUs (all logical CPUs when there is no GPU)."""
    if name != "mirrored":
        return tf.distribute.get_strategy()
    devices = [d.name for d in tf.config.list_logical_devices("GPU")]
    if not devices:
        devices = [d.name for d in tf.config.list_logical_devices("CPU")]
    return tf.distribute.MirroredStrategy(devices=devices)


def _make_optimizer(preset: str, learning_rate: float) -> keras.optimizers.Optimizer:
    spec = PRESET_SPECS[preset]
    if spec.optimizer == "rmsprop":
        return keras.optimizers.RMSprop(learning_rate=learning_rate)
    return keras.optimizers.AdamW(learning_rate=learning_rate, weight_decay=spec.weight_decay)


def _test_metrics(net: keras.Model, images: np.ndarray, frame: pd.DataFrame, idx: np.ndarray,
                  batch_size: int = 256) -> dict[str, Any]:
    preds: dict[str, list] = {"age": [], "gender": [], "race": []}
    for start in range(0, len(idx), batch_size):
        rows = idx[start : start + batch_size]
        out = predict_arrays(net, np.asarray(images[rows]), batch_size=batch_size)
        for key in preds:
            preds[key].append(out[key])
    age = np.concatenate(preds["age"])
    gender = np.concatenate(preds["gender"]).argmax(axis=1)
    race = np.concatenate(preds["race"]).argmax(axis=1)
    sub = frame.iloc[idx]
    return {
        "age_mae": float(np.mean(np.abs(age - sub["age"].to_numpy(dtype="float64")))),
        "gender_accuracy": float(np.mean(gender == sub["gender"].to_numpy())),
        "race_accuracy": float(np.mean(race == sub["race"].to_numpy())),
        "n": int(len(idx)),
    }


def train(
    config: TrainConfig,
    images: np.ndarray,
    frame: pd.DataFrame,
    split: pd.Series,
    run_dir: Path,
    *,
    report: Callable[[dict], None] | None = None,
    stop_event: threading.Event | None = None,
    loss_weights: LossWeights | None = None,
) -> TrainResult:
    """Train per ``config`` into ``run_dir`` and return the outcome; never raises once the run has started.

    Bad arguments raise before anything is written (ConfigError / TrainInputError). After that, a stop request
    gives state "stopped" (best model kept), a NaN loss or any exception gives "failed" with the message, and
    ``model.keras`` is only ever replaced atomically.
    """
    config.validate()
    labels = _check_inputs(config, images, frame, split)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    weights = loss_weights if loss_weights is not None else LossWeights(config.loss_weights)
    stop_event = stop_event if stop_event is not None else threading.Event()
    emit = report if report is not None else (lambda event: None)
    size = config.resolved_image_size()
    lr = config.resolved_learning_rate()
    idx = {name: np.flatnonzero(labels == name) for name in SPLITS}

    saved_config = config.to_dict()
    saved_config.update(
        image_size=size,
        learning_rate=lr,
        loss_weights=weights.to_config(),
        data={"source": config.data_source, "fingerprint": config.data_fingerprint},
        counts={name: int(len(i)) for name, i in idx.items()},
        versions={"tensorflow": tf.__version__, "keras": keras.__version__, "python": platform.python_version()},
    )
    runs.write_json_atomic(run_dir / runs.CONFIG_FILE, saved_config)
    split_frame = frame[list(FRAME_COLUMNS)].copy()
    split_frame["split"] = labels
    split_frame.to_csv(run_dir / runs.SPLIT_FILE, index=False)
    runs.write_status(run_dir, "running", "building the model")
    emit({"kind": "status", "state": "running", "message": "building the model"})

    started = time.monotonic()
    model_path = run_dir / runs.MODEL_FILE
    history_path = run_dir / runs.HISTORY_FILE
    state, message, metrics = "failed", "", None
    try:
        keras.utils.set_random_seed(config.seed)
        strategy = make_strategy(config.strategy)
        spec = PRESET_SPECS[config.preset]
        with strategy.scope():
            net = build_model(config.preset, size, float(config.max_age), min_age=float(config.min_age))
            model = MultiTaskModel(net, weights, age_loss=spec.age_loss, label_smoothing=spec.label_smoothing)
            optimizer = _make_optimizer(config.preset, lr)
            if isinstance(optimizer, keras.optimizers.AdamW):
                optimizer.exclude_from_weight_decay(var_list=[model.log_vars])
            model.compile(optimizer=optimizer)

        columns = {c: frame[c].to_numpy() for c in ("age", "gender", "race")}
        train_ds = make_dataset(images, idx["train"], columns["age"], columns["gender"], columns["race"],
                                config.batch_size, training=True, seed=config.seed, augment=config.augment)
        valid_ds = make_dataset(images, idx["valid"], columns["age"], columns["gender"], columns["race"],
                                max(config.batch_size, 128), training=False)
        steps = math.ceil(len(idx["train"]) / config.batch_size)

        progress = ProgressCallback(emit, stop_event, config.epochs, steps, config.batch_size,
                                    time_budget_s=config.time_budget_s, weights_fn=weights.get)
        nan_guard = NanGuard()
        checkpoint = BestCheckpoint(
            model_path, skip=lambda: progress.stopped_by_request or nan_guard.message is not None
        )
        callbacks: list[keras.callbacks.Callback] = [nan_guard]
        budget = None
        if config.time_budget_s:
            budget = TimeBudget(config.time_budget_s)
            callbacks.append(budget)
        if spec.lr_schedule:
            callbacks.append(BudgetCosineSchedule(lr, config.epochs * steps, time_budget_s=config.time_budget_s))
        early = None
        if config.early_stopping_patience:
            early = ScoreEarlyStopping(config.early_stopping_patience)
            callbacks.append(early)
        callbacks += [checkpoint, CsvHistory(history_path, weights_fn=weights.get), progress]

        runs.write_status(run_dir, "running", "training")
        model.fit(train_ds, validation_data=valid_ds, epochs=config.epochs, callbacks=callbacks,
                  shuffle=False, verbose=0)

        if nan_guard.message:
            state, message = "failed", nan_guard.message
        else:
            if progress.stopped_by_request:
                state, message = "stopped", "stopped on request"
            elif budget is not None and budget.triggered:
                state, message = "completed", f"time budget of {config.time_budget_s:g} s reached"
            elif early is not None and early.triggered:
                state, message = "completed", "early stopping: validation stopped improving"
            else:
                state, message = "completed", f"trained {config.epochs} epochs"
            if checkpoint.best is None:
                # Stopped before the first validation: keep what there is rather than nothing.
                save_model_atomic(net, model_path)
            note = f"evaluating the best model on {len(idx['test'])} test images"
            runs.write_status(run_dir, "running", note)
            emit({"kind": "status", "state": "running", "message": note})
            best = keras.saving.load_model(model_path, compile=False)
            metrics = _test_metrics(best, images, frame, idx["test"])
            metrics.update(
                {f"val_{k}": checkpoint.best_logs.get(f"val_{k}") for k in ("age_mae", "gender_accuracy",
                                                                              "race_accuracy")},
                best_epoch=None if checkpoint.best_epoch is None else checkpoint.best_epoch + 1,
                epochs_run=len(model.history.epoch) if model.history is not None else 0,
                wall_time_s=round(time.monotonic() - started, 2),
                train_images_per_s=round(progress.images_per_s, 1),
                state=state,
            )
            runs.write_json_atomic(run_dir / runs.METRICS_FILE, metrics)
    except Exception as exc:  # noqa: BLE001 - any failure must end as a "failed" run, not a lost thread
        state, message = "failed", f"{type(exc).__name__}: {exc}"
        (run_dir / "error.log").write_text(traceback.format_exc(), encoding="utf-8")
    runs.write_status(run_dir, state, message)
    history = runs.read_history(run_dir)
    emit({"kind": "end", "state": state, "message": message, "metrics": metrics})
    return TrainResult(run_dir=run_dir, state=state, metrics=metrics, history=history, message=message)
