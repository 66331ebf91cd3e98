"""Prediction of photos and files, Grad-CAM and model export (prediction, gradcam, export modules)."""

from __future__ import annotations

import io
import json
import os
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from tests.models import tiny_model
from utkface_core.data.imagecache import ImageDecodeError
from utkface_core.inference import export, gradcam, prediction
from utkface_core.inference.prediction import NO_FACE_MESSAGE, PredictionError, predict_files, predict_image
from utkface_core.labels import GENDERS, RACES

SIZE = 32


@pytest.fixture(scope="module")
def model():
    return tiny_model()


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory, model) -> Path:
    path = tmp_path_factory.mktemp("run") / "model.keras"
    model.save(path)
    return path


def face_like(seed: int = 0, size: int = 120) -> np.ndarray:
    """A smooth seeded image (not a real face): stands in for an already-cropped face."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize((size, size), Image.BILINEAR))


def png_bytes(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "PNG")
    return buffer.getvalue()


# --- predict_image ---------------------------------------------------------------------------


def test_no_face_gives_empty_faces_and_the_advice(model):
    result = predict_image(model, np.full((240, 320, 3), 90, np.uint8), image_size=SIZE)
    assert result.faces == []
    assert result.message == NO_FACE_MESSAGE
    assert "turn off detection" in result.message
    assert result.image_rgb.shape == (240, 320, 3)


def test_detect_off_treats_the_whole_image_as_one_face(model):
    image = face_like(size=150)
    result = predict_image(model, image, image_size=SIZE, detect=False)
    assert result.message is None and len(result.faces) == 1
    face = result.faces[0]
    assert face.index == 1 and face.box == (0, 0, 150, 150) and face.confidence is None
    assert face.crop.shape == (prediction.CROP_SIZE, prediction.CROP_SIZE, 3) and face.crop.dtype == np.uint8
    assert sum(face.gender_probs.values()) == pytest.approx(1.0, abs=1e-4)
    assert sum(face.race_probs.values()) == pytest.approx(1.0, abs=1e-4)
    assert list(face.race_probs) == list(RACES) and list(face.gender_probs) == list(GENDERS)
    assert face.age_low <= face.age <= face.age_high


def test_detect_off_centre_crops_a_wide_image(model):
    result = predict_image(model, face_like(size=100)[:60], image_size=SIZE, detect=False)
    assert result.faces[0].box == (20, 0, 60, 60)


def test_age_is_the_mean_of_plain_and_mirrored_passes(model):
    image = face_like(seed=3, size=prediction.CROP_SIZE)
    result = predict_image(model, image, image_size=SIZE, detect=False)
    small = prediction._resize(image, SIZE)
    out = prediction.run_model(model, np.stack([small, small[:, ::-1]]), SIZE)
    assert result.faces[0].age == pytest.approx(float(out["age"].mean()), abs=1e-3)
    spread = abs(float(out["age"][0] - out["age"][1])) / 2
    assert result.faces[0].age_high - result.faces[0].age == pytest.approx(max(spread, 1.0), abs=1e-3)


def test_held_out_mae_widens_the_age_band(model):
    image = face_like(seed=4)
    plain = predict_image(model, image, image_size=SIZE, detect=False).faces[0]
    wide = predict_image(model, image, image_size=SIZE, detect=False, age_mae=7.5).faces[0]
    assert wide.age == pytest.approx(plain.age)
    assert wide.age_high - wide.age >= 7.5 - 1e-4
    assert wide.age - wide.age_low >= min(7.5, wide.age) - 1e-4


def test_age_band_is_clipped_to_valid_ages():
    age, low, high = prediction._age_band(np.array([2.0]), np.array([4.0]), 10.0)
    assert low[0] == 0.0 and high[0] == pytest.approx(3.0 + np.sqrt(1 + 100))


def test_accepts_encoded_bytes_and_paths(model, tmp_path):
    image = face_like(seed=5)
    path = tmp_path / "face.png"
    path.write_bytes(png_bytes(image))
    from_bytes = predict_image(model, png_bytes(image), image_size=SIZE, detect=False)
    from_path = predict_image(model, path, image_size=SIZE, detect=False)
    assert from_bytes.faces[0].age == pytest.approx(from_path.faces[0].age)
    assert from_path.source == str(path)


def test_empty_upload_is_a_clear_decode_error(model):
    with pytest.raises(ImageDecodeError, match="empty"):
        predict_image(model, b"", image_size=SIZE)


def test_corrupt_upload_is_a_clear_decode_error(model):
    data = png_bytes(face_like())[:60]
    with pytest.raises(ImageDecodeError, match="corrupt|truncated|not an image"):
        predict_image(model, data, image_size=SIZE)


def test_unsupported_upload_is_a_clear_decode_error(model):
    with pytest.raises(ImageDecodeError, match="not an image"):
        predict_image(model, b"%PDF-1.4 this is a document", image_size=SIZE)


def test_oversize_upload_is_a_clear_decode_error(model, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(ImageDecodeError, match="too large"):
        predict_image(model, png_bytes(face_like(size=64)), image_size=SIZE)


@pytest.mark.parametrize(
    "image, match",
    [(np.zeros((40, 40, 3), np.float32), "uint8"), (np.zeros((40, 40, 2), np.uint8), "shape")],
    ids=["float", "two-channel"],
)
def test_bad_arrays_are_rejected(model, image, match):
    with pytest.raises(PredictionError, match=match):
        predict_image(model, image, image_size=SIZE, detect=False)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"image_size": 64}, "does not match"),
        ({"image_size": "32"}, "image_size"),
        ({"image_size": SIZE, "age_mae": -1.0}, "age_mae"),
    ],
)
def test_bad_arguments_are_rejected(model, kwargs, match):
    with pytest.raises(PredictionError, match=match):
        predict_image(model, face_like(), detect=False, **kwargs)


def test_repeated_predictions_reuse_one_graph(model):
    image = face_like(seed=6)
    for _ in range(5):
        predict_image(model, image, image_size=SIZE, detect=False)
    assert prediction._predict_fn(model, SIZE).experimental_get_tracing_count() == 1


@pytest.mark.realdata
def test_predicts_a_real_face_in_a_photo(model):
    root = os.environ.get("UTKFACE_DIR")
    if not root or not Path(root).is_dir():
        pytest.skip("UTKFACE_DIR is not set: MTCNN needs a real face photo, so this check runs only with UTKFace")
    files = sorted(p for p in Path(root).iterdir() if p.name.startswith("34_0_0_20170117190336724"))
    if not files:
        pytest.skip("the reference image is not in UTKFACE_DIR")
    photo = np.full((480, 640, 3), 100, np.uint8)
    photo[100:300, 250:450] = np.asarray(Image.open(files[0]).convert("RGB"))
    result = predict_image(model, photo, image_size=SIZE)
    assert len(result.faces) == 1 and result.message is None
    x, y, w, h = result.faces[0].box
    assert 200 <= x + w / 2 <= 500 and 50 <= y + h / 2 <= 350
    assert result.faces[0].confidence >= 0.9


# --- draw_boxes, to_json ---------------------------------------------------------------------


def test_draw_boxes_keeps_shape_and_marks_the_box(model):
    image = np.full((120, 160, 3), 30, np.uint8)
    result = predict_image(model, image, image_size=SIZE, detect=False)
    drawn = prediction.draw_boxes(image, result.faces)
    assert drawn.shape == image.shape and drawn.dtype == np.uint8
    assert (drawn[60, 20] != 30).any()  # left edge of the centre square box (x=20)
    assert (image == 30).all()  # the input is not drawn on


def test_draw_boxes_rejects_non_faces():
    with pytest.raises(PredictionError, match="Face"):
        prediction.draw_boxes(np.zeros((10, 10, 3), np.uint8), [(0, 0, 5, 5)])


def test_to_json_contract(model):
    results = [
        predict_image(model, face_like(seed=7), image_size=SIZE, detect=False),
        predict_image(model, np.zeros((50, 50, 3), np.uint8), image_size=SIZE),
    ]
    data = prediction.to_json(results)
    assert json.loads(json.dumps(data)) == data
    assert len(data) == 2 and data[1] == []
    face = data[0][0]
    assert {"box", "age", "gender_probs", "race_probs"} <= set(face)
    assert len(face["box"]) == 4 and set(face["gender_probs"]) == set(GENDERS) and set(face["race_probs"]) == set(RACES)


def test_to_json_rejects_other_objects():
    with pytest.raises(PredictionError, match="ImageResult"):
        prediction.to_json([{"faces": []}])


# --- predict_files -----------------------------------------------------------------------------


def test_predict_files_reports_a_bad_file_and_goes_on(model, tmp_path):
    good = tmp_path / "good.png"
    good.write_bytes(png_bytes(face_like(seed=8)))
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not really a jpeg")
    calls = []
    frame = predict_files(model, [bad, good], image_size=SIZE, detect=False, progress=lambda d, t: calls.append((d, t)))
    assert list(frame.columns) == prediction.result_columns()
    assert len(frame) == 2 and calls[-1] == (2, 2)
    bad_row = frame[frame["file"] == str(bad)].iloc[0]
    assert "not an image" in bad_row["error"] and pd.isna(bad_row["age"])
    good_row = frame[frame["file"] == str(good)].iloc[0]
    assert pd.isna(good_row["error"]) and good_row["face"] == 1
    assert good_row["gender"] in GENDERS and good_row["race"] in RACES
    assert good_row[[f"p_{r}" for r in RACES]].sum() == pytest.approx(1.0, abs=1e-4)


def test_predict_files_notes_images_without_a_face(model, tmp_path):
    path = tmp_path / "blank.png"
    path.write_bytes(png_bytes(np.full((80, 80, 3), 200, np.uint8)))
    frame = predict_files(model, [path], image_size=SIZE)
    assert len(frame) == 1 and frame.iloc[0]["error"] == NO_FACE_MESSAGE


def test_predict_files_reads_an_archive(model, tmp_path, app_dir):
    archive = tmp_path / "faces.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("a/one.png", png_bytes(face_like(seed=9)))
        zf.writestr("a/two.png", png_bytes(face_like(seed=10)))
        zf.writestr("a/readme.txt", "hello")
    frame = predict_files(model, archive, image_size=SIZE, detect=False)
    assert sorted(frame["file"]) == ["a/one.png", "a/readme.txt", "a/two.png"]
    assert frame.set_index("file").loc["a/readme.txt", "error"].startswith("not an image")
    assert frame["age"].notna().sum() == 2


def test_predict_files_reports_a_damaged_archive(model, tmp_path, app_dir):
    archive = tmp_path / "broken.zip"
    archive.write_bytes(b"PK\x03\x04 definitely not a whole zip")
    frame = predict_files(model, [archive], image_size=SIZE)
    assert len(frame) == 1 and frame.iloc[0]["file"] == str(archive)
    assert frame.iloc[0]["error"]


def test_predict_uploads_labels_rows_with_the_uploaded_names(model, tmp_path, app_dir):
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("in/one.png", png_bytes(face_like(seed=11)))
        zf.writestr("in/notes.txt", "hello")
    uploads = [
        ("face.png", png_bytes(face_like(seed=12))),
        ("face.png", png_bytes(face_like(seed=13))),  # the same name twice stays two files
        ("set.zip", archive.getvalue()),
        ("broken.zip", b"PK\x03\x04 not a whole zip"),
        ("bad.jpg", b"not a jpeg"),
    ]
    calls = []
    frame = prediction.predict_uploads(
        model, uploads, tmp_path / "up", image_size=SIZE, detect=False, progress=lambda d, t: calls.append((d, t))
    )
    assert list(frame.columns) == prediction.result_columns()
    rows = frame.set_index("file")
    assert list(frame["file"]).count("face.png") == 2 and frame[frame["file"] == "face.png"]["age"].notna().all()
    assert rows.loc["in/one.png", "error"] is None or pd.isna(rows.loc["in/one.png", "error"])
    notes = frame[frame["file"].str.endswith("notes.txt")]
    assert len(notes) == 1 and notes.iloc[0]["error"]  # left out of the archive, and said so
    assert rows.loc["broken.zip", "error"] and "not an image" in rows.loc["bad.jpg", "error"]
    assert calls[-1] == (4, 4)  # 2 photos, the bad file and the archive's one image are read


def test_predict_files_rejects_bytes(model):
    with pytest.raises(PredictionError, match="paths_or_archive"):
        predict_files(model, b"abc", image_size=SIZE)


def test_load_model_cached_reloads_after_the_file_changes(model, tmp_path):
    path = tmp_path / "model.keras"
    model.save(path)
    first = prediction.load_model_cached(path)
    assert prediction.load_model_cached(str(path)) is first
    model.save(path)
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    assert prediction.load_model_cached(path) is not first


def test_load_model_cached_names_a_missing_file(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        prediction.load_model_cached(tmp_path / "missing.keras")


# --- Grad-CAM -----------------------------------------------------------------------------------


@pytest.mark.parametrize("head", ["age", "gender", "race"])
def test_grad_cam_is_a_unit_range_map_at_face_size(model, head):
    face = face_like(seed=11, size=prediction.CROP_SIZE)
    heat = gradcam.grad_cam(model, face, head)
    assert heat.shape == face.shape[:2] and heat.dtype == np.float32
    assert heat.min() >= 0.0 and heat.max() <= 1.0
    assert heat.max() == pytest.approx(1.0) or heat.max() == 0.0


def test_grad_cam_explains_a_chosen_class(model):
    face = face_like(seed=12, size=SIZE)
    maps = [gradcam.grad_cam(model, face, "race", class_index=i) for i in range(len(RACES))]
    assert all(m.shape == (SIZE, SIZE) for m in maps)
    assert not all(np.allclose(maps[0], m) for m in maps[1:])


def test_grad_cam_uses_the_last_feature_map(model):
    assert gradcam.last_conv_layer(model).name == "conv2"


@pytest.mark.parametrize(
    "head, class_index, match",
    [("mood", None, "head"), ("gender", 2, "class_index"), ("age", 1, "class_index")],
)
def test_grad_cam_rejects_bad_arguments(model, head, class_index, match):
    with pytest.raises(gradcam.GradCamError, match=match):
        gradcam.grad_cam(model, face_like(), head, class_index=class_index)


def test_grad_cam_rejects_a_float_face(model):
    with pytest.raises(gradcam.GradCamError, match="uint8"):
        gradcam.grad_cam(model, face_like().astype(np.float32), "age")


def test_overlay_heatmap_blends_at_face_size():
    face = np.zeros((40, 40, 3), np.uint8)
    heat = np.zeros((10, 10), np.float32)
    heat[:5] = 1.0
    overlay = gradcam.overlay_heatmap(face, heat)
    assert overlay.shape == face.shape and overlay.dtype == np.uint8
    assert overlay[0, 0, 0] > overlay[39, 0, 0]  # hot rows red, cold rows not


# --- export -------------------------------------------------------------------------------------


def test_tflite_export_matches_keras(model, saved_model):
    data = export.export_tflite(saved_model)
    assert isinstance(data, bytes) and len(data) > 1000
    images = np.stack([face_like(seed=s, size=SIZE) for s in (13, 14)]).astype(np.float32)
    got = export.run_tflite(data, images)
    expected = model(images, training=False)
    for key in ("age", "gender", "race"):
        np.testing.assert_allclose(got[key], np.asarray(expected[key]), atol=export.TOLERANCE[key])


def test_model_bytes_are_the_saved_file(saved_model):
    assert export.model_bytes(saved_model) == saved_model.read_bytes()


def test_export_names_a_missing_or_damaged_model(tmp_path):
    with pytest.raises(export.ExportError, match="does not exist"):
        export.export_tflite(tmp_path / "missing.keras")
    damaged = tmp_path / "model.keras"
    damaged.write_bytes(b"garbage")
    with pytest.raises(export.ExportError, match="not a Keras"):
        export.model_bytes(damaged)


# --- issue 8: the bounded prediction cache and downscaled photos ------------------------------------


def jpeg_bytes(image: np.ndarray, quality: int = 85) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def test_big_photo_is_downscaled_before_prediction(model):
    photo = np.asarray(Image.fromarray(face_like(3, 64)).resize((4000, 3000)))
    result = predict_image(model, jpeg_bytes(photo), image_size=SIZE, detect=False)
    assert max(result.image_rgb.shape[:2]) <= 1600
    assert result.faces[0].box == (200, 0, 1200, 1200)


def test_cached_prediction_keeps_a_thumbnail_and_crops_not_the_photo(model):
    cache = prediction.PredictionCache(budget_bytes=10 * 1024**2, ttl_s=60)
    data = jpeg_bytes(np.asarray(Image.fromarray(face_like(4, 64)).resize((1500, 1000))))
    result = prediction.predict_bytes_cached(model, data, model_key="m:1", image_size=SIZE, detect=False, cache=cache)
    assert result.image_rgb.shape == (427, 640, 3)
    assert result.faces[0].box == (107, 0, 427, 427)  # scaled with the thumbnail
    assert result.faces[0].crop.shape == (prediction.CROP_SIZE, prediction.CROP_SIZE, 3)
    assert cache.nbytes == result.image_rgb.nbytes + result.faces[0].crop.nbytes
    again = prediction.predict_bytes_cached(model, data, model_key="m:1", image_size=SIZE, detect=False, cache=cache)
    assert again is result and len(cache) == 1
    other = prediction.predict_bytes_cached(model, data, model_key="m:2", image_size=SIZE, detect=False, cache=cache)
    assert other is not result and len(cache) == 2


def test_prediction_cache_evicts_least_recently_used_over_its_budget(model):
    one = prediction.thumbnail_result(predict_image(model, face_like(1, 300), image_size=SIZE, detect=False))
    size = prediction.result_nbytes(one)
    cache = prediction.PredictionCache(budget_bytes=2 * size + 10, ttl_s=60)
    for key in ("a", "b"):
        cache.put(key, one)
    assert cache.get("a") is not None  # "b" is now the least recently used
    cache.put("c", one)
    assert cache.get("b") is None and cache.get("a") is not None and cache.get("c") is not None
    assert cache.nbytes == 2 * size <= cache.budget_bytes()


def test_prediction_cache_drops_entries_after_their_ttl(model, monkeypatch):
    one = predict_image(model, face_like(1), image_size=SIZE, detect=False)
    cache = prediction.PredictionCache(budget_bytes=10**8, ttl_s=5)
    clock = [1000.0]
    monkeypatch.setattr(prediction.time, "monotonic", lambda: clock[0])
    cache.put("a", one)
    clock[0] += 4
    assert cache.get("a") is not None
    clock[0] += 6
    assert cache.get("a") is None and cache.nbytes == 0


def test_prediction_cache_budget_comes_from_the_limit(monkeypatch):
    monkeypatch.setenv("UTKFACE_PREDICT_CACHE_MB", "3")
    monkeypatch.setenv("UTKFACE_PREDICT_CACHE_TTL_S", "9")
    cache = prediction.PredictionCache()
    assert cache.budget_bytes() == 3 * 1024**2 and cache.ttl_s() == 9


def test_six_8000x6000_photos_leave_a_small_cache(model, tmp_path):
    from tests.hostile import write_big_jpeg

    data = write_big_jpeg(tmp_path / "big.jpg").read_bytes()
    cache = prediction.PredictionCache(budget_bytes=256 * 1024**2, ttl_s=60)
    for i in range(6):
        variant = data[:-2] + bytes([i]) + data[-2:]  # six different files, same picture
        prediction.predict_bytes_cached(model, variant, model_key="m", image_size=SIZE, detect=False, cache=cache)
    assert len(cache) == 6 and cache.nbytes < 6 * 2 * 1024**2  # thumbnails + crops, ~1 MiB each


def test_predict_bytes_cached_rejects_non_bytes(model):
    with pytest.raises(PredictionError, match="encoded image bytes"):
        prediction.predict_bytes_cached(model, face_like(1), model_key="m", image_size=SIZE)
