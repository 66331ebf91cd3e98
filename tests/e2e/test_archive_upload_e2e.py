"""Uploading a UTKFace archive in the sidebar switches the app to it; a non-archive gets a clear message."""

import io
import zipfile

import numpy as np
from PIL import Image
from playwright.sync_api import expect

from tests.e2e.conftest import wait_for_app_run


def make_zip(path, n=12):
    rng = np.random.default_rng(0)
    with zipfile.ZipFile(path, "w") as archive:
        for i in range(n):
            buf = io.BytesIO()
            Image.fromarray(rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)).save(buf, "JPEG")
            archive.writestr(f"UTKFace/{20 + i}_{i % 2}_{i % 5}_2017011617452{i:04d}.jpg.chip.jpg", buf.getvalue())
        archive.writestr("UTKFace/readme.txt", "not an image")
    return path


def choose_upload(page, app_url):
    page.goto(app_url)
    expect(page.get_by_text("Synthetic demo data")).to_be_visible(timeout=120_000)
    wait_for_app_run(page)
    option = page.get_by_test_id("stSidebar").get_by_role("radio", name="Upload an archive")
    option.check(force=True)
    expect(option).to_be_checked()
    dropzone = page.get_by_test_id("stSidebar").get_by_test_id("stFileUploaderDropzoneInput")
    expect(dropzone).to_be_attached()
    return dropzone


def test_uploaded_archive_becomes_the_data_set(page, app_url, tmp_path):
    choose_upload(page, app_url).set_input_files(str(make_zip(tmp_path / "faces.zip")))
    kept = page.get_by_test_id("stSidebar").get_by_test_id("stMetric").filter(has_text="Images (kept)")
    expect(kept).to_contain_text("12", timeout=60_000)
    expect(page.get_by_text("Archive faces.zip (12 images extracted)")).to_be_visible()


def test_non_archive_upload_gets_a_clear_message(page, app_url, tmp_path):
    fake = tmp_path / "fake.zip"
    fake.write_bytes(b"this is not a zip file")
    choose_upload(page, app_url).set_input_files(str(fake))
    expect(page.get_by_test_id("stSidebar").get_by_text("is not a .zip, .tar or .tar.gz archive")).to_be_visible(
        timeout=60_000
    )
