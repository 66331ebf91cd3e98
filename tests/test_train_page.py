"""AppTest checks of the Train page: options, URL mirroring, a tiny run on the demo set, live weights."""

import time

import pytest
from streamlit.testing.v1 import AppTest

from utkface_core.jobs import registry

APP = "../streamlit_app.py"


def train_page(**query) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=180)
    for key, value in query.items():
        at.query_params[key] = value
    at.run()
    return at.switch_page("pages/train.py").run()


def wait_for(job, timeout=240):
    end = time.time() + timeout
    while job.active and time.time() < end:
        time.sleep(0.5)
    return job


def test_train_page_shows_the_options_with_keys():
    at = train_page()
    assert not at.exception
    assert at.selectbox(key="train_preset").value == "fast"
    assert [at.slider(key=f"train_w_{h}").value for h in ("age", "gender", "race")] == [2.0, 1.0, 1.5]
    assert at.button(key="train_start").disabled is False


def test_weights_and_preset_are_mirrored_in_the_url():
    at = train_page()
    at.slider(key="train_w_race").set_value(3.0).run()
    assert at.query_params["w"] in ("2,1,3", ["2,1,3"])


def test_url_reopens_preset_and_auto_weights():
    at = train_page(preset="tutorial", w="auto")
    assert at.selectbox(key="train_preset").value == "tutorial"
    assert at.toggle(key="train_auto").value is True


@pytest.mark.slow
def test_tiny_training_run_completes_and_is_listed():
    at = train_page()
    at.radio(key="train_mode").set_value("epochs").run()
    at.number_input(key="train_epochs").set_value(1).run()
    at.number_input(key="train_size_fast").set_value(32).run()
    at.button(key="train_start").click().run()
    assert not at.exception
    job = registry().latest("train")
    assert job is not None
    at.slider(key="train_w_gender").set_value(0.5).run()  # live change reaches the running job
    assert job.extra["weights"].get()["gender"] == 0.5
    assert wait_for(job).state == "completed", job.error
    at.run()
    assert any("trained 1 epochs" in s.value for s in at.success)
    assert job.extra["run_dir"].name in str(at.dataframe(key="train_runs_table").value)
