"""Training configuration: one flat, typed dataclass with defaults, validation and JSON round-trip."""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass, field
from typing import Any

from utkface_core.labels import HEADS

# "fast": the default recipe; "fast-v1": the earlier fast recipe, kept for comparison; "tutorial": the tutorial's.
PRESETS: tuple[str, ...] = ("fast", "fast-v1", "tutorial")
PRESET_IMAGE_SIZE: dict[str, int] = {"fast": 48, "fast-v1": 48, "tutorial": 198}
PRESET_BATCH_SIZE: dict[str, int] = {"fast": 128, "fast-v1": 64, "tutorial": 64}
# Peak rates at the preset's batch size; another batch size scales them (see ``resolved_learning_rate``).
# fast: fast-v1's 3e-3 at 64 scaled to 128 (measured in benchmarks/README.md).
PRESET_LEARNING_RATE: dict[str, float] = {"fast": 4.2e-3, "fast-v1": 3e-3, "tutorial": 1e-3}
# tutorial: the tutorial's 49/21/30 random split; stratified: the same sizes, stratified; select: stratified
# 85/5/10, train on train, choose settings on valid; final: the same partition, trained on train + valid.
SPLIT_METHODS: tuple[str, ...] = ("tutorial", "stratified", "select", "final")
STRATEGIES: tuple[str, ...] = ("default", "mirrored")
# Age losses: L1 ("mae"), Huber and MSE on one sigmoid unit (age scaled to 0..1); "dldl": a softmax over one bin
# per year trained on a Gaussian label distribution, its expectation being the age (utkface_core/training/model.py).
AGE_LOSSES: tuple[str, ...] = ("mae", "huber", "mse", "dldl")
# The tutorial weighs age 2, race 1.5, gender 1.
TUTORIAL_LOSS_WEIGHTS: dict[str, float] = {"age": 2.0, "gender": 1.0, "race": 1.5}


class ConfigError(ValueError):
    """A training configuration value is invalid; the message names the field and what to do."""


class LossWeightsError(ValueError):
    """A loss weight was invalid (unknown head, negative or non-finite value)."""


def check_loss_weights(weights: dict[str, Any], complete: bool = False) -> dict[str, float]:
    """Return ``weights`` as floats, or raise LossWeightsError naming the bad head or value.

    Lives here, not in training.lossweights, so the app can check a slider's weights without loading TensorFlow.
    ``complete`` asks for every head.
    """
    if not isinstance(weights, dict):
        raise LossWeightsError(f"loss weights must be a dict like {TUTORIAL_LOSS_WEIGHTS} or 'auto', got {weights!r}")
    unknown = sorted(set(weights) - set(HEADS))
    if unknown:
        raise LossWeightsError(f"unknown heads {unknown} in loss weights: the heads are {list(HEADS)}")
    if complete and set(weights) != set(HEADS):
        raise LossWeightsError(f"loss weights need all heads {list(HEADS)}, got {sorted(weights)}")
    out = {}
    for head, value in weights.items():
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise LossWeightsError(f"loss weight for {head!r} must be a number, got {value!r}")
        value = float(value)
        if not math.isfinite(value) or value < 0:
            raise LossWeightsError(f"loss weight for {head!r} must be finite and >= 0, got {value}")
        out[head] = value
    return out


def _default_loss_weights() -> dict[str, float]:
    return dict(TUTORIAL_LOSS_WEIGHTS)


