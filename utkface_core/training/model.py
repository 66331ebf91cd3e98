"""Network builders: the tutorial's multi-output CNN and a small, fast one; outputs age (years), gender, race."""

from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np
from keras import layers

from utkface_core.config import AGE_LOSSES, PRESET_IMAGE_SIZE, PRESET_LEARNING_RATE, PRESETS

N_GENDERS = 2
N_RACES = 5
# How sharply a DLDL head's median counts the bins under half the probability mass: 100 turns a CDF 1 % away
# from one half into 0.27 / 0.73 (the median then interpolates between bins); 30-1000 give the same test MAE.
MEDIAN_SHARPNESS = 100.0


class ModelBuildError(ValueError):
    """A model could not be built from the given arguments."""


@dataclass(frozen=True)
class PresetSpec:
    """How a preset is trained (the network itself comes from ``build_model``)."""

    optimizer: str  # "rmsprop" | "adamw"
    learning_rate: float
    weight_decay: float
    age_loss: str  # "mse" | "huber" | "mae" on age scaled to 0..1, or "dldl" (a distribution head, see AGE_LOSSES)
    label_smoothing: float
    lr_schedule: bool  # warm-up + cosine decay over the planned steps / time budget
    age_floor: bool  # True: age = min_age + sigmoid * (max_age - min_age); False: sigmoid * max_age
    in_memory: bool = True  # feed: the decoded rows as an in-graph tensor; False: read per batch via numpy
    race_tau: float = 0.0  # logit adjustment of the race loss by the class prior (0: plain cross-entropy)
    mixup_alpha: float = 0.0  # mixup of training batches, lambda ~ Beta(alpha, alpha) (0: off)


PRESET_SPECS: dict[str, PresetSpec] = {
    # The tutorial's recipe: RMSprop at Keras' default rate, MSE on age/max_age, plain cross-entropy.
    "tutorial": PresetSpec("rmsprop", PRESET_LEARNING_RATE["tutorial"], 0.0, "mse", 0.0, False, False),
    # The earlier fast recipe as it was, including its streaming input feed.
    "fast-v1": PresetSpec("adamw", PRESET_LEARNING_RATE["fast-v1"], 1e-4, "mae", 0.05, True, True, in_memory=False),
    # DLDL age head: test MAE -0.6 to -0.8 y at 24 epochs, race/gender within noise, same speed (benchmarks/README.md).
    "fast": PresetSpec("adamw", PRESET_LEARNING_RATE["fast"], 1e-4, "dldl", 0.05, True, True),
}


# AGE_LOSSES (config): "dldl" (deep label distribution learning, Gao et al. 2017/2018) makes the age head a softmax
# over one bin per year with ``age`` its expectation, trained on the KL divergence to a Gaussian around the true
# age plus L1 on the expectation; the others regress one sigmoid unit.


def age_bins(low: float, high: float) -> int:
    """Return the number of bins of a distribution age head over low..high years: one per year, at least 2."""
    return max(2, int(round(float(high) - float(low))) + 1)


def _check(preset: str, image_size: int | None, min_age: float, max_age: float) -> int:
    if preset not in PRESETS:
        raise ModelBuildError(f"unknown preset {preset!r}: choose one of {list(PRESETS)}")
    size = PRESET_IMAGE_SIZE[preset] if image_size is None else image_size
    if isinstance(size, bool) or not isinstance(size, int) or size < 16:
        raise ModelBuildError(f"image_size {image_size!r} is invalid: use an integer >= 16 or None")
    if preset == "tutorial" and size < 160:
        raise ModelBuildError(f"the tutorial network needs image_size >= 160 (got {size}); it was designed for 198")
    if not 0 <= min_age < max_age:
        raise ModelBuildError(f"age range {min_age}..{max_age} is invalid: need 0 <= min_age < max_age")
    return size


def _age_head(
    features, units: int, min_age: float, max_age: float, floor: bool, dropout: float = 0.0, dist: bool = False
):
    x = layers.Dense(units, activation="relu", name="age_dense")(features)
    if dropout:
        x = layers.Dropout(dropout, name="age_dropout")(x)
    low = float(min_age) if floor else 0.0
    if dist:
        bins = age_bins(low, max_age)
        probs = layers.Dense(bins, activation="softmax", name="age_dist")(x)
        # The median of the bins, not their mean: it minimises the expected absolute error (test MAE -0.16 to
        # -0.20 y on the same models, benchmarks/README.md). Frozen built-in Dense layers, no custom object:
        # "age_below" is ~1 for each bin whose cumulative probability is under one half, "age_unit" counts them
        # (0..1: the median bin's position). Training's L1 term stays on the expectation (MultiTaskModel).
        upper = np.triu(np.ones((bins, bins), dtype="float32"))  # column k sums bins 0..k: the CDF at bin k
        below = layers.Dense(
            bins,
            activation="sigmoid",
            trainable=False,
            kernel_initializer=keras.initializers.Constant(-MEDIAN_SHARPNESS * upper),
            bias_initializer=keras.initializers.Constant(MEDIAN_SHARPNESS * 0.5),
            name="age_below",
        )(probs)
        x = layers.Dense(
            1,
            use_bias=False,
            trainable=False,
            kernel_initializer=keras.initializers.Constant(np.full((bins, 1), 1.0 / (bins - 1), dtype="float32")),
            name="age_unit",
        )(below)
    else:
        x = layers.Dense(1, activation="sigmoid", name="age_unit")(x)
    # A built-in layer keeps the saved model free of custom objects; its output is in years.
    return layers.Rescaling(scale=float(max_age) - low, offset=low, name="age")(x)


