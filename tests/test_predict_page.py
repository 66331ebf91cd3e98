"""AppTest checks of the Predict page: uploads, bad files, no face, Grad-CAM, batch CSV, model downloads."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from pages.shared import upload_problem
from tests.test_cli_eval_predict import make_tiny_run
from tests.waits import wait_until
from utkface_core.inference import prediction
from utkface_core.jobs import registry

APP = "../streamlit_app.py"


@pytest.fixture(scope="module")
def runs_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("predict-runs")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("UTKFACE_RUNS_DIR", str(root))
        make_tiny_run(root, "run-p")
        yield root


def png(seed: int = 0, size: tuple[int, int] = (90, 70)) -> bytes:
    rng = np.random.default_rng(seed)
    image = Image.fromarray(rng.integers(0, 256, (5, 5, 3), dtype=np.uint8)).resize(size, Image.BILINEAR)
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def predict_page(**state) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    for key, value in state.items():
        at.session_state[key] = value
    at.switch_page("pages/predict.py")
    return at.run()


def upload(at: AppTest, *files: tuple[str, bytes]) -> AppTest:
    at.file_uploader(key="predict_upload").set_value([(name, data, "image/png") for name, data in files])
    return at.run()


def test_without_runs_the_page_points_to_train(tmp_path, monkeypatch):
    monkeypatch.setenv("UTKFACE_RUNS_DIR", str(tmp_path / "empty"))
    at = predict_page()
    assert not at.exception
    assert any("No trained model yet" in i.value for i in at.info)


def test_page_starts_with_the_camera_closed_and_asks_for_photos(runs_root):
    at = predict_page()
    assert not at.exception
    assert at.selectbox(key="run").value == "run-p"
    assert at.toggle(key="predict_camera_on").value is False
    assert not at.camera_input
    assert any("Upload one or more photos" in i.value for i in at.info)
    assert any("run=run-p" in c.value for c in at.sidebar.code)  # the shareable link names the run


def test_cropped_face_gets_age_range_and_probabilities(runs_root):
    at = predict_page(predict_no_detect=True)
    upload(at, ("face.png", png(1)))
    assert not at.exception
    expected = prediction.predict_image(
        prediction.load_model_cached(runs_root / "run-p" / "model.keras"),
        png(1),
        image_size=32,
        detect=False,
        age_mae=12.5,
    ).faces[0]
    age = next(m for m in at.metric if m.label == "Face 1 · age")
    assert age.value == f"{expected.age:.0f}"
    assert any(c.value == f"range {expected.age_low:.0f}–{expected.age_high:.0f} years" for c in at.caption)
    bars = {p.text.split(" · ")[0]: p.value for p in at.get("progress")}
    assert set(bars) == {"male", "female", "White", "Black", "Asian", "Indian", "Others"}
    assert bars["female"] == pytest.approx(100 * expected.gender_probs["female"], abs=1)
    assert bars["Asian"] == pytest.approx(100 * expected.race_probs["Asian"], abs=1)
    assert len(at.get("image")) >= 2  # the boxed image and the aligned crop


def test_each_uploaded_image_gets_its_own_result(runs_root):
    at = predict_page(predict_no_detect=True)
    upload(at, ("a.png", png(1)), ("b.png", png(2)))
    assert [m.value for m in at.markdown if m.value.startswith("####")] == ["#### 1. a.png", "#### 2. b.png"]
    assert len([m for m in at.metric if m.label == "Face 1 · age"]) == 2


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "is empty"),
        (b"\x89PNG\r\n\x1a\n broken", "cannot be read"),
        (b"plain text, not a picture", "not an image file"),
    ],
)
def test_bad_uploads_give_a_clear_error_not_a_traceback(runs_root, data, message):
    at = predict_page(predict_no_detect=True)
    upload(at, ("bad.png", data), ("good.png", png(3)))
    assert not at.exception
    assert any(message in e.value for e in at.error)
    assert any(m.label == "Face 1 · age" for m in at.metric)  # the good file is still predicted


def test_oversize_upload_is_refused_before_decoding():
    assert "over the 25 MB limit" in upload_problem("big.jpg", 26 * 1024 * 1024)
    assert upload_problem("ok.jpg", 1000) is None
    assert "empty" in upload_problem("none.jpg", 0)


def test_photo_without_a_face_says_so(runs_root):
    at = predict_page()
    upload(at, ("wall.png", png(4, (160, 120))))
    assert not at.exception
    assert any(w.value.startswith("No face found") for w in at.warning)


def test_grad_cam_expander_shows_the_heat_map_for_the_chosen_head(runs_root):
    at = predict_page(predict_no_detect=True, predict_cam_1_1=True)
    upload(at, ("face.png", png(1)))
    at.segmented_control(key="predict_cam_head").set_value("race").run()
    assert not at.exception
    assert any("Grad-CAM: what drove the race prediction" in e.label for e in at.expander)
    assert any("Red areas" in c.value for c in at.caption)


def wait_for(kind: str) -> None:
    wait_until(lambda: not any(j.active for j in registry().jobs(kind)), f"the {kind} jobs to end")


def test_batch_of_images_and_an_archive_gives_a_csv(runs_root):
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("faces/one.png", png(5))
        zf.writestr("faces/two.png", png(6))
    at = predict_page(predict_no_detect=True)
    at.file_uploader(key="predict_batch").set_value(
        [
            ("x.png", png(7), "image/png"),
            ("broken.jpg", b"nope", "image/jpeg"),
            ("faces.zip", archive.getvalue(), "application/zip"),
        ]
    )
    at.run()
    at.button(key="predict_batch_start").click().run()
    wait_for("predict")
    at.run()
    assert not at.exception
    job = registry().get(at.session_state["predict_batch_job"])
    assert job.state == "completed", job.error
    frame = job.result
    assert sorted(frame["file"]) == ["broken.jpg", "faces/one.png", "faces/two.png", "x.png"]
    assert frame.loc[frame["file"] == "broken.jpg", "error"].notna().all()
    assert frame["age"].notna().sum() == 3
    assert any(b.label == "Download the CSV" for b in at.get("download_button"))


def test_model_downloads_offer_keras_and_tflite_on_demand(runs_root):
    at = predict_page()
    labels = [b.label for b in at.get("download_button")]
    assert "Download .keras" in labels and "Download .tflite" not in labels
    at.button(key="predict_tflite").click().run()
    assert not at.exception
    assert "Download .tflite" in [b.label for b in at.get("download_button")]
