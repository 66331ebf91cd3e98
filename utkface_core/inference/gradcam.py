"""Grad-CAM heat maps: which parts of a face drove the age, gender or race prediction."""

from __future__ import annotations

import threading
import weakref

import numpy as np
from PIL import Image

from utkface_core.labels import HEADS


class GradCamError(ValueError):
    """A Grad-CAM argument is unusable, or the model has no convolutional feature map to explain."""


_grad_models: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_grad_models_lock = threading.Lock()


def last_conv_layer(model):
    """Return the last layer whose output is a 4-D feature map (N, H, W, C), i.e. the one before global pooling."""
    found = None
    for layer in model.layers[1:]:
        try:
            shape = layer.output.shape
        except (AttributeError, ValueError):
            continue
        if len(shape) == 4:
            found = layer
    if found is None:
        raise GradCamError(f"model {model.name!r} has no layer with a 4-D (N, H, W, C) output to explain")
    return found


def _grad_model(model, head: str):
    """Return (model -> [feature map, head score input], head layer), built once per model and head.

    For a softmax head the score is the pre-softmax logit, recomputed from the head's input: the
    gradient of a saturated probability is ~0 and would give an empty map for confident faces.
    """
    import keras

    with _grad_models_lock:
        per_model = _grad_models.setdefault(model, {})
        if head not in per_model:
            try:
                head_layer = model.get_layer(head)
            except ValueError as exc:
                raise GradCamError(f"model {model.name!r} has no {head!r} output layer") from exc
            conv = last_conv_layer(model)
            per_model[head] = (keras.Model(model.inputs, [conv.output, head_layer.input]), head_layer)
        return per_model[head]


def _is_softmax_dense(layer) -> bool:
    activation = getattr(layer, "activation", None)
    return hasattr(layer, "kernel") and getattr(activation, "__name__", "") == "softmax"


def _model_size(model) -> int:
    shape = tuple(model.inputs[0].shape)
    if len(shape) != 4 or shape[1] is None or shape[1] != shape[2]:
        raise GradCamError(f"model input shape {shape} is not a fixed square (N, S, S, 3)")
    return int(shape[1])


def _check_face(face_uint8: np.ndarray) -> np.ndarray:
    if not isinstance(face_uint8, np.ndarray) or face_uint8.ndim != 3 or face_uint8.shape[2] != 3:
        shape = getattr(face_uint8, "shape", type(face_uint8).__name__)
        raise GradCamError(f"face must be a uint8 RGB array (H, W, 3), got {shape}")
    if face_uint8.dtype != np.uint8:
        raise GradCamError(f"face must be uint8 0..255, got dtype {face_uint8.dtype}")
    if min(face_uint8.shape[:2]) < 1:
        raise GradCamError(f"face is empty (shape {face_uint8.shape})")
    return face_uint8


def _resize_float(values: np.ndarray, height: int, width: int) -> np.ndarray:
    if values.shape == (height, width):
        return values.astype(np.float32)
    image = Image.fromarray(values.astype(np.float32), mode="F")
    return np.asarray(image.resize((width, height), Image.Resampling.BILINEAR), dtype=np.float32)


def grad_cam(model, face_uint8: np.ndarray, head: str, class_index: int | None = None) -> np.ndarray:
    """Return a Grad-CAM heat map (H, W) in 0..1 for ``face_uint8`` (H, W, 3), at the face's own size.

    ``head`` is "age" (explains the predicted years), "gender" or "race" (explains the logit of
    ``class_index``, by default the predicted class). The map is taken at the last convolutional
    feature map; an all-zero map means no region pushed the score up.
    """
    import tensorflow as tf

    if head not in HEADS:
        raise GradCamError(f"head must be one of {list(HEADS)}, got {head!r}")
    face = _check_face(face_uint8)
    size = _model_size(model)
    grad_model, head_layer = _grad_model(model, head)
    if head == "age":
        if class_index not in (None, 0):
            raise GradCamError(f"class_index must be None for the age head (one output), got {class_index!r}")
    else:
        classes = int(head_layer.output.shape[-1])
        if class_index is not None and (
            isinstance(class_index, bool)
            or not isinstance(class_index, (int, np.integer))
            or not 0 <= class_index < classes
        ):
            raise GradCamError(
                f"class_index for {head!r} must be an integer from 0 to {classes - 1}, got {class_index!r}"
            )
    resized = (
        face
        if face.shape[:2] == (size, size)
        else np.asarray(Image.fromarray(face).resize((size, size), Image.Resampling.BILINEAR, reducing_gap=3.0))
    )
    x = tf.convert_to_tensor(resized[None].astype(np.float32))
    with tf.GradientTape() as tape:
        features, head_input = grad_model(x, training=False)
        if head == "age":
            score = head_layer(head_input)[:, 0]
        else:
            if _is_softmax_dense(head_layer):
                logits = tf.matmul(head_input, head_layer.kernel)
                if head_layer.use_bias:
                    logits = logits + head_layer.bias
            else:
                logits = head_layer(head_input)
            if class_index is None:
                class_index = int(tf.argmax(logits[0]))
            score = logits[:, int(class_index)]
    grads = tape.gradient(score, features)
    if grads is None:
        raise GradCamError(f"the {head!r} output does not depend on layer {last_conv_layer(model).name!r}")
    weights = tf.reduce_mean(grads, axis=(1, 2))  # one weight per channel
    cam = tf.nn.relu(tf.reduce_sum(features * weights[:, None, None, :], axis=-1))[0].numpy()
    cam = _resize_float(cam, face.shape[0], face.shape[1])
    top = float(cam.max())
    if not np.isfinite(top) or top <= 0:
        return np.zeros(face.shape[:2], dtype=np.float32)
    return np.clip(cam / top, 0.0, 1.0).astype(np.float32)


def _jet(values: np.ndarray) -> np.ndarray:
    """Map 0..1 to a blue-cyan-yellow-red palette (uint8 RGB)."""
    v = np.clip(values, 0.0, 1.0)[..., None]
    red = np.clip(1.5 - np.abs(4 * v - 3), 0, 1)
    green = np.clip(1.5 - np.abs(4 * v - 2), 0, 1)
    blue = np.clip(1.5 - np.abs(4 * v - 1), 0, 1)
    return (np.concatenate([red, green, blue], axis=-1) * 255).astype(np.uint8)


def overlay_heatmap(face: np.ndarray, heat: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """Return the face (H, W, 3) uint8 blended with the coloured heat map (resized to the face if needed)."""
    face = _check_face(face)
    heat = np.asarray(heat, dtype=np.float32)
    if heat.ndim != 2:
        raise GradCamError(f"heat must be a 2-D map (H, W) from grad_cam, got shape {heat.shape}")
    if not 0.0 <= alpha <= 1.0:
        raise GradCamError(f"alpha must be between 0 and 1, got {alpha}")
    heat = _resize_float(np.nan_to_num(heat), face.shape[0], face.shape[1])
    colour = _jet(heat).astype(np.float32)
    blended = (1.0 - alpha) * face.astype(np.float32) + alpha * colour
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)
