"""Predict age, gender and race for the faces in a photo, one file or many (UI-free)."""

from __future__ import annotations

import collections
import dataclasses
import functools
import hashlib
import os
import threading
import time
import weakref
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFont

from utkface_core.inference import detection
from utkface_core.labels import GENDERS, HEADS, IMAGE_SUFFIXES, MAX_AGE, RACES

NO_FACE_MESSAGE = (
    "No face found: try a photo where the face is larger and frontal, "
    "or turn off detection if the image is already a cropped face"
)
# Faces are aligned at UTKFace's native size, then resized to the model's input like training images.
CROP_SIZE = 200
# Same filter as utkface_core.data.imagecache, so a face reaches the model resized the way training images were.
_RESAMPLE = Image.Resampling.BILINEAR
_REDUCING_GAP = 3.0
# Without a held-out MAE the band is at least this wide on each side, so it never collapses to a point.
_MIN_HALF_WIDTH = 1.0
ARCHIVE_SUFFIXES: tuple[str, ...] = (".zip", ".tar", ".tar.gz", ".tgz")

ImageSource = np.ndarray | bytes | bytearray | str | os.PathLike | BinaryIO


class PredictionError(ValueError):
    """An argument of a prediction call is unusable; the message says which and what to do."""


@dataclass
class FacePrediction:
    """The prediction for one face.

    ``box`` is ``(x, y, w, h)`` in the decoded image; ``confidence`` is the detector's score
    (None when detection was off); ``crop`` is the aligned 200x200 uint8 face the model saw
    (before resizing to its input size); probabilities map class names to floats.
    """

    index: int
    box: tuple[int, int, int, int]
    confidence: float | None
    crop: np.ndarray
    age: float
    age_low: float
    age_high: float
    gender_probs: dict[str, float]
    race_probs: dict[str, float]

    @property
    def gender(self) -> str:
        """Return the most probable gender."""
        return max(self.gender_probs, key=self.gender_probs.__getitem__)

    @property
    def race(self) -> str:
        """Return the most probable race."""
        return max(self.race_probs, key=self.race_probs.__getitem__)


@dataclass
class ImageResult:
    """All faces predicted in one image, the decoded RGB image, and a message when no face was found."""

    faces: list[FacePrediction]
    image_rgb: np.ndarray
    message: str | None = None
    source: str | None = field(default=None)


# --- models and engines --------------------------------------------------------------------------

# "keras" runs the .keras file as a traced tf.function; "onnx" converts it (checked against Keras) for ONNX Runtime.
ENGINES: tuple[str, ...] = ("keras", "onnx")

_predict_fns: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_predict_fns_lock = threading.Lock()


class ModelLoadError(ValueError):
    """A model file is missing, unreadable or not a UTKFace multi-output model."""


