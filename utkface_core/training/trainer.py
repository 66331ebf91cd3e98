"""Train a multi-output model into a run directory: config, split, history, best model, test metrics, status."""

from __future__ import annotations

import json
import math
import platform
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from utkface_core import runs
from utkface_core.config import TrainConfig
from utkface_core.data.splits import TRAINS_ON_VALID
from utkface_core.inference.prediction import predict_arrays
from utkface_core.labels import HEADS, RACES, SPLITS
from utkface_core.training.callbacks import (
    BestCheckpoint,
    BudgetCosineSchedule,
    CsvHistory,
    LiveControl,
    NanGuard,
    ProgressCallback,
    ScoreEarlyStopping,
    TimeBudget,
    save_model_atomic,
)
from utkface_core.training.lossweights import LossWeights, MultiTaskModel
from utkface_core.training.model import PRESET_SPECS, build_model
from utkface_core.training.pipeline import make_dataset
from utkface_core.training.tensorboard_log import LOG_DIR as TENSORBOARD_DIR
from utkface_core.training.tensorboard_log import TensorBoardLog

FRAME_COLUMNS: tuple[str, ...] = ("path", "file", *HEADS)


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


def _split_rows(config: TrainConfig, labels: np.ndarray) -> tuple[dict[str, np.ndarray], tuple[str, ...], np.ndarray]:
    """The rows of each split, the splits trained on and their rows."""
    idx = {name: np.flatnonzero(labels == name) for name in SPLITS}
    # The "final" split trains on train + valid (settings were chosen on valid beforehand); test is never trained on.
    trained_on = ("train", "valid") if config.split_method in TRAINS_ON_VALID else ("train",)
    return idx, trained_on, np.concatenate([idx[name] for name in trained_on])


def _age_loss(config: TrainConfig) -> str:
    return PRESET_SPECS[config.preset].age_loss if config.age_loss is None else config.age_loss


def _mixup_alpha(config: TrainConfig) -> float:
    return PRESET_SPECS[config.preset].mixup_alpha if config.mixup_alpha is None else float(config.mixup_alpha)


def _build(config: TrainConfig, weights: LossWeights, race_prior: np.ndarray) -> tuple[keras.Model, MultiTaskModel]:
    """The network and its compiled training wrapper for ``config``."""
    spec = PRESET_SPECS[config.preset]
    age_loss = _age_loss(config)
    strategy = make_strategy(config.strategy)
    with strategy.scope():
        net = build_model(
            config.preset,
            config.resolved_image_size(),
            float(config.max_age),
            min_age=float(config.min_age),
            age_loss=age_loss,
        )
        model = MultiTaskModel(
            net,
            weights,
            age_loss=age_loss,
            label_smoothing=spec.label_smoothing,
            race_prior=race_prior,
            race_tau=spec.race_tau,
        )
        optimizer = _make_optimizer(config.preset, config.resolved_learning_rate())
        if isinstance(optimizer, keras.optimizers.AdamW):
            optimizer.exclude_from_weight_decay(var_list=[model.log_vars])
        model.compile(optimizer=optimizer)
    return net, model


def _datasets(
    config: TrainConfig, images: np.ndarray, frame: pd.DataFrame, train_idx: np.ndarray, valid_idx: np.ndarray
) -> tuple[tf.data.Dataset, tf.data.Dataset]:
    """The training and validation pipelines of ``config`` over the given rows."""
    columns = {c: frame[c].to_numpy() for c in HEADS}
    feed = None if PRESET_SPECS[config.preset].in_memory else False  # None: in memory when the rows fit
    train_ds = make_dataset(
        images,
        train_idx,
        columns["age"],
        columns["gender"],
        columns["race"],
        config.batch_size,
        training=True,
        seed=config.seed,
        augment=config.augment,
        in_memory=feed,
        mixup_alpha=_mixup_alpha(config),
    )
    valid_ds = make_dataset(
        images,
        valid_idx,
        columns["age"],
        columns["gender"],
        columns["race"],
        max(config.batch_size, 128),
        training=False,
        in_memory=feed,
    )
    return train_ds, valid_ds


