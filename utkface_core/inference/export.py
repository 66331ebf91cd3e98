"""Export a run's model to take it out of the app: the Keras file as is, ONNX (tf2onnx) or TensorFlow Lite.

Every export is run in its own runtime (Keras, ONNX Runtime, ``tf.lite.Interpreter``) on a fixed check input and
compared with the Keras model; the largest absolute difference per head is reported, and an export that differs
beyond ``TOLERANCE`` is refused.
"""

from __future__ import annotations

import logging
import tempfile
import threading
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from utkface_core import runs
from utkface_core.files import write_bytes_atomic
from utkface_core.labels import HEADS

FORMATS: tuple[str, ...] = ("keras", "onnx", "tflite")
SUFFIXES: dict[str, str] = {"keras": ".keras", "onnx": ".onnx", "tflite": ".tflite"}
# Largest difference allowed between an export and Keras on the check input: age in years, probabilities.
TOLERANCE: dict[str, float] = {"age": 0.05, "gender": 1e-3, "race": 1e-3}
# ONNX opset 17 is read by every ONNX Runtime since 1.11 and by tf2onnx 1.17.
ONNX_OPSET = 17
ONNX_INPUT = "image"

# Converters trace graphs with process-wide state: one conversion at a time.
_convert_lock = threading.Lock()


class ExportError(ValueError):
    """A model cannot be exported; the message says why and what to do."""


@dataclass(frozen=True)
class ExportResult:
    """An exported model: its ``format``, file ``data`` and the largest absolute difference per head from Keras."""

    format: str
    data: bytes
    max_abs_diff: dict[str, float]

    @property
    def suffix(self) -> str:
        """Return the file suffix of the format (``.keras``, ``.onnx`` or ``.tflite``)."""
        return SUFFIXES[self.format]

    def parity_text(self) -> str:
        """Return e.g. ``age 3.8e-06, gender 6e-08, race 1.5e-08`` (max abs difference from Keras per head)."""
        return ", ".join(f"{head} {self.max_abs_diff[head]:.2g}" for head in HEADS)


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


def _fixed_size(model) -> int:
    shape = tuple(model.inputs[0].shape)
    if len(shape) != 4 or shape[1] is None or shape[1] != shape[2]:
        raise ExportError(f"model input shape {shape} is not a fixed (N, S, S, 3); cannot export it")
    return int(shape[1])


def check_input(size: int) -> np.ndarray:
    """Return the fixed float32 check input (2, S, S, 3) 0..255: a smooth gradient plus seeded noise."""
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 255, size, dtype=np.float32)
    base = (ramp[None, :, None] + ramp[:, None, None]) / 2
    return np.clip(base + rng.normal(0, 20, (2, size, size, 3)), 0, 255).astype(np.float32)


# --- ONNX ------------------------------------------------------------------------------------------


def to_onnx(model) -> bytes:
    """Convert an in-memory Keras run model to ONNX bytes (opset ``ONNX_OPSET``) with tf2onnx.

    tf2onnx's ``from_keras`` targets the Keras 2 model internals, so the model is wrapped in a
    ``tf.function`` with a (None, S, S, 3) float32 signature and converted with ``from_function``.
    The ONNX model takes ``image`` (N, S, S, 3) float32 RGB 0..255 and returns ``age`` (N, 1) years,
    ``gender`` (N, 2) and ``race`` (N, 5) probabilities.
    """
    import tensorflow as tf
    import tf2onnx

    size = _fixed_size(model)
    spec = [tf.TensorSpec([None, size, size, 3], tf.float32, name=ONNX_INPUT)]
    fn = tf.function(lambda image: model(image, training=False), input_signature=spec)
    logging.getLogger("tf2onnx").setLevel(logging.ERROR)  # it logs every optimizer pass at INFO
    with _convert_lock:
        try:
            proto, _ = tf2onnx.convert.from_function(fn, input_signature=spec, opset=ONNX_OPSET)
        except Exception as exc:  # noqa: BLE001 - the converter raises many types
            raise ExportError(f"ONNX conversion failed ({type(exc).__name__}: {exc})") from exc
    names = [out.name for out in proto.graph.output]
    if sorted(names) != sorted(HEADS):
        raise ExportError(f"the ONNX graph has outputs {names}, expected {list(HEADS)}")
    return proto.SerializeToString()


def run_onnx(onnx_model: bytes, images: np.ndarray) -> dict[str, np.ndarray]:
    """Run ONNX bytes in ONNX Runtime on float32 images (N, S, S, 3) 0..255; return age (N, 1), gender, race."""
    from utkface_core.inference.prediction import OnnxModel

    return OnnxModel(onnx_model).run(np.asarray(images, dtype=np.float32))


# --- TensorFlow Lite ------------------------------------------------------------------------------


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
    parts: dict[str, list[np.ndarray]] = {key: [] for key in HEADS}
    # The converted signature has batch 1; feeding one image at a time avoids resizing tensors.
    for image in batch:
        out = runner(**{input_name: image[None]})
        for key in HEADS:
            parts[key].append(np.asarray(out[key]))
    return {key: np.concatenate(parts[key], axis=0) for key in HEADS}


