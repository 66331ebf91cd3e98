"""Face detection and UTKFace-style alignment (utkface_core.inference.detection)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from utkface_core.inference import detection
from utkface_core.inference.detection import Face, FaceInputError, align_face, detect_faces

# Frontal UTKFace images the detector finds at >= 0.99 confidence (checked by hand once).
REAL_FACES = (
    "34_0_0_20170117190336724.jpg.chip.jpg",
    "40_0_3_20170104201852330.jpg.chip.jpg",
    "15_0_0_20170104011728017.jpg.chip.jpg",
)


def real_face(index: int = 0) -> np.ndarray:
    """Return a real 200x200 UTKFace image, or skip when UTKFACE_DIR is not set."""
    root = os.environ.get("UTKFACE_DIR")
    if not root or not Path(root).is_dir():
        pytest.skip("UTKFACE_DIR is not set: MTCNN needs a real face photo, so this check runs only with UTKFace")
    path = Path(root) / REAL_FACES[index]
    if not path.is_file():
        pytest.skip(f"{path.name} is not in UTKFACE_DIR={root}")
    return np.asarray(Image.open(path).convert("RGB"))


def paste(canvas_hw: tuple[int, int], faces: list[tuple[np.ndarray, int, int]], seed: int = 0) -> np.ndarray:
    """Return a noisy grey canvas with each (image, x, y) pasted at its place."""
    rng = np.random.default_rng(seed)
    canvas = np.clip(rng.normal(110, 12, (*canvas_hw, 3)), 0, 255).astype(np.uint8)
    for image, x, y in faces:
        canvas[y : y + image.shape[0], x : x + image.shape[1]] = image
    return canvas


def iou(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    w = max(0.0, min(ax + aw, bx + bw) - max(ax, bx))
    h = max(0.0, min(ay + ah, by + bh) - max(ay, by))
    inter = w * h
    return inter / (aw * ah + bw * bh - inter)


def test_weights_come_from_the_installed_mtcnn_package():
    import mtcnn

    package = Path(mtcnn.__file__).resolve().parent
    for name in ("pnet.lz4", "rnet.lz4", "onet.lz4"):
        path = Path(detection._weights_path(name))
        assert path.is_absolute() and path.is_file()
        assert package in path.resolve().parents


def test_blank_image_has_no_face():
    assert detect_faces(np.full((240, 320, 3), 128, np.uint8)) == []


def test_noise_image_has_no_face():
    noise = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    assert detect_faces(noise) == []


def test_image_smaller_than_min_face_size_has_no_face():
    assert detect_faces(np.zeros((20, 20, 3), np.uint8), min_face_size=32) == []


@pytest.mark.parametrize(
    "image",
    [np.zeros((64, 64), np.uint8), np.zeros((64, 64, 4), np.uint8), np.zeros((0, 64, 3), np.uint8), [[1, 2, 3]]],
    ids=["grey", "rgba", "empty", "list"],
)
def test_detect_faces_rejects_non_rgb_input(image):
    with pytest.raises(FaceInputError, match="image_rgb"):
        detect_faces(image)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"min_confidence": 1.5}, "min_confidence"),
        ({"min_face_size": 5}, "min_face_size"),
        ({"max_side": 10}, "max_side"),
    ],
)
def test_detect_faces_rejects_bad_settings(kwargs, match):
    with pytest.raises(FaceInputError, match=match):
        detect_faces(np.zeros((64, 64, 3), np.uint8), **kwargs)


def test_downscale_keeps_small_images_and_shrinks_large_ones():
    small = np.zeros((100, 80, 3), np.uint8)
    assert detection.downscale(small, 640)[1] == 1.0
    large, factor = detection.downscale(np.zeros((1000, 2000, 3), np.uint8), 640)
    assert large.shape == (320, 640, 3) and factor == pytest.approx(0.32)


def _template_face(matrix: np.ndarray) -> Face:
    """A Face whose landmarks are the UTKFace template moved by the 2x3 ``matrix``."""
    points = detection._TEMPLATE_POINTS @ matrix[:, :2].T + matrix[:, 2]
    x1, y1 = points.min(axis=0)
    x2, y2 = points.max(axis=0)
    return Face((int(x1), int(y1), int(x2 - x1), int(y2 - y1)), 0.99, *[tuple(p) for p in points])


def test_align_face_inverts_a_known_rotation_and_scale():
    rng = np.random.default_rng(1)
    # A smooth random pattern stands in for a 200x200 face crop.
    pattern = np.asarray(
        Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).resize((200, 200), Image.BILINEAR)
    )
    angle, scale, shift = np.radians(12.0), 1.4, np.array([230.0, 120.0])
    rot = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    matrix = np.hstack([rot, shift[:, None]])
    inverse = np.linalg.inv(np.vstack([matrix, [0, 0, 1]]))
    photo = np.asarray(
        Image.fromarray(pattern).transform((640, 480), Image.AFFINE, tuple(inverse[:2].ravel()), Image.BILINEAR)
    )
    crop = align_face(photo, _template_face(matrix), size=200)
    assert crop.shape == (200, 200, 3) and crop.dtype == np.uint8
    inner = (slice(10, 190), slice(10, 190))  # borders pick up the resampling of the edge
    error = np.abs(crop[inner].astype(float) - pattern[inner].astype(float)).mean()
    assert error < 4.0


def test_align_face_levels_the_eyes():
    face = _template_face(np.array([[np.cos(0.3), -np.sin(0.3), 50.0], [np.sin(0.3), np.cos(0.3), 10.0]]))
    matrix = detection.alignment_matrix(face, size=100)
    eyes = np.array([face.left_eye, face.right_eye]) @ matrix[:, :2].T + matrix[:, 2]
    assert eyes[0, 1] == pytest.approx(eyes[1, 1], abs=1e-6)
    assert eyes[0, 0] < eyes[1, 0]


def test_align_face_rejects_a_face_without_distinct_eyes():
    point = (10.0, 10.0)
    face = Face((0, 0, 20, 20), 0.99, point, point, point, point, point)
    with pytest.raises(FaceInputError, match="eyes"):
        align_face(np.zeros((50, 50, 3), np.uint8), face)


def test_align_face_rejects_a_box_tuple():
    with pytest.raises(FaceInputError, match="Face"):
        align_face(np.zeros((50, 50, 3), np.uint8), (0, 0, 10, 10))


@pytest.mark.realdata
def test_detects_a_real_face_where_it_was_pasted():
    face = real_face(0)
    photo = paste((480, 640), [(face, 300, 150)])
    found = detect_faces(photo)
    assert len(found) == 1
    assert iou(found[0].box, (300, 150, 200, 200)) > 0.5
    assert found[0].confidence >= 0.9
    assert found[0].left_eye[0] < found[0].right_eye[0]


@pytest.mark.realdata
def test_detects_two_faces_left_to_right():
    photo = paste((360, 640), [(real_face(1), 60, 80), (real_face(2), 380, 80)])
    found = detect_faces(photo)
    assert len(found) == 2
    assert iou(found[0].box, (60, 80, 200, 200)) > 0.5
    assert iou(found[1].box, (380, 80, 200, 200)) > 0.5


@pytest.mark.realdata
def test_boxes_of_a_downscaled_photo_are_in_original_pixels():
    face = np.asarray(Image.fromarray(real_face(0)).resize((600, 600), Image.BILINEAR))
    photo = paste((1500, 2000), [(face, 900, 500)])
    found = detect_faces(photo, max_side=640)
    assert len(found) == 1
    assert iou(found[0].box, (900, 500, 600, 600)) > 0.5


@pytest.mark.realdata
def test_min_face_size_above_mtcnn_default_still_finds_faces():
    # mtcnn 1.0 itself returns nothing for min_face_size > 20 (pyramid levels below 12 px).
    found = detect_faces(paste((480, 640), [(real_face(0), 200, 100)]), min_face_size=60)
    assert len(found) == 1


@pytest.mark.realdata
def test_align_face_reproduces_a_rotated_utkface_crop():
    original = real_face(0)
    angle, scale = np.radians(-10.0), 1.2
    rot = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    matrix = np.hstack([rot, (np.array([320.0, 240.0]) - rot @ np.array([100.0, 100.0]))[:, None]])
    inverse = np.linalg.inv(np.vstack([matrix, [0, 0, 1]]))
    photo = np.asarray(
        Image.fromarray(original).transform(
            (640, 480), Image.AFFINE, tuple(inverse[:2].ravel()), Image.BILINEAR, fillcolor=(110, 110, 110)
        )
    )
    found = detect_faces(photo)
    assert len(found) == 1
    crop = align_face(photo, found[0])
    corr = np.corrcoef(crop.astype(float).ravel(), original.astype(float).ravel())[0, 1]
    assert corr > 0.8