# Fields that change neither the model, its optimizer nor its traced steps: a warm model serves any value of them.
RUNTIME_FIELDS: tuple[str, ...] = ("epochs", "time_budget_s", "early_stopping_patience", "loss_weights", "data_source")


def _warm_key(config: TrainConfig, race_prior: np.ndarray) -> str:
    fields = {k: v for k, v in config.to_dict().items() if k not in RUNTIME_FIELDS}
    # Defaults left to the preset and the same values spelled out build the same model.
    fields.update(
        image_size=config.resolved_image_size(),
        learning_rate=config.resolved_learning_rate(),
        age_loss=_age_loss(config),
        mixup_alpha=_mixup_alpha(config),
    )
    return json.dumps([fields, np.asarray(race_prior).tolist()], sort_keys=True)


@dataclass
class WarmModel:
    """A model built as ``train`` would build it for one configuration and data, its steps traced ahead.

    Tracing the training step (thousands of ops) takes about 2 s, most of a later training's time to first batch:
    a standby worker pays it while nobody waits (``warm_up``). The model is used once, reset to its initial state.
    """

    key: str
    net: keras.Model
    model: MultiTaskModel
    initial: list[tuple[Any, np.ndarray]]
    used: bool = False

    def take(self, weights: LossWeights) -> tuple[keras.Model, MultiTaskModel]:
        """The network and model, reset to their initial state and bound to ``weights``; only once."""
        if self.used:
            raise RuntimeError("a warm model serves one training only")
        self.used = True
        for variable, value in self.initial:
            variable.assign(value)
        self.model.reset_metrics()
        self.model.use_loss_weights(weights)
        return self.net, self.model


def warm_up(config: TrainConfig, images: np.ndarray, frame: pd.DataFrame, split: pd.Series) -> WarmModel:
    """Build the model ``train`` would build for these arguments and trace its training and validation steps.

    One training batch and one validation batch run (on a copy of the initial state, restored afterwards), so a
    ``train`` given the result starts with its first batch. Raises as ``train`` does for bad arguments.
    """
    config.validate()
    idx, _, train_idx = _split_rows(config, _check_inputs(config, images, frame, split))
    race_prior = _race_prior(frame["race"].to_numpy(), train_idx)
    keras.utils.set_random_seed(config.seed)
    net, model = _build(config, LossWeights(config.loss_weights), race_prior)
    model.optimizer.build(model.trainable_variables)
    initial = [(v, np.array(v.numpy())) for v in [*model.variables, *model.optimizer.variables]]
    # One batch of each: the steps are traced for any batch size (Keras traces them on the dataset's iterator).
    train_ds, valid_ds = _datasets(
        config, images, frame, train_idx[: config.batch_size], idx["valid"][: max(config.batch_size, 128)]
    )
    model.fit(train_ds, validation_data=valid_ds, epochs=1, shuffle=False, verbose=0)
    for variable, value in initial:
        variable.assign(value)
    return WarmModel(_warm_key(config, race_prior), net, model, initial)


def _race_prior(races: np.ndarray, rows: np.ndarray) -> np.ndarray:
    # Add-one counts: a class missing from a small training set still gets a finite log prior.
    return np.bincount(np.asarray(races)[rows].astype(int), minlength=5) + 1.0


