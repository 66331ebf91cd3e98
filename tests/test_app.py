"""AppTest checks of the app shell and the Explore page (demo data by default): widgets, URL links, imports."""

import json
import os
import subprocess
import sys
from urllib.parse import parse_qs, urlsplit

import pytest
from streamlit.testing.v1 import AppTest

from tests.conftest import REPO
from utkface_core.data.demo import demo_index
from utkface_core.data.splits import filter_frame
from utkface_core.labels import GENDERS, MAX_AGE, RACES

APP = "../streamlit_app.py"


def run_app(**query) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    for key, value in query.items():
        at.query_params[key] = value
    return at.run()


def metric(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def link(at: AppTest) -> str:
    """The page's shareable link (the code box of the sidebar's "Copy link" popover)."""
    codes = [c.value for c in at.sidebar.code]
    assert len(codes) == 1, codes
    return codes[0]


def demo_frame():
    # Same rows and labels as the drawn demo folder's index (tests/test_demo.py checks that).
    return demo_index().frame


def test_app_starts_on_explore_with_the_synthetic_demo_set():
    at = run_app()
    assert not at.exception
    assert at.sidebar.radio(key="data_kind").value == "demo"
    assert any("Synthetic demo data" in w.value for w in at.sidebar.warning)
    assert metric(at, "Images shown") == f"{len(demo_frame()):,}"


def test_every_filter_has_an_explicit_initial_value_and_is_bound_to_the_url():
    at = run_app()
    assert at.slider(key="age").value == (0, MAX_AGE)
    assert at.multiselect(key="gender").value == list(GENDERS)
    assert at.multiselect(key="race").value == list(RACES)
    assert at.tabs[0].label == "Age"


def test_age_filter_changes_the_counts_and_the_link():
    at = run_app()
    at.slider(key="age").set_value((20, 30)).run()
    expected = len(filter_frame(demo_frame(), 20, 30))
    assert metric(at, "Images shown") == f"{expected:,}"
    assert "age=20&age=30" in link(at)


def test_gender_and_race_filters_drive_the_counts():
    at = run_app()
    at.multiselect(key="gender").set_value(["female"])
    at.multiselect(key="race").set_value(["Asian", "Indian"]).run()
    expected = len(filter_frame(demo_frame(), 0, MAX_AGE, ["female"], ["Asian", "Indian"]))
    assert metric(at, "Images shown") == f"{expected:,}"
    assert metric(at, "Male") == "0"


def test_url_reopens_the_same_view():
    at = run_app(age=["30", "40"], gender="male", tab="Counts")
    assert not at.exception
    assert at.slider(key="age").value == (30, 40)
    assert at.multiselect(key="gender").value == ["male"]
    expected = len(filter_frame(demo_frame(), 30, 40, ["male"]))
    assert metric(at, "Images shown") == f"{expected:,}"
    # Only the open tab is built: the Counts chart, not the Age charts.
    keys = {c.proto.id for c in at.get("plotly_chart")}
    assert len(keys) == 1


def test_the_link_reopens_what_the_page_shows():
    at = run_app()
    at.slider(key="age").set_value((25, 60))
    at.multiselect(key="race").set_value(["Black"]).run()
    query = parse_qs(urlsplit(link(at)).query, keep_blank_values=True)
    assert query["age"] == ["25", "60"] and query["race"] == ["Black"] and query["tab"] == ["Age"]
    reopened = AppTest.from_file(APP, default_timeout=120)
    for key, values in query.items():
        reopened.query_params[key] = values if len(values) > 1 else values[0]
    reopened.run()
    assert reopened.slider(key="age").value == (25, 60)
    assert reopened.multiselect(key="race").value == ["Black"]
    assert metric(reopened, "Images shown") == metric(at, "Images shown")


def test_malformed_url_falls_back_to_defaults():
    at = run_app(age="old", gender="robot", tab="Nope")
    assert not at.exception
    assert at.slider(key="age").value == (0, MAX_AGE)
    assert at.multiselect(key="gender").value == list(GENDERS)
    assert metric(at, "Images shown") == f"{len(demo_frame()):,}"


def test_empty_filter_says_so():
    at = run_app()
    at.multiselect(key="gender").set_value([]).run()
    assert any("No image matches" in w.value for w in at.warning)


def run_with_state(**state) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    for key, value in state.items():
        at.session_state[key] = value
    return at.run()


@pytest.fixture
def folders_allowed(tmp_path, monkeypatch):
    """Private mode with tmp_path as the allowed root for typed folders."""
    monkeypatch.setenv("UTKFACE_MODE", "private")
    monkeypatch.setenv("UTKFACE_ALLOWED_ROOTS", str(tmp_path))
    return tmp_path


def test_missing_folder_gives_a_clear_error(folders_allowed):
    at = run_with_state(data_kind="folder", data_folder=str(folders_allowed / "nowhere"))
    assert not at.exception
    assert any("does not exist" in e.value for e in at.sidebar.error)
    assert any("Choose a data set" in i.value for i in at.info)


def test_folder_source_shows_its_data_quality(utk_folder, folders_allowed):
    at = run_with_state(data_kind="folder", data_folder=str(utk_folder), tab="Data quality")
    assert not at.exception
    assert metric(at, "Rejected names") == "1"
    assert metric(at, "Label conflicts") == "1"
    assert metric(at, "Images (kept)") == "16"


def test_filters_survive_a_missing_folder_and_the_way_back(utk_folder, folders_allowed):
    at = run_app()
    at.slider(key="age").set_value((20, 40))
    at.multiselect(key="gender").set_value(["female"]).run()
    at.radio(key="data_kind").set_value("folder").run()
    at.text_input(key="data_folder").set_value(str(folders_allowed / "typo")).run()
    assert any("does not exist" in e.value for e in at.sidebar.error)
    # The filters stay visible with their values while no data set is usable.
    assert at.slider(key="age").value == (20, 40)
    assert at.multiselect(key="gender").value == ["female"]
    at.text_input(key="data_folder").set_value(str(utk_folder)).run()
    assert at.multiselect(key="gender").value == ["female"]
    assert metric(at, "Images shown") == str(len(filter_frame(at.session_state["index"].frame, 20, 40, ["female"])))
    at.radio(key="data_kind").set_value("demo").run()
    assert not at.exception
    assert at.slider(key="age").value == (20, 40)
    assert at.multiselect(key="gender").value == ["female"]
    assert metric(at, "Images shown") == f"{len(filter_frame(demo_frame(), 20, 40, ['female'])):,}"


def test_the_link_names_a_private_folder_but_never_in_public_mode(utk_folder, folders_allowed, monkeypatch):
    at = run_with_state(data_kind="folder", data_folder=str(utk_folder))
    assert "data_kind=A+folder" in link(at) and "data_folder=" in link(at)
    monkeypatch.setenv("UTKFACE_MODE", "public")
    at = run_app(data_kind="A folder", data_folder=str(utk_folder))
    assert not at.exception
    assert at.sidebar.radio(key="data_kind").value == "demo"
    assert any("does not offer" in w.value for w in at.sidebar.warning)
    assert "data_folder" not in link(at) and str(utk_folder) not in link(at)


def test_archive_source_without_upload_asks_for_one():
    at = run_with_state(data_kind="archive")
    assert not at.exception
    assert any("Upload an archive" in i.value for i in at.sidebar.info)


def test_gallery_reshuffle_keeps_the_page_working():
    at = run_app(tab="Gallery")
    assert len(at.get("image")) == 1
    at.button(key="gallery_shuffle").click().run()
    assert not at.exception
    assert at.session_state["gallery_seed"] == 1


def test_every_page_opens_without_an_exception():
    at = run_app()
    for page in ("pages/train.py", "pages/evaluate.py", "pages/predict.py", "pages/explore.py"):
        at.switch_page(page).run()
        assert not at.exception, page
        assert len(at.sidebar.code) == 1, f"{page} has no shareable link"


CHECK_IMPORTS = r"""
import json, sys
from streamlit.testing.v1 import AppTest
at = AppTest.from_file(sys.argv[1], default_timeout=300).run()
heavy = sorted(m for m in ("tensorflow", "keras", "onnxruntime", "tf2onnx") if m in sys.modules)
errors = [str(e.value) for e in at.exception]
print(json.dumps({"exception": errors, "charts": len(at.get("plotly_chart")), "heavy": heavy}))
"""


def test_the_explore_page_never_imports_tensorflow(tmp_path):
    env = {
        **os.environ,
        "UTKFACE_APP_DIR": str(tmp_path / "app"),
        "UTKFACE_RUNS_DIR": str(tmp_path / "runs"),
        "PYTHONPATH": str(REPO),
    }
    out = subprocess.run(
        [sys.executable, "-c", CHECK_IMPORTS, str(REPO / "streamlit_app.py")],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["exception"] == []
    assert result["charts"] == 4  # the Age tab drew its charts: the page really ran
    assert result["heavy"] == []