@dataclass
class TrainConfig:
    """Everything that determines a training run (except the data itself)."""

    preset: str = "fast"
    image_size: int | None = None  # None: the preset's default (fast 48, tutorial 198)
    epochs: int = 30
    time_budget_s: float | None = None  # stop (and end the LR schedule) after this many seconds
    batch_size: int | None = None  # None: the preset's default (filled in at construction)
    learning_rate: float | None = None  # None: the preset's default, scaled to the batch size
    min_age: int = 10
    max_age: int = 65
    loss_weights: dict[str, float] | str = field(default_factory=_default_loss_weights)  # or "auto"
    seed: int = 0
    split_method: str | None = None  # None: "tutorial" for the tutorial preset, else "final" (filled in)
    early_stopping_patience: int | None = 8  # epochs without validation improvement; None: off
    augment: bool = True
    strategy: str = "default"
    age_loss: str | None = None  # None: the preset's (see AGE_LOSSES)
    mixup_alpha: float | None = None  # mixup of training batches, Beta(alpha, alpha); 0: off; None: the preset's
    data_source: str = ""
    data_fingerprint: str = ""

    def __post_init__(self) -> None:
        # Defaults that depend on the preset are written into the fields, so config.json says what was used.
        if self.batch_size is None and self.preset in PRESET_BATCH_SIZE:
            self.batch_size = PRESET_BATCH_SIZE[self.preset]
        if self.split_method is None:
            self.split_method = "tutorial" if self.preset == "tutorial" else "final"

    def resolved_image_size(self) -> int:
        """Return the image side in pixels (the preset default when ``image_size`` is None)."""
        return int(self.image_size) if self.image_size is not None else PRESET_IMAGE_SIZE[self.preset]

    def resolved_learning_rate(self) -> float:
        """Return the peak learning rate: ``learning_rate``, or the preset's rate scaled to the batch size.

        The scaling is by the square root of the batch-size ratio (Adam-family optimizers; linear scaling
        overshoots at these sizes), e.g. fast at batch 512 instead of 128 gets twice the rate.
        """
        if self.learning_rate is not None:
            return float(self.learning_rate)
        base = PRESET_LEARNING_RATE[self.preset]
        batch = self.batch_size if self.batch_size is not None else PRESET_BATCH_SIZE[self.preset]
        return base * math.sqrt(batch / PRESET_BATCH_SIZE[self.preset])

    def validate(self) -> TrainConfig:
        """Raise ConfigError naming the first bad field; return self when all values are valid."""

        def bad(name: str, why: str) -> ConfigError:
            return ConfigError(f"TrainConfig.{name} = {getattr(self, name)!r} is invalid: {why}")

        def is_int(value: Any) -> bool:
            return isinstance(value, int) and not isinstance(value, bool)

        def is_number(value: Any) -> bool:
            return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)

        if self.preset not in PRESETS:
            raise bad("preset", f"choose one of {list(PRESETS)}")
        if self.image_size is not None and (not is_int(self.image_size) or not 16 <= self.image_size <= 512):
            raise bad("image_size", "use an integer between 16 and 512, or None for the preset default")
        if self.preset == "tutorial" and self.image_size is not None and self.image_size < 160:
            raise bad("image_size", "the tutorial network needs at least 160 px (it was designed for 198)")
        if not is_int(self.epochs) or self.epochs < 1:
            raise bad("epochs", "use an integer >= 1")
        if self.time_budget_s is not None and (not is_number(self.time_budget_s) or self.time_budget_s <= 0):
            raise bad("time_budget_s", "use a positive number of seconds, or None for no budget")
        if not is_int(self.batch_size) or not 1 <= self.batch_size <= 4096:
            raise bad("batch_size", "use an integer between 1 and 4096, or None for the preset default")
        if self.learning_rate is not None and (not is_number(self.learning_rate) or not 0 < self.learning_rate <= 1):
            raise bad("learning_rate", "use a number in (0, 1], or None for the preset default")
        if not is_int(self.min_age) or not 0 <= self.min_age <= 200:
            raise bad("min_age", "use an integer age in years between 0 and 200")
        if not is_int(self.max_age) or not 0 < self.max_age <= 200:
            raise bad("max_age", "use an integer age in years between 1 and 200")
        if self.min_age > self.max_age:
            raise bad("min_age", f"it must not exceed max_age ({self.max_age})")
        self._validate_loss_weights()
        if not is_int(self.seed) or self.seed < 0:
            raise bad("seed", "use a non-negative integer")
        if self.split_method not in SPLIT_METHODS:
            raise bad("split_method", f"choose one of {list(SPLIT_METHODS)}, or None for the preset default")
        if self.early_stopping_patience is not None and (
            not is_int(self.early_stopping_patience) or self.early_stopping_patience < 1
        ):
            raise bad("early_stopping_patience", "use an integer >= 1, or None to turn early stopping off")
        if not isinstance(self.augment, bool):
            raise bad("augment", "use True or False")
        if self.strategy not in STRATEGIES:
            raise bad("strategy", f"choose one of {list(STRATEGIES)}")
        if self.age_loss is not None and self.age_loss not in AGE_LOSSES:
            raise bad("age_loss", f"choose one of {list(AGE_LOSSES)}, or None for the preset default")
        if self.mixup_alpha is not None and (not is_number(self.mixup_alpha) or not 0 <= self.mixup_alpha < 100):
            raise bad("mixup_alpha", "use a number in [0, 100) (0 turns mixup off; 0.2 is typical), or None")
        if not isinstance(self.data_source, str):
            raise bad("data_source", "use a string (a folder path or 'demo')")
        if not isinstance(self.data_fingerprint, str):
            raise bad("data_fingerprint", "use a string")
        return self

    def _validate_loss_weights(self) -> None:
        weights = self.loss_weights
        if isinstance(weights, str):
            if weights != "auto":
                raise ConfigError(
                    f"TrainConfig.loss_weights = {weights!r} is invalid: use 'auto' or a dict with keys {list(HEADS)}"
                )
            return
        if not isinstance(weights, dict) or set(weights) != set(HEADS):
            raise ConfigError(
                f"TrainConfig.loss_weights = {weights!r} is invalid: use 'auto' or a dict with exactly "
                f"the keys {list(HEADS)}"
            )
        for head, value in weights.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ConfigError(
                    f"TrainConfig.loss_weights[{head!r}] = {value!r} is invalid: use a finite number >= 0"
                )
        if sum(weights.values()) <= 0:
            raise ConfigError("TrainConfig.loss_weights are all 0: give at least one head a positive weight")

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict of all fields."""
        data = dataclasses.asdict(self)
        if isinstance(self.loss_weights, dict):
            data["loss_weights"] = {k: float(v) for k, v in self.loss_weights.items()}
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Build a config from ``to_dict()`` output; unknown keys raise ConfigError (values are not validated)."""
        if not isinstance(data, dict):
            raise ConfigError(f"a TrainConfig needs a dict, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown TrainConfig keys {unknown}; known keys are {sorted(known)}")
        values = dict(data)
        if isinstance(values.get("loss_weights"), dict):
            values["loss_weights"] = dict(values["loss_weights"])
        return cls(**values)