def _test_metrics(
    net: keras.Model,
    images: np.ndarray,
    frame: pd.DataFrame,
    idx: np.ndarray,
    batch_size: int = 256,
    *,
    flip: bool = False,
) -> dict[str, Any]:
    preds: dict[str, list] = {head: [] for head in HEADS}
    for start in range(0, len(idx), batch_size):
        rows = idx[start : start + batch_size]
        out = predict_arrays(net, np.asarray(images[rows]), batch_size=batch_size, flip=flip)
        for key in preds:
            preds[key].append(out[key])
    age = np.concatenate(preds["age"])
    gender = np.concatenate(preds["gender"]).argmax(axis=1)
    race = np.concatenate(preds["race"]).argmax(axis=1)
    sub = frame.iloc[idx]
    race_true = sub["race"].to_numpy()
    # Per-class recall and macro-F1 show what accuracy hides: the rare "Others" class.
    recall = {int(c): float(np.mean(race[race_true == c] == c)) for c in range(5) if (race_true == c).any()}
    f1 = []
    for c in range(5):
        tp = float(np.sum((race == c) & (race_true == c)))
        denom = float(np.sum(race == c) + np.sum(race_true == c))
        if np.any(race_true == c):
            f1.append(2.0 * tp / denom if denom else 0.0)
    return {
        "age_mae": float(np.mean(np.abs(age - sub["age"].to_numpy(dtype="float64")))),
        "gender_accuracy": float(np.mean(gender == sub["gender"].to_numpy())),
        "race_accuracy": float(np.mean(race == race_true)),
        "race_macro_f1": float(np.mean(f1)),
        "n": int(len(idx)),
        **{f"race_recall_{RACES[c].lower()}": v for c, v in recall.items()},
    }


