"""Export a run's model for download: the Keras file as is, or converted to TensorFlow Lite."""

from __future__ import annotations

import functools
import tempfile
import warnings
import zipfile
from pathlib import Path

import numpy as np

OUTPUTS: tuple[str, ...] = ("age", "gender", "race")
# Largest difference allowed between TFLite and Keras on the check input: age in years, probabilities.
TOLERANCE: dict[str, float] = {"age": 0.05, "gender": 1e-3, "race": 1e-3}


class ExportError(ValueError):
    """A model cannot be exported; the message says why and what to do."""


def _check_model_file(model_path: str | Path) -> Path:
    path = Path(model_path).expanduser()
    if not path.is_file():
        raise ExportError(f"model file {path} does not exist: pick a run that finished training")
    if not zipfile.is_zipfile(path):
        raise ExportError(f"{path} is not a Keras .keras archive; it may be damaged, retrain the run")
    return path.resolve()


def model_bytes(model_path: str | Path) -> bytes:
    """Return the bytes of a run's ``model.keras`` for download, after checking it is a Keras archive."""
    return _check_model_file(model_path).read_bytes()


def tflite_interpreter(tflite_model: bytes):
    """Return an allocated ``tf.lite.Interpreter`` for converted model bytes."""
    import tensorflow as tf

    with warnings.catch_warnings():
        # tf.lite.Interpreter warns it will move to the separate ai_edge_litert package; it still works.
        warnings.simplefilter("ignore", UserWarning)
        interpreter = tf.lite.Interpreter(model_content=tflite_model)
    interpreter.allocate_tensors()
    return interpreter


def run_tflite(tflite_model: bytes, images: np.ndarray) -> dict[str, np.ndarray]:
    """Run converted model bytes on float32 images (N, S, S, 3) 0..255; return age (N, 1), gender, race."""
    interpreter = tflite_interpreter(tflite_model)
    runner = interpreter.get_signature_runner()
    input_name = next(iter(runner.get_input_details()))
    batch = np.asarray(images, dtype=np.float32)
    parts: dict[str, list[np.ndarray]] = {key: [] for key in OUTPUTS}
    # The converted signature has batch 1; feeding one image at a time avoids resizing tensors.
    for image in batch:
        out = runner(**{input_name: image[None]})
        for key in OUTPUTS:
            parts[key].append(np.asarray(out[key]))
    return {key: np.concatenate(parts[key], axis=0) for key in OUTPUTS}


def _check_input(size: int) -> np.ndarray:
    # A smooth gradient plus seeded noise: a fixed, image-like input for comparing both runtimes.
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 255, size, dtype=np.float32)
    base = (ramp[None, :, None] + ramp[:, None, None]) / 2
    return np.clip(base + rng.normal(0, 20, (2, size, size, 3)), 0, 255).astype(np.float32)


@functools.lru_cache(maxsize=2)
def _export_cached(path: str, mtime_ns: int, size: int) -> bytes:
    import tensorflow as tf

    from .inference import load_model

    model = load_model(path)
    shape = tuple(model.inputs[0].shape)
    if len(shape) != 4 or shape[1] is None or shape[2] is None:
        raise ExportError(f"model input shape {shape} is not a fixed (N, S, S, 3); cannot export it to TFLite")
    with tempfile.TemporaryDirectory(prefix="utkface-export-") as tmp:
        try:
            model.export(tmp, format="tf_saved_model", verbose=False)
            converter = tf.lite.TFLiteConverter.from_saved_model(tmp)
            data = converter.convert()
        except Exception as exc:  # noqa: BLE001 - the converter raises many types
            raise ExportError(f"TFLite conversion of {path} failed ({type(exc).__name__}: {exc})") from exc
    images = _check_input(int(shape[1]))
    expected = model(images, training=False)
    got = run_tflite(data, images)
    for key in OUTPUTS:
        diff = float(np.max(np.abs(np.asarray(expected[key]).reshape(got[key].shape) - got[key])))
        if not diff <= TOLERANCE[key]:
            raise ExportError(
                f"the TFLite model's {key} output differs from Keras by {diff:.4g} (allowed {TOLERANCE[key]}); "
                "download the .keras model instead"
            )
    return data


def export_tflite(model_path: str | Path) -> bytes:
    """Convert a run's ``model.keras`` to TensorFlow Lite bytes (float32, signature ``serving_default``).

    The TFLite model takes float32 RGB 0..255 images (1, S, S, 3) and returns ``age`` (years),
    ``gender`` and ``race`` probabilities. Before returning, the result is run in
    ``tf.lite.Interpreter`` and compared with Keras on a fixed input; ExportError if it differs
    beyond ``TOLERANCE``. Results are cached per file and modification time.
    """
    path = _check_model_file(model_path)
    st = path.stat()
    return _export_cached(str(path), st.st_mtime_ns, st.st_size)
