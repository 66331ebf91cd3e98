"""Load a saved run model and predict age (years), gender and race probabilities from uint8 images."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np

OUTPUTS: tuple[str, ...] = ("age", "gender", "race")


class ModelLoadError(ValueError):
    """A model file is missing, unreadable or not a UTKFace multi-output model."""


class PredictionInputError(ValueError):
    """Images given for prediction have the wrong shape or type."""


def load_model(path: str | Path) -> keras.Model:
    """Load a ``.keras`` model without compiling it; raise ModelLoadError naming the problem."""
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"model file {path} does not exist: train a run first or pick another run")
    try:
        model = keras.saving.load_model(path, compile=False)
    except Exception as exc:  # noqa: BLE001 - keras raises many types for a damaged archive
        raise ModelLoadError(f"model file {path} could not be loaded ({type(exc).__name__}: {exc})") from exc
    names = set(model.output_names) if hasattr(model, "output_names") else set()
    if not set(OUTPUTS) <= names:
        raise ModelLoadError(f"model {path} has outputs {sorted(names)}, expected {list(OUTPUTS)}")
    return model


def input_size(model: keras.Model) -> int:
    """Return the square image side the model expects."""
    return int(model.inputs[0].shape[1])


def predict_arrays(model: keras.Model, images_uint8: np.ndarray, batch_size: int = 256) -> dict[str, np.ndarray]:
    """Predict on uint8 images (N,S,S,3) (or one (S,S,3)); return age (N,) years, gender (N,2), race (N,5).

    Images of another size are resized to the model's input size.
    """
    images = np.asarray(images_uint8)
    if images.ndim == 3:
        images = images[None]
    if images.ndim != 4 or images.shape[-1] != 3:
        raise PredictionInputError(f"images must have shape (N, H, W, 3) RGB, got {images.shape}")
    if images.dtype != np.uint8:
        raise PredictionInputError(f"images must be uint8 0..255, got {images.dtype}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise PredictionInputError(f"batch_size must be a positive integer, got {batch_size!r}")
    n = images.shape[0]
    if n == 0:
        return {"age": np.zeros((0,), "float32"), "gender": np.zeros((0, 2), "float32"),
                "race": np.zeros((0, 5), "float32")}
    size = input_size(model)
    parts: dict[str, list[np.ndarray]] = {k: [] for k in OUTPUTS}
    for start in range(0, n, batch_size):
        batch = images[start : start + batch_size].astype("float32")
        if batch.shape[1:3] != (size, size):
            import tensorflow as tf

            batch = tf.image.resize(batch, (size, size), antialias=True).numpy()
        out = model(batch, training=False)
        for key in OUTPUTS:
            parts[key].append(keras.ops.convert_to_numpy(out[key]))
    result = {key: np.concatenate(parts[key], axis=0).astype("float32") for key in OUTPUTS}
    result["age"] = result["age"].reshape(n)
    return result