def _weights_summary(changes: list[dict]) -> str:
    if not changes:
        return "weights unchanged during the run"
    return f"changed live {len(changes)} time{'s' if len(changes) != 1 else ''}"


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
    control: Callable[[], dict | None] | None = None,
    extra_config: dict[str, Any] | None = None,
    warm: WarmModel | None = None,
) -> TrainResult:
    """Train per ``config`` into ``run_dir`` and return the outcome; never raises once the run has started.

    Bad arguments raise before anything is written (ConfigError / TrainInputError). After that, a stop request
    gives state "stopped" (best model kept), a NaN loss or any exception gives "failed" with the message, and
    ``model.keras`` is only ever replaced atomically.

    ``control()`` is polled before every batch for live loss-weight requests (see ``LiveControl``); each change
    is reported as a ``weight_change`` event and logged in history.csv and metrics.json. ``extra_config`` is
    merged into config.json (e.g. the owner of the run). ``warm`` (from ``warm_up``) is used instead of a new
    model when it was made for the same configuration and data; otherwise it is ignored.
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
    idx, trained_on, train_idx = _split_rows(config, labels)

    spec = PRESET_SPECS[config.preset]
    age_loss = _age_loss(config)
    mixup_alpha = _mixup_alpha(config)

    saved_config = config.to_dict()
    saved_config.update(
        image_size=size,
        learning_rate=lr,
        age_loss=age_loss,
        mixup_alpha=mixup_alpha,
        loss_weights=weights.to_config(),
        data={"source": config.data_source, "fingerprint": config.data_fingerprint},
        counts={name: int(len(i)) for name, i in idx.items()},
        versions={"tensorflow": tf.__version__, "keras": keras.__version__, "python": platform.python_version()},
    )
    saved_config["split"] = {
        "method": config.split_method,
        "trained_on": list(trained_on),
        "fractions": {name: round(len(i) / len(labels), 4) for name, i in idx.items()},
    }
    saved_config.update(extra_config or {})
    runs.write_json_atomic(run_dir / runs.CONFIG_FILE, saved_config)
    split_frame = frame[list(FRAME_COLUMNS)].copy()
    split_frame["split"] = labels
    runs.write_split(run_dir, split_frame)
    runs.write_status(run_dir, "running", "building the model")
    emit({"kind": "status", "state": "running", "message": "building the model"})

    started = time.monotonic()
    model_path = run_dir / runs.MODEL_FILE
    history_path = run_dir / runs.HISTORY_FILE
    state, message, metrics = "failed", "", None
    try:
        race_prior = _race_prior(frame["race"].to_numpy(), train_idx)
        keras.utils.set_random_seed(config.seed)
        if warm is not None and warm.key == _warm_key(config, race_prior):
            net, model = warm.take(weights)
            emit({"kind": "status", "state": "running", "message": "using the model traced ahead (standby)"})
        else:
            net, model = _build(config, weights, race_prior)
        train_ds, valid_ds = _datasets(config, images, frame, train_idx, idx["valid"])
        steps = math.ceil(len(train_idx) / config.batch_size)

        progress = ProgressCallback(
            emit,
            stop_event,
            config.epochs,
            steps,
            config.batch_size,
            time_budget_s=config.time_budget_s,
            weights_fn=weights.get,
            images_per_epoch=len(train_idx),
        )
        nan_guard = NanGuard()
        checkpoint = BestCheckpoint(
            model_path, skip=lambda: progress.stopped_by_request or nan_guard.message is not None
        )
        live = LiveControl(control, weights, emit) if control is not None else None
        # Weight requests go first: the batch that follows trains with them.
        callbacks: list[keras.callbacks.Callback] = ([live] if live is not None else []) + [nan_guard]
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
        callbacks += [
            checkpoint,
            CsvHistory(
                history_path, weights_fn=weights.get, changes_fn=live.epoch_changes if live is not None else None
            ),
            TensorBoardLog(run_dir / TENSORBOARD_DIR, weights_fn=weights.get),
            progress,
        ]

        runs.write_status(run_dir, "running", "training")
        model.fit(
            train_ds, validation_data=valid_ds, epochs=config.epochs, callbacks=callbacks, shuffle=False, verbose=0
        )

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
            elif "valid" in trained_on and not progress.stopped_by_request:
                # Validation rows were trained on: the model is the end of the schedule, not an epoch picked on them.
                save_model_atomic(net, model_path)
            note = f"evaluating the best model on {len(idx['test'])} test images"
            runs.write_status(run_dir, "running", note, phase="testing")
            emit({"kind": "status", "state": "running", "message": note, "phase": "testing"})
            best = keras.saving.load_model(model_path, compile=False)
            metrics = _test_metrics(best, images, frame, idx["test"])
            # The same test rows with flip averaging (what predict_image does for a photo), kept apart so the
            # headline figures stay those of the plain model that evaluation and exports reproduce.
            flipped = _test_metrics(best, images, frame, idx["test"], flip=True)
            metrics["flip"] = {k: v for k, v in flipped.items() if k != "n"}
            metrics.update(
                {
                    f"val_{k}": checkpoint.best_logs.get(f"val_{k}")
                    for k in ("age_mae", "gender_accuracy", "race_accuracy")
                },
                best_epoch=None if checkpoint.best_epoch is None else checkpoint.best_epoch + 1,
                epochs_run=len(model.history.epoch) if model.history is not None else 0,
                wall_time_s=round(time.monotonic() - started, 2),
                train_images_per_s=round(progress.mean_images_per_s, 1),
                state=state,
                loss_weights_start=saved_config["loss_weights"],
                loss_weights_final=weights.get(),
                loss_weights_auto_final=weights.auto,
                weight_changes=len(live.changes) if live is not None else 0,
                weights_summary=_weights_summary(live.changes if live is not None else []),
            )
            runs.write_json_atomic(run_dir / runs.METRICS_FILE, metrics)
    except Exception as exc:  # noqa: BLE001 - any failure must end as a "failed" run, not a lost thread
        state, message = "failed", f"{type(exc).__name__}: {exc}"
        runs.write_error(run_dir, traceback.format_exc())
    runs.write_status(run_dir, state, message)
    history = runs.read_history(run_dir)
    emit({"kind": "end", "state": state, "message": message, "metrics": metrics})
    return TrainResult(run_dir=run_dir, state=state, metrics=metrics, history=history, message=message)
