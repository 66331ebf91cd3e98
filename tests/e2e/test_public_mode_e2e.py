"""`make serve-public` starts the shared-link configuration: no folder field, named data folders by name only."""

from __future__ import annotations

import os
import time
import urllib.request

import pytest
from playwright.sync_api import expect

from tests.conftest import write_jpeg
from tests.e2e.conftest import _free_port, streamlit_server, wait_for_app_run


@pytest.fixture(scope="module")
def public_app(tmp_path_factory):
    """``make serve-public`` on a free local port, with one named data folder; yields (url, data folder)."""
    work = tmp_path_factory.mktemp("public-app")
    data = work / "secret-server-path" / "faces"
    for i in range(12):
        write_jpeg(data / f"{20 + i}_{i % 2}_{i % 5}_2017011617452{i:04d}.jpg.chip.jpg", seed=i)
    port = _free_port()
    env = {
        **os.environ,
        "UTKFACE_APP_DIR": str(work / "app"),
        "UTKFACE_RUNS_DIR": str(work / "runs"),
        "UTKFACE_DATA_ROOTS": f"UTK sample={data}",
        # Closed tabs' sessions become collectable after 2 s instead of 120 s.
        "STREAMLIT_SERVER_DISCONNECTED_SESSION_TTL": "2",
        "UTKFACE_ADMIN_PASSWORD": "e2e operator password",
    }
    env.pop("UTKFACE_MODE", None)  # the target itself must set public mode
    # -o: never reinstall the virtual environment from inside a test, even if requirements changed.
    command = ["make", "-o", ".venv/.installed", "serve-public", f"PORT={port}", "ADDRESS=127.0.0.1"]
    with streamlit_server(env, work / "serve-public.log", command=command, port=port) as url:
        yield url, data, work / "app"


def test_public_sidebar_offers_no_folder_field_and_names_roots_by_name(page, public_app):
    url, data, _ = public_app
    page.goto(url)
    sidebar = page.get_by_test_id("stSidebar")
    expect(sidebar.get_by_text("Synthetic demo data")).to_be_visible(timeout=120_000)
    wait_for_app_run(page)
    expect(sidebar.get_by_role("radio", name="Upload an archive")).to_be_attached()
    expect(sidebar.get_by_role("radio", name="A folder", exact=True)).to_have_count(0)
    expect(sidebar.get_by_test_id("stTextInput")).to_have_count(0)

    named = sidebar.get_by_role("radio", name="A data folder of this server")
    named.check(force=True)
    expect(named).to_be_checked()
    expect(sidebar.get_by_test_id("stMetric").filter(has_text="Images (kept)")).to_contain_text("12", timeout=60_000)
    expect(sidebar.get_by_role("combobox", name="Data folder")).to_have_value("UTK sample")
    expect(sidebar.get_by_text("Data folder “UTK sample”")).to_be_visible()
    wait_for_app_run(page)
    html = page.content()
    assert "secret-server-path" not in html and str(data) not in html


def test_public_server_serves_health_and_never_a_folder_from_the_url(page, public_app):
    url, _, _ = public_app
    with urllib.request.urlopen(f"{url}/_stcore/health", timeout=5) as response:
        assert response.status == 200
    # A folder choice smuggled through the URL is ignored: the demo data stays.
    page.goto(f"{url}/?data_kind=folder&data_folder=/etc")
    expect(page.get_by_test_id("stSidebar").get_by_text("Synthetic demo data")).to_be_visible(timeout=120_000)
    wait_for_app_run(page)
    assert "/etc" not in page.get_by_test_id("stSidebar").inner_text()


def extracted_uploads(app_dir) -> list:
    return [p for p in (app_dir / "uploads").glob("s-*/*") if p.is_dir()]


def test_upload_is_private_and_deleted_when_its_session_ends(browser, public_app, tmp_path):
    from tests.e2e.test_archive_upload_e2e import make_zip

    url, _, app_dir = public_app
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.goto(url)
    sidebar = page.get_by_test_id("stSidebar")
    expect(sidebar.get_by_text("Synthetic demo data")).to_be_visible(timeout=120_000)
    wait_for_app_run(page)
    option = sidebar.get_by_role("radio", name="Upload an archive")
    option.check(force=True)
    expect(option).to_be_checked()
    dropzone = sidebar.get_by_test_id("stFileUploaderDropzoneInput")
    expect(dropzone).to_be_attached()
    dropzone.set_input_files(str(make_zip(tmp_path / "faces.zip")))
    expect(sidebar.get_by_test_id("stMetric").filter(has_text="Images (kept)")).to_contain_text("12", timeout=60_000)
    assert len(extracted_uploads(app_dir)) == 1
    assert str(app_dir) not in page.content()
    context.close()
    # Streamlit's session store drops a closed session lazily, when other visitors come and go.
    deadline = time.time() + 120
    while extracted_uploads(app_dir) and time.time() < deadline:
        other = browser.new_context()
        visitor = other.new_page()
        visitor.goto(url)
        expect(visitor.get_by_test_id("stSidebar").get_by_text("Synthetic demo data")).to_be_visible(timeout=120_000)
        other.close()
        time.sleep(3)  # past the 2 s disconnected-session TTL
    assert extracted_uploads(app_dir) == []


def test_operator_unlocks_with_the_password_only(page, public_app):
    url, _, _ = public_app
    page.goto(url)
    sidebar = page.get_by_test_id("stSidebar")
    expect(sidebar.get_by_text("Synthetic demo data")).to_be_visible(timeout=120_000)
    wait_for_app_run(page)
    sidebar.get_by_role("button", name="Operator unlock").click()
    dialog = page.get_by_role("dialog")
    expect(dialog.get_by_text("Admin password")).to_be_visible()
    field = dialog.get_by_label("Admin password")
    field.fill("wrong")
    dialog.get_by_role("button", name="Unlock").click()
    expect(dialog.get_by_text("Wrong password.")).to_be_visible()
    field.fill("e2e operator password")
    dialog.get_by_role("button", name="Unlock").click()
    expect(sidebar.get_by_text("Operator mode: you can act on every job and run.")).to_be_visible()
    expect(page.get_by_role("dialog")).to_have_count(0)