def to_tflite(model) -> bytes:
    """Convert an in-memory Keras run model to TensorFlow Lite bytes (float32, signature ``serving_default``)."""
    import tensorflow as tf

    _fixed_size(model)
    with _convert_lock, tempfile.TemporaryDirectory(prefix="utkface-export-") as tmp:
        try:
            model.export(tmp, format="tf_saved_model", verbose=False)
            return tf.lite.TFLiteConverter.from_saved_model(tmp).convert()
        except Exception as exc:  # noqa: BLE001 - the converter raises many types
            raise ExportError(f"TFLite conversion failed ({type(exc).__name__}: {exc})") from exc


# --- checked exports -------------------------------------------------------------------------------


def _run_keras_file(data: bytes, images: np.ndarray) -> dict[str, np.ndarray]:
    from utkface_core.inference.prediction import load_model

    with tempfile.TemporaryDirectory(prefix="utkface-export-") as tmp:
        path = Path(tmp) / runs.MODEL_FILE
        path.write_bytes(data)
        model = load_model(path)
    out = model(images, training=False)
    return {key: np.asarray(out[key]) for key in HEADS}


def parity(model, data: bytes, fmt: str) -> dict[str, float]:
    """Return the largest absolute difference per head between ``model`` and its export ``data`` on the check input."""
    if fmt not in FORMATS:
        raise ExportError(f"format must be one of {list(FORMATS)}, got {fmt!r}")
    images = check_input(_fixed_size(model))
    expected = model(images, training=False)
    runner = {"keras": _run_keras_file, "onnx": run_onnx, "tflite": run_tflite}[fmt]
    got = runner(data, images)
    diffs = {}
    for key in HEADS:
        value = np.asarray(got[key], dtype=np.float64)
        diffs[key] = float(np.max(np.abs(np.asarray(expected[key], dtype=np.float64).reshape(value.shape) - value)))
    return diffs


def export_model(model_path: str | Path, fmt: str) -> ExportResult:
    """Export a run's ``model.keras`` as ``fmt`` ("keras", "onnx" or "tflite") and check it against Keras.

    All formats take float32 RGB 0..255 images (N, S, S, 3) (TFLite: N = 1) and return ``age`` (years),
    ``gender`` and ``race`` probabilities. ExportError names the problem when the file is missing or
    damaged, the conversion fails, or the export differs from Keras beyond ``TOLERANCE`` on any head.
    """
    if fmt not in FORMATS:
        raise ExportError(f"format must be one of {list(FORMATS)}, got {fmt!r}")
    path = _check_model_file(model_path)
    from utkface_core.inference.prediction import ModelLoadError, load_model_cached

    try:
        model = load_model_cached(path)
    except ModelLoadError as exc:
        raise ExportError(str(exc)) from None
    data = path.read_bytes() if fmt == "keras" else (to_onnx(model) if fmt == "onnx" else to_tflite(model))
    diffs = parity(model, data, fmt)
    for key in HEADS:
        if not diffs[key] <= TOLERANCE[key]:
            raise ExportError(
                f"the {fmt} model's {key} output differs from Keras by {diffs[key]:.4g} (allowed {TOLERANCE[key]}); "
                "download the .keras model instead"
            )
    return ExportResult(format=fmt, data=data, max_abs_diff=diffs)


def export_onnx(model_path: str | Path) -> bytes:
    """Convert a run's ``model.keras`` to ONNX bytes, checked against Keras (see :func:`export_model`)."""
    return export_model(model_path, "onnx").data


def export_tflite(model_path: str | Path) -> bytes:
    """Convert a run's ``model.keras`` to TensorFlow Lite bytes, checked against Keras (see :func:`export_model`)."""
    return export_model(model_path, "tflite").data


def model_path_of(run_or_model: str | Path) -> Path:
    """Return the ``model.keras`` of a run folder, or the path itself when it names a ``.keras`` file."""
    path = Path(run_or_model).expanduser()
    if path.is_dir():
        return runs.model_path(path)
    if path.suffix == ".keras":
        return path
    raise ExportError(f"{path} is neither a run folder nor a .keras file: give a folder written by training")


def write_export(run_or_model: str | Path, fmt: str, out: str | Path | None = None) -> tuple[Path, ExportResult]:
    """Export a run's model as ``fmt`` and write it atomically; return the written path and the result.

    ``out`` may be a file path, an existing folder, or None (the current folder); in a folder the file is
    named after the run (``<run>.onnx``). The run folder itself is never written to unless ``out`` says so.
    """
    model_path = model_path_of(run_or_model)
    result = export_model(model_path, fmt)
    run_name = model_path.parent.name if model_path.name == runs.MODEL_FILE else model_path.stem
    target = Path(out).expanduser() if out is not None else Path.cwd()
    if target.is_dir():
        target = target / f"{run_name}{result.suffix}"
    if target.resolve() == model_path.resolve():
        raise ExportError(f"{target} is the run's own model file: choose another --out")
    if not target.parent.is_dir():
        raise ExportError(f"folder {target.parent} does not exist: create it or choose another --out")
    write_bytes_atomic(target, result.data)
    return target, result