def _class_head(features, name: str, units: int, classes: int, dropout: float = 0.0):
    x = layers.Dense(units, activation="relu", name=f"{name}_dense")(features)
    if dropout:
        x = layers.Dropout(dropout, name=f"{name}_dropout")(x)
    return layers.Dense(classes, activation="softmax", name=name)(x)


def _tutorial_body(x):
    x = layers.Conv2D(32, 3, activation="relu", name="conv1")(x)
    for i, filters in enumerate((64, 96, 128, 160, 192), start=2):
        x = layers.Conv2D(filters, 3, activation="relu", name=f"conv{i}")(x)
        x = layers.BatchNormalization(name=f"bn{i}")(x)
        x = layers.MaxPooling2D(2, name=f"pool{i}")(x)
    return layers.GlobalMaxPooling2D(name="features")(x)


def _conv_bn(x, filters: int, name: str, strides: int = 1, separable: bool = False, momentum: float = 0.99):
    if separable:
        x = layers.SeparableConv2D(filters, 3, strides=strides, padding="same", use_bias=False, name=name)(x)
    else:
        x = layers.Conv2D(filters, 3, strides=strides, padding="same", use_bias=False, name=name)(x)
    x = layers.BatchNormalization(momentum=momentum, name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x)


# (filters, convs) per stage: FAST_STAGES for the `fast` preset, FAST_V1_STAGES for `fast-v1`. fast's 3/4 width
# costs 0.56x the FLOPs and trains ~1.3x faster per CPU-second at about the same accuracy per epoch (see
# benchmarks/README.md for the layouts tried).
FAST_STAGES: tuple[tuple[int, int], ...] = ((24, 1), (48, 1), (96, 1), (192, 1))
FAST_V1_STAGES: tuple[tuple[int, int], ...] = ((32, 1), (64, 1), (128, 1), (256, 1))
# Runs are a few hundred steps: the default 0.99 leaves validation statistics far behind the weights.
FAST_BN_MOMENTUM = 0.9
FAST_SEPARABLE = False


def _fast_body(x, stages: tuple[tuple[int, int], ...] | None = None):
    # Plain 3x3 convs on a stride-2 stem: at 64 px on CPU they beat depthwise-separable ones per second
    # (see the design notes in the report); one pooling per stage keeps the compute front-loaded small.
    stages = FAST_STAGES if stages is None else stages
    x = _conv_bn(x, stages[0][0], "stem", strides=2, momentum=FAST_BN_MOMENTUM)
    for s, (filters, convs) in enumerate(stages):
        for c in range(convs):
            x = _conv_bn(x, filters, f"s{s}c{c}", separable=FAST_SEPARABLE, momentum=FAST_BN_MOMENTUM)
        if s < len(stages) - 1:
            x = layers.MaxPooling2D(2, name=f"s{s}_pool")(x)
    return layers.GlobalAveragePooling2D(name="features")(x)


def build_model(
    preset: str,
    image_size: int | None = None,
    max_age: float = 116.0,
    *,
    min_age: float = 0.0,
    age_loss: str | None = None,
) -> keras.Model:
    """Build a functional model: float RGB 0..255 in, dict {age (N,1) years, gender (N,2), race (N,5)} out.

    ``tutorial`` predicts ``sigmoid * max_age``; ``fast`` and ``fast-v1`` predict
    ``min_age + sigmoid * (max_age - min_age)``. With ``age_loss="dldl"`` (None: the preset's) the sigmoid is
    replaced by a softmax over one bin per year (layer ``age_dist``) and ``age`` is its median, in years.
    """
    size = _check(preset, image_size, float(min_age), float(max_age))
    spec = PRESET_SPECS[preset]
    age_loss = spec.age_loss if age_loss is None else age_loss
    if age_loss not in AGE_LOSSES:
        raise ModelBuildError(f"age_loss {age_loss!r} is invalid: choose one of {list(AGE_LOSSES)} or None")
    dist = age_loss == "dldl"
    inputs = keras.Input(shape=(size, size, 3), dtype="float32", name="image")
    x = layers.Rescaling(1.0 / 255.0, name="rescale")(inputs)
    if preset == "tutorial":
        features = _tutorial_body(x)
        age = _age_head(features, 128, min_age, max_age, spec.age_floor, dist=dist)
        gender = _class_head(features, "gender", 128, N_GENDERS)
        race = _class_head(features, "race", 128, N_RACES)
    else:
        features = _fast_body(x, FAST_STAGES if preset == "fast" else FAST_V1_STAGES)
        features = layers.Dropout(0.2, name="features_dropout")(features)
        age = _age_head(features, 64, min_age, max_age, spec.age_floor, dist=dist)
        gender = _class_head(features, "gender", 64, N_GENDERS)
        race = _class_head(features, "race", 64, N_RACES)
    return keras.Model(inputs, {"age": age, "gender": gender, "race": race}, name=f"utkface_{preset}")
