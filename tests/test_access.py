"""Server modes, allowed roots, named data folders, owner tokens and the admin gate (issue 8)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from tests.conftest import REPO, write_jpeg
from utkface_core import access
from utkface_core.access import AccessError
from utkface_core.data import sources

APP = str(REPO / "streamlit_app.py")


@pytest.fixture
def roots(tmp_path, monkeypatch):
    """One allowed root holding a data folder, and a secret folder outside it."""
    allowed = tmp_path / "allowed"
    data = allowed / "faces"
    write_jpeg(data / "30_0_0_20170101000000001.jpg.chip.jpg")
    secret = tmp_path / "secret"
    write_jpeg(secret / "40_1_1_20170101000000002.jpg.chip.jpg")
    monkeypatch.setenv("UTKFACE_ALLOWED_ROOTS", str(allowed))
    monkeypatch.delenv("UTKFACE_DATA_ROOTS", raising=False)
    monkeypatch.delenv("UTKFACE_MODE", raising=False)
    return allowed, data, secret


def refusal(text: str, mode: str = access.PRIVATE) -> str:
    with pytest.raises(AccessError) as info:
        access.resolve_folder(text, mode)
    return str(info.value)


# --- private mode: allowed roots ---------------------------------------------------------------


def test_folder_inside_a_root_is_opened(roots):
    allowed, data, _ = roots
    assert access.resolve_folder(str(data), access.PRIVATE) == data.resolve()


def test_dotdot_traversal_out_of_a_root_is_refused(roots):
    allowed, _, secret = roots
    message = refusal(f"{allowed}/../{secret.name}")
    assert "not allowed" in message


def test_dotdot_is_refused_even_when_it_stays_inside(roots):
    allowed, data, _ = roots
    assert "not allowed" in refusal(f"{data}/../faces")


def test_symlink_out_of_a_root_is_refused(roots):
    allowed, _, secret = roots
    (allowed / "link").symlink_to(secret, target_is_directory=True)
    assert "not allowed" in refusal(str(allowed / "link"))


def test_path_outside_the_roots_is_refused(roots):
    _, _, secret = roots
    assert "not allowed" in refusal(str(secret))
    assert "not allowed" in refusal("/usr/share")
    assert "not allowed" in refusal("/etc")


def test_filesystem_root_and_relative_paths_are_refused(roots, monkeypatch):
    monkeypatch.setenv("UTKFACE_ALLOWED_ROOTS", "/")  # "/" can never become a root
    assert "not allowed" in refusal("/")
    assert "not allowed" in refusal("etc")


def test_refusal_does_not_tell_whether_the_path_exists(roots):
    _, _, secret = roots
    existing = refusal(str(secret)).replace(str(secret), "X")
    missing = refusal(str(secret / "nope")).replace(str(secret / "nope"), "X")
    assert existing == missing
    assert "exist" not in existing


def test_missing_folder_inside_a_root_says_so(roots):
    allowed, _, _ = roots
    with pytest.raises(FileNotFoundError, match="does not exist"):
        access.resolve_folder(str(allowed / "nope"), access.PRIVATE)
    with pytest.raises(FileNotFoundError, match="is a file"):
        access.resolve_folder(str(next((allowed / "faces").iterdir())), access.PRIVATE)


def test_default_roots_are_home_and_utkface_dir(tmp_path, monkeypatch):
    monkeypatch.delenv("UTKFACE_ALLOWED_ROOTS", raising=False)
    monkeypatch.delenv("UTKFACE_DATA_ROOTS", raising=False)
    monkeypatch.setenv("UTKFACE_DIR", str(tmp_path))
    assert access.allowed_roots() == [Path.home().resolve(), tmp_path.resolve()]


# --- public mode -----------------------------------------------------------------------------------


def test_public_mode_refuses_every_typed_path(roots):
    _, data, _ = roots
    for text in (str(data), "/", "/etc", ""):
        assert "cannot be typed" in refusal(text, access.PUBLIC)


def test_named_data_roots_are_listed_by_name(roots, monkeypatch, app_dir):
    _, data, secret = roots
    monkeypatch.setenv("UTKFACE_DATA_ROOTS", os.pathsep.join([f"UTKFace part 1={data}", str(secret)]))
    assert access.data_roots() == {"UTKFace part 1": data.resolve(), "secret": secret.resolve()}
    source = sources.named_source("UTKFace part 1")
    assert source.path == data.resolve() and str(data) not in source.label
    with pytest.raises(AccessError, match="no data folder named"):
        access.named_root("../etc")


@pytest.mark.parametrize("bad", ["../x=/tmp", "a=/tmp" + os.pathsep + "a=/var", "=/tmp"])
def test_bad_data_roots_setting_is_reported(monkeypatch, bad):
    monkeypatch.setenv("UTKFACE_DATA_ROOTS", bad)
    with pytest.raises(AccessError, match="UTKFACE_DATA_ROOTS"):
        access.data_roots()


def test_display_path_never_shows_a_server_path_in_public_mode(roots, monkeypatch, app_dir):
    _, data, secret = roots
    monkeypatch.setenv("UTKFACE_DATA_ROOTS", f"faces={data}")
    assert access.display_path(data / "sub", access.PUBLIC) == "faces/sub"
    assert access.display_path(secret, access.PUBLIC) == "a server folder"
    assert access.display_path("demo", access.PUBLIC) == "demo"
    assert access.display_path(secret, access.PRIVATE) == str(secret)


def test_mode_comes_from_the_environment_and_rejects_typos(monkeypatch):
    monkeypatch.setenv("UTKFACE_MODE", "public")
    assert access.server_mode() == access.PUBLIC
    monkeypatch.setenv("UTKFACE_MODE", "pubic")
    with pytest.raises(AccessError, match="private' or 'public"):
        access.server_mode()


def test_mode_can_be_set_in_config_toml(tmp_path, monkeypatch):
    config = tmp_path / "config.toml"
    config.write_text('[server]\nheadless = true\n\n[utkface]\nmode = "public"\n')
    monkeypatch.delenv("UTKFACE_MODE", raising=False)
    monkeypatch.setattr(access, "_CONFIG_FILES", (config,))
    assert access.server_mode() == access.PUBLIC
    config.write_text("[server]\nheadless = true\n")
    assert access.server_mode() == access.PRIVATE


def test_check_mode_rejects_unknown_modes():
    with pytest.raises(ValueError, match="mode must be"):
        access.check_mode("open")


# --- owner tokens and the admin gate ------------------------------------------------------------------


def test_server_secret_is_private_and_stable(app_dir):
    first = access.server_secret()
    assert len(first) == 32 and access.server_secret() == first
    mode = stat.S_IMODE((app_dir / "server-secret.key").stat().st_mode)
    assert mode == 0o600


def test_owner_token_is_stable_per_browser_and_opaque(app_dir):
    from streamlit.web.server.starlette.starlette_app_utils import generate_xsrf_token_string

    from pages.shared import browser_secret

    raw = os.urandom(16)
    cookie_a, cookie_b = generate_xsrf_token_string(raw), generate_xsrf_token_string(raw)
    assert cookie_a != cookie_b  # Streamlit re-masks the token on every page load
    assert browser_secret(cookie_a) == browser_secret(cookie_b) == raw
    owner = access.owner_from_secret(browser_secret(cookie_a))
    assert owner == access.owner_from_secret(raw) != access.owner_from_secret(os.urandom(16))
    assert raw.hex() not in owner and len(owner) == 32
    assert browser_secret("") is None and browser_secret("2|zz|zz|1") is None


def test_password_check_and_rate_limit():
    assert access.password_matches("s3cret", "s3cret")
    assert not access.password_matches("s3cre", "s3cret")
    assert not access.password_matches("", None)
    limiter = access.AttemptLimiter(max_attempts=3, window_s=60)
    for i in range(3):
        assert limiter.wait_s("a", now=100.0 + i) == 0
        limiter.record("a", now=100.0 + i)
    assert limiter.wait_s("a", now=103.0) == pytest.approx(57.0)
    assert limiter.wait_s("b", now=103.0) == 0
    assert limiter.wait_s("a", now=161.0) == 0


# --- the sidebar (AppTest) ---------------------------------------------------------------------------


def sidebar_app(monkeypatch, **state) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    for key, value in state.items():
        at.session_state[key] = value
    return at.run()


def test_public_sidebar_has_no_folder_field_and_names_roots(roots, monkeypatch):
    _, data, _ = roots
    monkeypatch.setenv("UTKFACE_MODE", "public")
    monkeypatch.setenv("UTKFACE_DATA_ROOTS", f"Faces A={data}")
    at = sidebar_app(monkeypatch, data_kind="named")
    assert not at.exception
    radio = at.sidebar.radio(key="data_kind")
    assert "folder" not in radio.options and "A folder" not in radio.options
    assert at.sidebar.selectbox(key="data_root").options == ["Faces A"]
    shown = " ".join(str(e.value) for e in at.sidebar.caption) + " ".join(str(m.value) for m in at.sidebar.markdown)
    assert "Faces A" in shown and str(data) not in shown
    assert not at.sidebar.text_input


def test_public_sidebar_ignores_a_folder_choice(roots, monkeypatch):
    monkeypatch.setenv("UTKFACE_MODE", "public")
    at = sidebar_app(monkeypatch, data_kind="folder", data_folder="/etc")
    assert not at.exception
    assert at.sidebar.radio(key="data_kind").value == "demo"
    assert not at.sidebar.text_input


def test_private_sidebar_refuses_etc_without_indexing_it(roots, monkeypatch):
    at = sidebar_app(monkeypatch, data_kind="folder", data_folder="/etc")
    assert not at.exception
    assert any("not allowed" in e.value for e in at.sidebar.error)
    assert at.session_state["index"] is None


# --- the operator unlock and the delete confirmation (AppTest) ------------------------------------------


def _admin_script():
    import streamlit as st

    from pages.shared import admin_controls, is_admin

    admin_controls(st.sidebar)
    st.markdown(f"admin: {is_admin()}")


def _delete_script():
    import streamlit as st

    from pages.shared import confirm_delete_dialog

    st.session_state.setdefault("deleted", [])
    clicked = st.button("Delete", key="delete_runs")
    confirm_delete_dialog(
        ["run-a", "run-b"], lambda: st.session_state["deleted"].extend(["run-a", "run-b"]), open=clicked
    )
    st.markdown(f"deleted: {st.session_state['deleted']}")


def admin_text(at: AppTest) -> str:
    return next(m.value for m in at.markdown if m.value.startswith("admin:"))


def test_operator_unlock_needs_the_password(monkeypatch):
    monkeypatch.setattr(access, "ADMIN_ATTEMPTS", access.AttemptLimiter(max_attempts=2, window_s=300))
    at = AppTest.from_function(_admin_script, default_timeout=60)
    at.secrets["admin_password"] = "correct horse"
    at.run()
    assert admin_text(at) == "admin: False"
    at.sidebar.button(key="admin_unlock").click().run()
    at.text_input(key="admin_password_input").input("wrong")
    at.button[-1].click().run()
    assert any("Wrong password" in e.value for e in at.error) and admin_text(at) == "admin: False"
    at.text_input(key="admin_password_input").input("correct horse")
    at.button[-1].click().run()
    assert admin_text(at) == "admin: True"
    at.sidebar.button(key="admin_lock").click().run()
    assert admin_text(at) == "admin: False"


def test_operator_unlock_is_rate_limited(monkeypatch):
    monkeypatch.setattr(access, "ADMIN_ATTEMPTS", access.AttemptLimiter(max_attempts=1, window_s=300))
    at = AppTest.from_function(_admin_script, default_timeout=60)
    at.secrets["admin_password"] = "correct horse"
    at.run()
    at.sidebar.button(key="admin_unlock").click().run()
    at.text_input(key="admin_password_input").input("wrong")
    at.button[-1].click().run()
    at.text_input(key="admin_password_input").input("correct horse")
    at.button[-1].click().run()
    assert any("Too many attempts" in e.value for e in at.error)
    assert admin_text(at) == "admin: False"


def test_no_unlock_button_without_a_password(monkeypatch):
    monkeypatch.delenv("UTKFACE_ADMIN_PASSWORD", raising=False)
    at = AppTest.from_function(_admin_script, default_timeout=60).run()
    assert not [b for b in at.sidebar.button if b.key == "admin_unlock"]
    assert admin_text(at) == "admin: False"


def test_delete_runs_only_after_confirmation():
    at = AppTest.from_function(_delete_script, default_timeout=60).run()
    at.button(key="delete_runs").click().run()
    assert any("Delete 2 runs?" in m.value for m in at.markdown)
    at.button(key="confirm_delete_no").click().run()
    assert any(m.value == "deleted: []" for m in at.markdown)
    at.button(key="delete_runs").click().run()
    at.button(key="confirm_delete_yes").click().run()
    assert any(m.value == "deleted: ['run-a', 'run-b']" for m in at.markdown)


def test_a_mistyped_mode_stops_the_app_with_a_message(monkeypatch):
    monkeypatch.setenv("UTKFACE_MODE", "pubic")
    at = AppTest.from_file(APP, default_timeout=120).run()
    assert not at.exception
    assert any("not a mode" in e.value for e in at.sidebar.error)
    assert not at.sidebar.radio
