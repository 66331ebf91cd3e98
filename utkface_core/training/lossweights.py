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

from utkface_core.config import TUTORIAL_LOSS_WEIGHTS, LossWeightsError, check_loss_weights
from utkface_core.labels import HEADS

__all__ = ["LossWeights", "LossWeightsError", "MultiTaskModel"]
# DLDL age loss: KL(Gaussian label distribution of this width || predicted bins) * weight + L1 on the expectation.
DLDL_SIGMA_YEARS = 2.0
# 0.25: at weight 1 the KL term dominated the shared features (race -1.6 to -2.1 points); measured in benchmarks/.
DLDL_KL_WEIGHT = 0.25


class LossWeights:
    """Per-head loss weights shared between a training thread and any other thread.

    Fixed mode: total = sum_i w_i * L_i.  Auto mode (Kendall et al. 2018, homoscedastic uncertainty):
    learnable log-variances s_i, total = sum_i exp(-s_i) * L_i + s_i; the effective weights are exp(-s_i).
    """

    def __init__(self, weights: dict[str, float] | str | None = None):
        self._lock = threading.Lock()
        self._fixed = dict(TUTORIAL_LOSS_WEIGHTS)
        self._auto = False
        self._vars: dict[str, Any] | None = None
        if weights == "auto":
            self._auto = True
        elif weights is not None:
            self._fixed.update(self._checked(weights, complete=True))

    @staticmethod
    def _checked(weights: dict[str, Any], complete: bool = False) -> dict[str, float]:
        return check_loss_weights(weights, complete)

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
    ages scaled to 0..1 with the network's own output range (its final ``Rescaling`` layer named ``age``);
    ``age_loss="dldl"`` adds the KL term on the bins of the network's ``age_dist`` layer.
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
        if age_loss not in ("mse", "huber", "mae", "dldl"):
            raise ValueError(f"age_loss {age_loss!r} is invalid: choose 'mse', 'huber', 'mae' or 'dldl'")
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
        self._dist_net = None
        if age_loss == "dldl":
            try:
                dist = net.get_layer("age_dist")
            except ValueError as exc:
                raise ValueError(
                    "age_loss 'dldl' needs a network with an 'age_dist' layer: build it with age_loss='dldl'"
                ) from exc
            # The same layers with the bin probabilities as a fourth output; only the 3-output ``net`` is saved.
            outputs = {name: net.get_layer(name).output for name in HEADS}
            self._dist_net = keras.Model(net.inputs, {**outputs, "age_dist": dist.output}, name=f"{net.name}_dist")
            bins = int(dist.output.shape[-1])
            self._bin_centres = np.linspace(0.0, 1.0, bins, dtype="float32")[None, :]
            self._sigma = DLDL_SIGMA_YEARS / self._age_span
        if age_loss == "huber":
            # delta 0.1 of the range: quadratic near the target, MAE-like for the wild labels.
            self._age_loss = keras.losses.Huber(delta=0.1, reduction=None)
        elif age_loss in ("mae", "dldl"):
            self._age_loss = keras.losses.MeanAbsoluteError(reduction=None)
        else:
            self._age_loss = keras.losses.MeanSquaredError(reduction=None)
        self._cce = keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing, reduction=None)
        n = len(HEADS)
        self.fixed_weights = self.add_weight(shape=(n,), initializer="ones", trainable=False, name="fixed_weights")
        self.log_vars = self.add_weight(shape=(n,), initializer="zeros", trainable=True, name="log_vars")
        self.auto_flag = self.add_weight(shape=(), initializer="zeros", trainable=False, name="auto_flag")
        self.use_loss_weights(loss_weights)
        self.head_trackers = [keras.metrics.Mean(name=f"{h}_loss") for h in HEADS]
        self.weight_trackers = [LastValue(name=f"w_{h}") for h in HEADS]
        self.age_mae = keras.metrics.MeanAbsoluteError(name="age_mae")
        self.gender_accuracy = keras.metrics.CategoricalAccuracy(name="gender_accuracy")
        self.race_accuracy = keras.metrics.CategoricalAccuracy(name="race_accuracy")

    def use_loss_weights(self, loss_weights: LossWeights) -> None:
        """Train with ``loss_weights`` from now on: its values go into this model's weight variables."""
        self.loss_weights_ref = loss_weights
        strategy = tf.distribute.get_strategy() if tf.distribute.has_strategy() else None
        loss_weights.bind(self.fixed_weights, self.log_vars, self.auto_flag, strategy)

    def call(self, inputs: Any, training: bool = False) -> Any:
        if self._dist_net is not None:
            return self._dist_net(inputs, training=training)
        return self.net(inputs, training=training)

    def age_distribution(self, ages: Any) -> Any:
        """Return the DLDL target: a Gaussian (sigma ``DLDL_SIGMA_YEARS``) over the age bins, rows summing to 1."""
        unit = (ops.reshape(ops.cast(ages, "float32"), (-1, 1)) - self._age_low) / self._age_span
        logits = -ops.square(self._bin_centres - unit) / (2.0 * self._sigma**2)
        return ops.softmax(logits, axis=-1)

    def _age_losses(self, ages: Any, y_pred: dict) -> Any:
        # Per-sample loss of the age head against ages in years (B,1), in 0..1 units.
        age_true = (ops.reshape(ops.cast(ages, "float32"), (-1, 1)) - self._age_low) / self._age_span
        if self._dist_net is None:
            age_pred = (ops.reshape(ops.cast(y_pred["age"], "float32"), (-1, 1)) - self._age_low) / self._age_span
            return self._age_loss(age_true, age_pred)
        # L1 on the expectation of the bins (smooth in the probabilities; the ``age`` output is their median).
        expectation = ops.sum(ops.cast(y_pred["age_dist"], "float32") * self._bin_centres, axis=-1, keepdims=True)
        loss = self._age_loss(age_true, expectation)
        target = self.age_distribution(ages)
        probs = ops.clip(ops.cast(y_pred["age_dist"], "float32"), 1e-7, 1.0)
        kl = ops.sum(target * (ops.log(ops.clip(target, 1e-7, 1.0)) - ops.log(probs)), axis=-1)
        return DLDL_KL_WEIGHT * kl + loss

    def head_losses(self, y: dict, y_pred: dict) -> list:
        """Return the unweighted batch-mean loss of each head (age in 0..1 units).

        With mixup the targets also hold ``age_pair`` (B,2) years and ``mix`` (B,1): the age loss is then
        ``mix * L(age_a) + (1 - mix) * L(age_b)`` (class targets arrive already mixed).
        """
        if "mix" in y:
            mix = ops.reshape(ops.cast(y["mix"], "float32"), (-1,))
            pair = ops.cast(y["age_pair"], "float32")
            age = mix * self._age_losses(pair[:, 0:1], y_pred) + (1.0 - mix) * self._age_losses(pair[:, 1:2], y_pred)
        else:
            age = self._age_losses(y["age"], y_pred)
        return [
            ops.mean(age),
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