class OnnxModel:
    """An ONNX Runtime session obeying the run-model contract: float32 RGB 0..255 (N, S, S, 3) in, age/gender/race out.

    Built from the bytes of an ONNX model (``export.export_onnx`` or ``export.to_onnx``); the input is
    ``image`` and the outputs are named ``age``, ``gender`` and ``race``.
    """

    def __init__(self, onnx_model: bytes, threads: int | None = None):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only: ORT warns about unused initializers of converted graphs
        if threads is not None:
            options.intra_op_num_threads = int(threads)
        try:
            self.session = ort.InferenceSession(bytes(onnx_model), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own types for a bad graph
            raise ModelLoadError(f"the ONNX model cannot be loaded ({type(exc).__name__}: {exc})") from exc
        inputs = self.session.get_inputs()
        names = [out.name for out in self.session.get_outputs()]
        if len(inputs) != 1 or not set(HEADS) <= set(names):
            raise ModelLoadError(
                f"ONNX model has inputs {[i.name for i in inputs]} and outputs {names}; "
                f"expected one image input and outputs {list(HEADS)}"
            )
        self.input_name = inputs[0].name
        shape = inputs[0].shape
        side = shape[1] if len(shape) == 4 and shape[1] == shape[2] else None
        self.image_size: int | None = side if isinstance(side, int) else None

    def run(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """Run the session on float32 images (N, S, S, 3) 0..255; return the three outputs as arrays."""
        values = self.session.run(list(HEADS), {self.input_name: np.ascontiguousarray(images, dtype=np.float32)})
        return dict(zip(HEADS, values, strict=True))


def load_model(path: str | Path):
    """Load a ``.keras`` model without compiling it (no cache); raise ModelLoadError naming the problem."""
    import keras

    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"model file {path} does not exist: train a run first or pick another run")
    try:
        model = keras.saving.load_model(path, compile=False)
    except Exception as exc:  # noqa: BLE001 - keras raises many types for a damaged archive
        raise ModelLoadError(f"model file {path} could not be loaded ({type(exc).__name__}: {exc})") from exc
    names = set(model.output_names) if hasattr(model, "output_names") else set()
    if not set(HEADS) <= names:
        raise ModelLoadError(f"model {path} has outputs {sorted(names)}, expected {list(HEADS)}")
    return model


def model_input_size(model) -> int | None:
    """Return the square side the model's input declares, or None when it accepts any size."""
    if isinstance(model, OnnxModel):
        return model.image_size
    shape = tuple(model.inputs[0].shape) if getattr(model, "inputs", None) else ()
    if len(shape) == 4 and shape[1] is not None and shape[1] == shape[2]:
        return int(shape[1])
    return None


def _predict_fn(model, image_size: int) -> Callable:
    """Return a graph function of ``model`` with a fixed (None, S, S, 3) float32 signature.

    ``model.predict`` builds a new data pipeline every call and a plain eager call re-runs Python
    per layer; one traced graph per model keeps single-photo latency low and memory flat.
    """
    import tensorflow as tf

    with _predict_fns_lock:
        fns = _predict_fns.get(model)
        if fns is None:
            fns = {}
            _predict_fns[model] = fns
        fn = fns.get(image_size)
        if fn is None:
            spec = [tf.TensorSpec([None, image_size, image_size, 3], tf.float32)]
            # A weak reference: a closure over the model would keep it (its WeakKeyDictionary key) alive forever.
            ref = weakref.ref(model)

            # Plain Keras calls need no AutoGraph conversion (and it cannot parse a lambda's source: it warns).
            @tf.autograph.experimental.do_not_convert
            def forward(x):
                return ref()(x, training=False)

            fn = tf.function(forward, input_signature=spec)
            fns[image_size] = fn
    return fn


def run_model(model, images_uint8: np.ndarray, image_size: int) -> dict[str, np.ndarray]:
    """Run a Keras model or an :class:`OnnxModel` on uint8 images (N, S, S, 3).

    Return age (N,) years, gender (N, 2) and race (N, 5) probabilities, float32.
    """
    images = np.asarray(images_uint8)
    if images.ndim != 4 or images.shape[1:] != (image_size, image_size, 3) or images.dtype != np.uint8:
        raise PredictionError(
            f"images must be uint8 of shape (N, {image_size}, {image_size}, 3), got {images.dtype} {images.shape}"
        )
    if isinstance(model, OnnxModel):
        out = model.run(images.astype(np.float32))
    else:
        out = _predict_fn(model, image_size)(images.astype(np.float32))
    return {
        "age": np.asarray(out["age"], dtype=np.float32).reshape(-1),
        "gender": np.asarray(out["gender"], dtype=np.float32),
        "race": np.asarray(out["race"], dtype=np.float32),
    }


# Test-time flip averaging in predict_arrays: measured in benchmarks/README.md (issue 9, "Quality levers").
PREDICT_FLIP = False


def predict_arrays(
    model, images_uint8: np.ndarray, batch_size: int = 256, *, flip: bool | None = None
) -> dict[str, np.ndarray]:
    """Predict on uint8 images (N, H, W, 3) (or one (H, W, 3)); return age (N,) years, gender (N, 2), race (N, 5).

    Images of another size than the model's input are resized the way the image cache resizes training images.
    ``flip`` (None: ``PREDICT_FLIP``) also predicts every image mirrored and returns the mean of the two passes
    (test-time augmentation; twice the compute).
    """
    images = np.asarray(images_uint8)
    if images.ndim == 3:
        images = images[None]
    if images.ndim != 4 or images.shape[-1] != 3:
        raise PredictionError(f"images must have shape (N, H, W, 3) RGB, got {images.shape}")
    if images.dtype != np.uint8:
        raise PredictionError(f"images must be uint8 0..255, got {images.dtype}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise PredictionError(f"batch_size must be a positive integer, got {batch_size!r}")
    flip = PREDICT_FLIP if flip is None else flip
    if not isinstance(flip, (bool, np.bool_)):
        raise PredictionError(f"flip must be True, False or None, got {flip!r}")
    size = model_input_size(model)
    if size is None:
        size = int(images.shape[1])
    if images.shape[0] == 0:
        return {
            "age": np.zeros((0,), np.float32),
            "gender": np.zeros((0, 2), np.float32),
            "race": np.zeros((0, 5), np.float32),
        }
    parts: dict[str, list[np.ndarray]] = {key: [] for key in HEADS}
    for start in range(0, images.shape[0], batch_size):
        batch = images[start : start + batch_size]
        if batch.shape[1:3] != (size, size):
            batch = np.stack([_resize(image, size) for image in batch])
        if flip:
            n = batch.shape[0]
            both = run_model(model, np.concatenate([batch, batch[:, :, ::-1]]), size)
            out = {key: (both[key][:n] + both[key][n:]) / 2.0 for key in HEADS}
        else:
            out = run_model(model, batch, size)
        for key in HEADS:
            parts[key].append(out[key])
    return {key: np.concatenate(parts[key], axis=0) for key in HEADS}


@functools.lru_cache(maxsize=4)
def _load_cached(path: str, mtime_ns: int, size: int, engine: str):
    if engine == "keras":
        return load_model(path)
    from utkface_core.inference.export import export_model

    # The conversion is checked against the Keras model before it is used (ExportError if it differs).
    return OnnxModel(export_model(path, "onnx").data)


def load_model_cached(path: str | Path, engine: str = "keras"):
    """Load a ``model.keras`` once per (path, modification time, size, engine); a re-saved file is reloaded.

    ``engine="onnx"`` returns an :class:`OnnxModel` converted from the file, for ``predict_image`` and friends.
    This is the one model cache of the core.
    """
    if engine not in ENGINES:
        raise PredictionError(f"engine must be one of {list(ENGINES)}, got {engine!r}")
    resolved = Path(path).expanduser().resolve()
    try:
        st = resolved.stat()
    except OSError:
        raise ModelLoadError(f"model file {resolved} does not exist: train a run first or pick another run") from None
    return _load_cached(str(resolved), st.st_mtime_ns, st.st_size, engine)


# --- images ------------------------------------------------------------------------------------


def _as_rgb(image: ImageSource) -> tuple[np.ndarray, str | None]:
    """Return the image as uint8 RGB (H, W, 3) and a label for messages; decode files and bytes."""
    if isinstance(image, np.ndarray):
        arr = image
        if arr.dtype != np.uint8:
            raise PredictionError(f"an image array must be uint8 RGB 0..255, got dtype {arr.dtype}")
        if arr.ndim == 2:
            arr = np.repeat(arr[:, :, None], 3, axis=2)
        elif arr.ndim == 3 and arr.shape[2] == 4:
            arr = arr[:, :, :3]
        if arr.ndim != 3 or arr.shape[2] != 3 or arr.shape[0] < 1 or arr.shape[1] < 1:
            raise PredictionError(f"an image array must have shape (H, W, 3), got {image.shape}")
        return np.ascontiguousarray(arr), None
    from utkface_core import limits
    from utkface_core.data.imagecache import decode_image

    label = os.fspath(image) if isinstance(image, (str, os.PathLike)) else getattr(image, "name", None)
    # Photos are downscaled while (JPEG) or right after decoding: faces and boxes refer to that image.
    rgb = decode_image(image, max_side=int(limits.get("max_photo_side")))
    return rgb, (str(label) if label is not None else None)


def _resize(image: np.ndarray, size: int) -> np.ndarray:
    if image.shape[0] == size and image.shape[1] == size:
        return image
    pil = Image.fromarray(image).resize((size, size), _RESAMPLE, reducing_gap=_REDUCING_GAP)
    return np.asarray(pil, dtype=np.uint8)


def _centre_square(image: np.ndarray) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    height, width = image.shape[:2]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    return image[top : top + side, left : left + side], (left, top, side, side)


def _age_band(age_plain: np.ndarray, age_flipped: np.ndarray, age_mae: float | None) -> tuple:
    age = (age_plain + age_flipped) / 2.0
    spread = np.abs(age_plain - age_flipped) / 2.0
    if age_mae is not None:
        half = np.sqrt(spread**2 + float(age_mae) ** 2)
    else:
        half = np.maximum(spread, _MIN_HALF_WIDTH)
    low = np.clip(age - half, 0.0, float(MAX_AGE))
    high = np.clip(age + half, 0.0, float(MAX_AGE))
    return age, low, high


def _check_args(image_size: object, age_mae: object) -> int:
    if (
        isinstance(image_size, bool)
        or not isinstance(image_size, (int, np.integer))
        or not 16 <= int(image_size) <= 1024
    ):
        raise PredictionError(
            f"image_size must be an integer from 16 to 1024 (the run's config image_size), got {image_size!r}"
        )
    if age_mae is not None:
        if (
            isinstance(age_mae, bool)
            or not isinstance(age_mae, (int, float, np.floating))
            or not np.isfinite(age_mae)
            or age_mae < 0
        ):
            raise PredictionError(
                f"age_mae must be a non-negative number of years (metrics.json age_mae) or None, got {age_mae!r}"
            )
    return int(image_size)


def predict_image(
    model,
    image: ImageSource,
    *,
    image_size: int,
    detect: bool = True,
    age_mae: float | None = None,
    min_confidence: float = 0.9,
    min_face_size: int = detection.DEFAULT_MIN_FACE_SIZE,
) -> ImageResult:
    """Detect, align and predict every face of one image (an RGB uint8 array, encoded bytes, a path or a file).

    With ``detect=False`` the whole image (centre-cropped to a square) is one already-cropped face.
    Each face is predicted twice, as is and mirrored (horizontal-flip test-time augmentation):
    ``age`` is the mean of the two, and the band ``[age_low, age_high]`` is ``age`` +- ``h`` where
    ``h = sqrt(d**2 + age_mae**2)``, ``d`` half the difference between the two predictions and
    ``age_mae`` the run's held-out mean absolute error (without it, ``h = max(d, 1)``). The band
    is a rough "typical error" range clipped to 0..116, not a calibrated confidence interval.
    Probabilities are the mean of the two passes.

    Raises ImageDecodeError (from utkface_core.data.imagecache) for an empty, corrupt, unsupported or
    over-size file, PredictionError for unusable arguments.
    """
    size = _check_args(image_size, age_mae)
    declared = model_input_size(model)
    if declared is not None and declared != size:
        raise PredictionError(
            f"image_size {size} does not match the model's input size {declared}; pass the run's config image_size"
        )
    rgb, label = _as_rgb(image)
    if detect:
        faces = detection.detect_faces(rgb, min_confidence=min_confidence, min_face_size=min_face_size)
        if not faces:
            return ImageResult(faces=[], image_rgb=rgb, message=NO_FACE_MESSAGE, source=label)
        crops = [detection.align_face(rgb, face, CROP_SIZE) for face in faces]
        boxes = [face.box for face in faces]
        confidences: list[float | None] = [face.confidence for face in faces]
    else:
        square, box = _centre_square(rgb)
        crops = [_resize(square, CROP_SIZE)]
        boxes = [box]
        confidences = [None]
    inputs = np.stack([_resize(crop, size) for crop in crops])
    out = run_model(model, np.concatenate([inputs, inputs[:, :, ::-1]]), size)
    n = len(crops)
    age, low, high = _age_band(out["age"][:n], out["age"][n:], age_mae)
    gender = (out["gender"][:n] + out["gender"][n:]) / 2.0
    race = (out["race"][:n] + out["race"][n:]) / 2.0
    predictions = [
        FacePrediction(
            index=i + 1,
            box=tuple(int(v) for v in boxes[i]),
            confidence=None if confidences[i] is None else float(confidences[i]),
            crop=crops[i],
            age=float(age[i]),
            age_low=float(low[i]),
            age_high=float(high[i]),
            gender_probs={name: float(p) for name, p in zip(GENDERS, gender[i], strict=False)},
            race_probs={name: float(p) for name, p in zip(RACES, race[i], strict=False)},
        )
        for i in range(n)
    ]
    return ImageResult(faces=predictions, image_rgb=rgb, message=None, source=label)


# --- presentation -------------------------------------------------------------------------------

_BOX_COLOURS = ((255, 64, 64), (64, 160, 255), (64, 200, 64), (255, 180, 0), (200, 80, 255))


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow built without FreeType only has the fixed bitmap font
        return ImageFont.load_default()


def draw_boxes(image_rgb: np.ndarray, faces: Sequence[FacePrediction | detection.Face]) -> np.ndarray:
    """Return a copy of the image with each face's box drawn and numbered 1, 2, ... (uint8, same shape)."""
    if not isinstance(image_rgb, np.ndarray):
        raise PredictionError("draw_boxes needs the decoded RGB image array (ImageResult.image_rgb)")
    rgb, _ = _as_rgb(image_rgb)
    pil = Image.fromarray(rgb.copy())
    draw = ImageDraw.Draw(pil)
    longest = max(rgb.shape[:2])
    width = max(2, round(longest / 250))
    font = _font(max(12, round(longest / 30)))
    for i, face in enumerate(faces):
        if not hasattr(face, "box"):
            raise PredictionError(f"faces must be FacePrediction or Face objects, got {type(face).__name__}")
        number = getattr(face, "index", i + 1)
        x, y, w, h = (int(v) for v in face.box)
        colour = _BOX_COLOURS[i % len(_BOX_COLOURS)]
        draw.rectangle([x, y, x + w - 1, y + h - 1], outline=colour, width=width)
        text = str(number)
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        tw, th = right - left, bottom - top
        ty = y - th - 2 * width if y - th - 2 * width >= 0 else y
        draw.rectangle([x, ty, x + tw + 2 * width, ty + th + 2 * width], fill=colour)
        draw.text((x + width - left, ty + width - top), text, fill=(255, 255, 255), font=font)
    return np.asarray(pil, dtype=np.uint8)


def to_json(results: ImageResult | Iterable[ImageResult]) -> list:
    """Return JSON-ready data for the CLI: per image a list of faces, each a dict with ``box`` [x, y, w, h],
    ``age``, ``age_low``, ``age_high``, ``confidence``, ``gender_probs`` and ``race_probs``."""
    items = [results] if isinstance(results, ImageResult) else list(results)
    out = []
    for result in items:
        if not isinstance(result, ImageResult):
            raise PredictionError(f"to_json takes ImageResult objects from predict_image, got {type(result).__name__}")
        out.append(
            [
                {
                    "face": face.index,
                    "box": [int(v) for v in face.box],
                    "confidence": face.confidence,
                    "age": round(face.age, 2),
                    "age_low": round(face.age_low, 2),
                    "age_high": round(face.age_high, 2),
                    "gender_probs": {k: round(v, 4) for k, v in face.gender_probs.items()},
                    "race_probs": {k: round(v, 4) for k, v in face.race_probs.items()},
                }
                for face in result.faces
            ]
        )
    return out


# --- batch ---------------------------------------------------------------------------------------


def result_columns() -> list[str]:
    """Return the columns of :func:`predict_files`' table, in order."""
    return (
        ["file", "face", "x", "y", "w", "h", "confidence", "age", "age_low", "age_high", "gender", "p_female", "race"]
        + [f"p_{name}" for name in RACES]
        + ["error"]
    )


def _is_archive(path: Path) -> bool:
    name = path.name.lower()
    return path.is_file() and name.endswith(ARCHIVE_SUFFIXES)


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.name.lower().endswith(IMAGE_SUFFIXES))


def _expand(paths_or_archive) -> tuple[list[tuple[str, Path]], list[dict]]:
    """Return (label, path) pairs to predict and error rows for archive members that were left out."""
    from utkface_core.data.archive import extract_archive

    if isinstance(paths_or_archive, (str, os.PathLike)):
        items = [paths_or_archive]
    elif isinstance(paths_or_archive, Iterable) and not isinstance(paths_or_archive, (bytes, bytearray)):
        items = list(paths_or_archive)
    else:
        raise PredictionError(
            "paths_or_archive must be a path (image, folder or .zip/.tar/.tar.gz archive) or a list of paths, "
            f"got {type(paths_or_archive).__name__}"
        )
    pairs: list[tuple[str, Path]] = []
    extra: list[dict] = []
    for item in items:
        if not isinstance(item, (str, os.PathLike)):
            raise PredictionError(f"paths must be file paths (str or Path), got {type(item).__name__}")
        path = Path(item)
        if path.is_dir():
            pairs.extend((str(p.relative_to(path)), p) for p in _image_files(path))
        elif _is_archive(path):
            try:
                extracted = extract_archive(path)
            except (ValueError, OSError) as exc:  # ArchiveError: a damaged or unsafe archive is one bad input
                extra.append({"file": str(path), "error": str(exc)})
                continue
            pairs.extend((str(p.relative_to(extracted.dest)), p) for p in _image_files(extracted.dest))
            for skipped in extracted.skipped:
                name = skipped.get("file") or skipped.get("name") or "?"
                extra.append({"file": str(name), "error": str(skipped.get("reason", "left out of the archive"))})
        else:
            pairs.append((str(path), path))
    return pairs, extra


def predict_files(
    model,
    paths_or_archive,
    *,
    image_size: int,
    detect: bool = True,
    age_mae: float | None = None,
    min_confidence: float = 0.9,
    min_face_size: int = detection.DEFAULT_MIN_FACE_SIZE,
    progress: Callable[[int, int], None] | None = None,
) -> pd.DataFrame:
    """Predict every image of a list of paths, a folder or an archive; return one row per face.

    Columns are :func:`result_columns`. A file that cannot be read, or where no face is found, gets
    one row with the face columns empty and ``error`` saying why; one bad file never stops the batch.
    ``progress(done, total)`` is called after each file.
    """
    _check_args(image_size, age_mae)
    pairs, rows = _expand(paths_or_archive)
    rows = [dict(row) for row in rows]
    total = len(pairs)
    for done, (label, path) in enumerate(pairs, start=1):
        try:
            result = predict_image(
                model,
                path,
                image_size=image_size,
                detect=detect,
                age_mae=age_mae,
                min_confidence=min_confidence,
                min_face_size=min_face_size,
            )
        except PredictionError:
            raise
        except ValueError as exc:  # ImageDecodeError and other bad-input errors of this one file
            rows.append({"file": label, "error": getattr(exc, "reason", None) or str(exc)})
        except OSError as exc:
            rows.append({"file": label, "error": f"cannot read file: {exc}"})
        else:
            if not result.faces:
                rows.append({"file": label, "error": result.message})
            for face in result.faces:
                x, y, w, h = face.box
                row = {
                    "file": label,
                    "face": face.index,
                    "x": x,
                    "y": y,
                    "w": w,
                    "h": h,
                    "confidence": face.confidence,
                    "age": face.age,
                    "age_low": face.age_low,
                    "age_high": face.age_high,
                    "gender": face.gender,
                    "p_female": face.gender_probs["female"],
                    "race": face.race,
                    "error": None,
                }
                row.update({f"p_{name}": face.race_probs[name] for name in RACES})
                rows.append(row)
        if progress is not None:
            progress(done, total)
    frame = pd.DataFrame(rows, columns=result_columns())
    for column in ("face", "x", "y", "w", "h"):
        frame[column] = frame[column].astype("Int64")
    return frame


# --- prediction cache (owned with the resource limits, see utkface_core/limits.py) -----------------

THUMBNAIL_SIDE = 640


def predict_uploads(
    model,
    uploads: Sequence[tuple[str, bytes]],
    folder: str | Path,
    *,
    image_size: int,
    detect: bool = True,
    age_mae: float | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> pd.DataFrame:
    """Write uploaded files (name, bytes) into ``folder`` (archives extracted there) and predict them all.

    Returns :func:`predict_files`' rows, labelled with the uploaded names; an archive that cannot be used, and
    each member it left out, get a row whose ``error`` says why. The caller removes ``folder`` afterwards.
    """
    from utkface_core.data.archive import extract_archive

    folder = Path(folder)
    items: list[Path] = []
    labels: dict[str, str] = {}
    extra: list[dict] = []
    for i, (name, data) in enumerate(uploads):
        if name.lower().endswith(ARCHIVE_SUFFIXES):
            try:
                extracted = extract_archive(data, dest_root=folder / f"archive-{i}")
            except ValueError as exc:
                extra.append({"file": name, "error": str(exc)})
                continue
            items.append(extracted.dest)
            extra += [
                {"file": f"{name}/{s.get('file') or s.get('name') or '?'}", "error": str(s.get("reason", "left out"))}
                for s in extracted.skipped
            ]
        else:
            # A numbered subfolder per upload keeps two uploads of the same name apart.
            target = folder / f"{i:04d}" / Path(name).name
            target.parent.mkdir(parents=True)
            target.write_bytes(data)
            items.append(target)
            labels[str(target)] = name
    frame = predict_files(model, items, image_size=image_size, detect=detect, age_mae=age_mae, progress=progress)
    frame["file"] = frame["file"].map(lambda f: labels.get(f, f))
    if extra:
        frame = pd.concat([frame, pd.DataFrame(extra, columns=frame.columns)], ignore_index=True)
    return frame


def thumbnail_result(result: ImageResult, side: int = THUMBNAIL_SIDE) -> ImageResult:
    """A copy of ``result`` whose ``image_rgb`` is at most ``side`` pixels long, boxes scaled to match.

    Face crops (200x200) are kept as they are; the full photo is not.
    """
    if isinstance(side, bool) or not isinstance(side, int) or side < 16:
        raise PredictionError(f"side must be an integer >= 16 pixels, got {side!r}")
    height, width = result.image_rgb.shape[:2]
    longest = max(height, width)
    if longest <= side:
        return ImageResult(
            faces=list(result.faces), image_rgb=result.image_rgb, message=result.message, source=result.source
        )
    scale = side / longest
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    thumb = Image.fromarray(result.image_rgb).resize(size, _RESAMPLE, reducing_gap=_REDUCING_GAP)
    thumb = np.asarray(thumb, dtype=np.uint8)
    faces = [
        dataclasses.replace(face, box=tuple(int(round(v * scale)) for v in face.box))  # type: ignore[arg-type]
        for face in result.faces
    ]
    return ImageResult(faces=faces, image_rgb=thumb, message=result.message, source=result.source)


def result_nbytes(result: ImageResult) -> int:
    """Bytes of the arrays a cached result holds (thumbnail and face crops)."""
    return int(result.image_rgb.nbytes) + sum(int(face.crop.nbytes) for face in result.faces)


class PredictionCache:
    """A process-wide LRU cache of prediction results with a byte budget and a time-to-live.

    It holds thumbnails and face crops (``thumbnail_result``), never full photos. Budget and TTL
    default to the ``predict_cache_mb`` and ``predict_cache_ttl_s`` limits, read at each insert.
    """

    def __init__(self, budget_bytes: int | None = None, ttl_s: float | None = None) -> None:
        self._budget = budget_bytes
        self._ttl = ttl_s
        self._items: collections.OrderedDict = collections.OrderedDict()  # key -> (result, nbytes, last used)
        self._lock = threading.Lock()
        self.nbytes = 0

    def budget_bytes(self) -> int:
        """The byte budget in force."""
        from utkface_core import limits

        return int(self._budget if self._budget is not None else limits.get("predict_cache_mb") * 1024 * 1024)

    def ttl_s(self) -> float:
        """Seconds an unused entry is kept."""
        from utkface_core import limits

        return float(self._ttl if self._ttl is not None else limits.get("predict_cache_ttl_s"))

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: Hashable) -> ImageResult | None:
        """The cached result for ``key`` (marking it used), or None."""
        now = time.monotonic()
        with self._lock:
            self._expire(now)
            item = self._items.get(key)
            if item is None:
                return None
            self._items[key] = (item[0], item[1], now)
            self._items.move_to_end(key)
            return item[0]

    def put(self, key: Hashable, result: ImageResult) -> ImageResult:
        """Store a thumbnail copy of ``result``; evict least recently used entries over the budget; return the copy."""
        small = thumbnail_result(result)
        size = result_nbytes(small)
        now = time.monotonic()
        budget = self.budget_bytes()
        with self._lock:
            self._expire(now)
            old = self._items.pop(key, None)
            if old is not None:
                self.nbytes -= old[1]
            if size <= budget:
                self._items[key] = (small, size, now)
                self.nbytes += size
            while self.nbytes > budget and self._items:
                _, (_, dropped, _) = self._items.popitem(last=False)
                self.nbytes -= dropped
        return small

    def clear(self) -> None:
        """Drop every entry."""
        with self._lock:
            self._items.clear()
            self.nbytes = 0

    def _expire(self, now: float) -> None:
        cutoff = now - self.ttl_s()
        for key in [k for k, (_, _, used) in self._items.items() if used < cutoff]:
            self.nbytes -= self._items.pop(key)[1]


PREDICTION_CACHE = PredictionCache()


def predict_bytes_cached(
    model,
    data: bytes,
    *,
    model_key: str,
    image_size: int,
    detect: bool = True,
    age_mae: float | None = None,
    cache: PredictionCache | None = None,
) -> ImageResult:
    """``predict_image`` on encoded bytes through the process-wide cache (keyed by model version, bytes and options).

    The result's ``image_rgb`` is a thumbnail (at most ``THUMBNAIL_SIDE`` pixels) with boxes scaled
    to it; the decoded photo itself is dropped as soon as the prediction is made.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise PredictionError(f"data must be the encoded image bytes, got {type(data).__name__}")
    cache = PREDICTION_CACHE if cache is None else cache
    key = (str(model_key), hashlib.sha256(data).hexdigest(), bool(detect), int(image_size), age_mae)
    hit = cache.get(key)
    if hit is not None:
        return hit
    result = predict_image(model, bytes(data), image_size=image_size, detect=detect, age_mae=age_mae)
    return cache.put(key, result)
