"""Live per-head loss weights (fixed or learned by uncertainty weighting) and the model that trains with them.

The weights live in backend variables that the compiled train step reads every batch, so ``LossWeights.set``
from another thread (e.g. a UI) takes effect at the next batch instead of being frozen at compile time.
"""

from __future__ import annotations

import math
import threading
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from utkface_core.labels import HEADS

DEFAULT_WEIGHTS: dict[str, float] = {"age": 2.0, "gender": 1.0, "race": 1.5}


class LossWeightsError(ValueError):
    """A loss weight was invalid (unknown head, negative or non-finite value)."""


class LossWeights:
    """Per-head loss weights shared between a training thread and any other thread.

    Fixed mode: total = sum_i w_i * L_i.  Auto mode (Kendall et al. 2018, homoscedastic uncertainty):
    learnable log-variances s_i, total = sum_i exp(-s_i) * L_i + s_i; the effective weights are exp(-s_i).
    """

    def __init__(self, weights: dict[str, float] | str | None = None):
        self._lock = threading.Lock()
        self._fixed = dict(DEFAULT_WEIGHTS)
        self._auto = False
        self._vars: dict[str, Any] | None = None
        if weights == "auto":
            self._auto = True
        elif weights is not None:
            self._fixed.update(self._checked(weights, complete=True))

    @staticmethod
    def _checked(weights: dict[str, Any], complete: bool = False) -> dict[str, float]:
        if not isinstance(weights, dict):
            raise LossWeightsError(f"loss weights must be a dict like {DEFAULT_WEIGHTS} or 'auto', got {weights!r}")
        unknown = sorted(set(weights) - set(HEADS))
        if unknown:
            raise LossWeightsError(f"unknown heads {unknown} in loss weights: the heads are {list(HEADS)}")
        if complete and set(weights) != set(HEADS):
            raise LossWeightsError(f"loss weights need all heads {list(HEADS)}, got {sorted(weights)}")
        out = {}
        for head, value in weights.items():
            if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
                raise LossWeightsError(f"loss weight for {head!r} must be a number, got {value!r}")
            value = float(value)
            if not math.isfinite(value) or value < 0:
                raise LossWeightsError(f"loss weight for {head!r} must be finite and >= 0, got {value}")
            out[head] = value
        return out

    @property
    def auto(self) -> bool:
        """Whether uncertainty weighting is on."""
        return self._auto

    def set(self, **weights: float) -> None:
        """Set fixed weights for some heads (e.g. ``set(gender=0.5)``) and switch auto mode off."""
        checked = self._checked(weights)
        with self._lock:
            self._fixed.update(checked)
            self._auto = False
            self._push()

    def set_auto(self, enabled: bool = True) -> None:
        """Switch uncertainty weighting on (log-variances start at -log of the current weights) or off."""
        with self._lock:
            if enabled and not self._auto and self._vars is not None:
                start = [-math.log(max(self._fixed[h], 1e-3)) for h in HEADS]
                self._assign(self._vars["log_vars"], np.asarray(start, "float32"))
            self._auto = bool(enabled)
            self._push()

    def get(self) -> dict[str, float]:
        """Return the weights in force now: fixed values, or exp(-s_i) in auto mode."""
        with self._lock:
            if self._vars is None:
                return {h: (1.0 if self._auto else self._fixed[h]) for h in HEADS}
            if self._auto:
                log_vars = np.asarray(keras.ops.convert_to_numpy(self._vars["log_vars"]), "float64")
                return {h: float(math.exp(-s)) for h, s in zip(HEADS, log_vars, strict=True)}
            return dict(self._fixed)

    def to_config(self) -> dict[str, float] | str:
        """Return ``"auto"`` or the fixed weights dict (for config.json)."""
        return "auto" if self._auto else dict(self._fixed)

    def bind(self, fixed: Any, log_vars: Any, auto_flag: Any, strategy: Any = None) -> None:
        """Attach the backend variables a model reads (called by ``MultiTaskModel``); pushes current values."""
        with self._lock:
            self._vars = {"fixed": fixed, "log_vars": log_vars, "auto": auto_flag, "strategy": strategy}
            if self._auto:
                self._assign(log_vars, np.zeros(len(HEADS), "float32"))
            self._push()

    def _push(self) -> None:
        if self._vars is None:
            return
        self._assign(self._vars["fixed"], np.asarray([self._fixed[h] for h in HEADS], "float32"))
        self._assign(self._vars["auto"], np.asarray(1.0 if self._auto else 0.0, "float32"))

    def _assign(self, variable: Any, value: np.ndarray) -> None:
        strategy = self._vars.get("strategy") if self._vars else None
        if strategy is not None:
            # Distributed variables are updated in cross-replica context; scopes are per thread.
            with strategy.scope():
                variable.assign(value)
        else:
            variable.assign(value)


@keras.saving.register_keras_serializable(package="utkface")
class LastValue(keras.metrics.Metric):
    """Reports the most recent value it was given (for the loss weights in force)."""

    def __init__(self, name: str = "last_value", dtype: Any = None):
        super().__init__(name=name, dtype=dtype)
        self.value = self.add_variable(shape=(), initializer="zeros", name="value", aggregation="mean")

    def update_state(self, value: Any) -> None:
        self.value.assign(ops.cast(value, self.dtype))

    def result(self) -> Any:
        return ops.convert_to_tensor(self.value)


