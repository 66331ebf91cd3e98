"""The Predict page in a real browser: upload a face, see its box, age, probabilities and Grad-CAM."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import expect

from tests.test_cli_eval_predict import make_tiny_run
from utkface_core.data.demo import render_demo_image

REAL_FACE = "34_0_0_20170117190336724"  # detected by MTCNN when pasted into a larger photo


@pytest.fixture(scope="module")
def e2e_run(runs_root) -> str:
    name = "e2e-predict"
    if not (runs_root / name).exists():
        make_tiny_run(runs_root, name)
    return name


def open_predict(page, app_url, run: str):
    page.goto(f"{app_url}/predict?run={run}")
    expect(page.get_by_role("heading", name="Predict age, gender and race")).to_be_visible(timeout=120_000)


def upload(page, path: Path) -> None:
    uploader = page.get_by_test_id("stFileUploader").filter(has_text="JPEG, PNG or WebP")
    uploader.get_by_test_id("stFileUploaderDropzoneInput").set_input_files(str(path))


def test_cropped_demo_face_gets_a_box_and_predictions(page, app_url, e2e_run, tmp_path):
    face = tmp_path / "demo-face.jpg"
    face.write_bytes(render_demo_image(30, 1, 2, size=200))
    open_predict(page, app_url, e2e_run)
    page.get_by_text("Images are already cropped faces (skip detection)").click()
    upload(page, face)
    expect(page.get_by_text("whole image used as the face")).to_be_visible()
    expect(page.get_by_test_id("stMetric").filter(has_text="Face 1 · age")).to_be_visible()
    expect(page.get_by_text(re.compile(r"range \d+–\d+ years"))).to_be_visible()
    expect(page.get_by_test_id("stProgress")).to_have_count(7)  # 2 gender and 5 race probabilities
    expect(page.get_by_test_id("stProgress").filter(has_text=re.compile(r"^female · \d+%$"))).to_be_visible()
    page.get_by_text("Grad-CAM: what drove the age prediction of face 1").click()
    expect(page.get_by_text("Grad-CAM (age)")).to_be_visible()
    overlay = page.get_by_test_id("stExpander").get_by_role("img")
    expect(overlay).to_have_count(2)
    page.wait_for_function(
        "() => [...document.querySelectorAll('[data-testid=stExpander] img')]"
        ".every(i => i.complete && i.naturalWidth > 0)"
    )
    page.screenshot(path="/tmp/predict_e2e.png", full_page=True)


def test_broken_upload_shows_an_error_not_a_traceback(page, app_url, e2e_run, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff this is not really a jpeg")
    open_predict(page, app_url, e2e_run)
    upload(page, bad)
    expect(page.get_by_test_id("stAlertContentError").filter(has_text="broken.jpg cannot be read")).to_be_visible()
    assert page.get_by_test_id("stException").count() == 0


def test_real_face_in_a_photo_is_detected(page, app_url, e2e_run, tmp_path):
    root = os.environ.get("UTKFACE_DIR")
    files = sorted(Path(root).glob(f"{REAL_FACE}*")) if root and Path(root).is_dir() else []
    if not files:
        pytest.skip("UTKFACE_DIR is not set (or lacks the reference image): detection needs a real face")
    photo = np.full((480, 640, 3), 100, np.uint8)
    photo[100:300, 250:450] = np.asarray(Image.open(files[0]).convert("RGB"))
    path = tmp_path / "photo.png"
    Image.fromarray(photo).save(path)
    open_predict(page, app_url, e2e_run)
    upload(page, path)
    expect(page.get_by_text("1 face(s) found")).to_be_visible()
    expect(page.get_by_text(re.compile(r"detector confidence \d+%"))).to_be_visible()
    page.screenshot(path="/tmp/predict_e2e_real.png", full_page=True)