class MultiTaskModel(keras.Model):
    """Training wrapper around a functional network with live loss weights; save ``.net`` for inference.

    Targets: {"age": years (B,1), "gender": one-hot (B,2), "race": one-hot (B,5)}. The age loss is computed on
    ages scaled to 0..1 with the network's own output range (its final ``Rescaling`` layer named ``age``).
    """

    def __init__(
        self,
        net: keras.Model,
        loss_weights: LossWeights,
        *,
        age_loss: str = "huber",
        label_smoothing: float = 0.0,
        race_prior: Any = None,
        race_tau: float = 0.0,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        if age_loss not in ("mse", "huber", "mae"):
            raise ValueError(f"age_loss {age_loss!r} is invalid: choose 'mse', 'huber' or 'mae'")
        if not (isinstance(race_tau, (int, float)) and math.isfinite(race_tau) and race_tau >= 0):
            raise ValueError(f"race_tau {race_tau!r} is invalid: use a finite number >= 0 (0: plain cross-entropy)")
        self._race_log_prior = None
        if race_tau > 0:
            prior = np.asarray(race_prior if race_prior is not None else [], dtype="float64").reshape(-1)
            n_races = int(net.get_layer("race").output.shape[-1])
            if prior.shape != (n_races,) or not np.all(np.isfinite(prior)) or prior.min() <= 0:
                raise ValueError(f"race_prior must be {n_races} positive class frequencies when race_tau > 0")
            # Logit adjustment (Menon et al. 2021): train on softmax(logits + tau * log prior), so the plain
            # softmax the saved network outputs estimates the class-balanced posterior.
            self._race_log_prior = (race_tau * np.log(prior / prior.sum())).astype("float32")
        self.net = net
        age_layer = net.get_layer("age")
        self._age_low = float(age_layer.offset)
        self._age_span = float(age_layer.scale)
        self._age_loss_name = age_loss
        if age_loss == "huber":
            # delta 0.1 of the range: quadratic near the target, MAE-like for the wild labels.
            self._age_loss = keras.losses.Huber(delta=0.1, reduction=None)
        elif age_loss == "mae":
            self._age_loss = keras.losses.MeanAbsoluteError(reduction=None)
        else:
            self._age_loss = keras.losses.MeanSquaredError(reduction=None)
        self._cce = keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing, reduction=None)
        n = len(HEADS)
        self.fixed_weights = self.add_weight(shape=(n,), initializer="ones", trainable=False, name="fixed_weights")
        self.log_vars = self.add_weight(shape=(n,), initializer="zeros", trainable=True, name="log_vars")
        self.auto_flag = self.add_weight(shape=(), initializer="zeros", trainable=False, name="auto_flag")
        self.loss_weights_ref = loss_weights
        strategy = tf.distribute.get_strategy() if tf.distribute.has_strategy() else None
        loss_weights.bind(self.fixed_weights, self.log_vars, self.auto_flag, strategy)
        self.head_trackers = [keras.metrics.Mean(name=f"{h}_loss") for h in HEADS]
        self.weight_trackers = [LastValue(name=f"w_{h}") for h in HEADS]
        self.age_mae = keras.metrics.MeanAbsoluteError(name="age_mae")
        self.gender_accuracy = keras.metrics.CategoricalAccuracy(name="gender_accuracy")
        self.race_accuracy = keras.metrics.CategoricalAccuracy(name="race_accuracy")

    def call(self, inputs: Any, training: bool = False) -> Any:
        return self.net(inputs, training=training)

    def head_losses(self, y: dict, y_pred: dict) -> list:
        """Return the unweighted batch-mean loss of each head (age in 0..1 units)."""
        age_true = (ops.reshape(ops.cast(y["age"], "float32"), (-1, 1)) - self._age_low) / self._age_span
        age_pred = (ops.reshape(ops.cast(y_pred["age"], "float32"), (-1, 1)) - self._age_low) / self._age_span
        return [
            ops.mean(self._age_loss(age_true, age_pred)),
            ops.mean(self._cce(ops.cast(y["gender"], "float32"), y_pred["gender"])),
            ops.mean(self._cce(ops.cast(y["race"], "float32"), self._adjusted_race(y_pred["race"]))),
        ]

    def _adjusted_race(self, probs: Any) -> Any:
        if self._race_log_prior is None:
            return probs
        # log softmax(z) + tau log prior, renormalised: softmax(z + tau log prior) from the probabilities.
        logits = ops.log(ops.clip(ops.cast(probs, "float32"), 1e-7, 1.0)) + self._race_log_prior
        return ops.softmax(logits, axis=-1)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):  # noqa: D102
        losses = ops.stack(self.head_losses(y, y_pred))
        auto = self.auto_flag
        effective = (1.0 - auto) * self.fixed_weights + auto * ops.exp(-self.log_vars)
        fixed_total = ops.sum(self.fixed_weights * losses)
        auto_total = ops.sum(ops.exp(-self.log_vars) * losses + self.log_vars)
        total = (1.0 - auto) * fixed_total + auto * auto_total
        for i, tracker in enumerate(self.head_trackers):
            tracker.update_state(losses[i])
            self.weight_trackers[i].update_state(effective[i])
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        # Keras sums per-replica gradients, so each replica returns its share (as keras.losses do).
        return total / float(replicas) if replicas > 1 else total

    def compute_metrics(self, x, y, y_pred, sample_weight=None):  # noqa: D102
        self.age_mae.update_state(ops.reshape(ops.cast(y["age"], "float32"), (-1, 1)), y_pred["age"])
        self.gender_accuracy.update_state(y["gender"], y_pred["gender"])
        self.race_accuracy.update_state(y["race"], y_pred["race"])
        return self.get_metrics_result()
