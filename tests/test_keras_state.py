"""Streamlit clears Keras' global state after every script run; the app must stop that, or a model
training in a background thread has its state and TensorFlow's kernel cache wiped under it at each
rerun of the live fragment (measured: training ran 9-17x slower while a browser watched)."""

import keras
from streamlit.testing.v1 import AppTest


def test_app_runs_leave_keras_global_state_alone():
    keras.backend.get_uid("probe_state")
    before = keras.backend.get_uid("probe_state")
    AppTest.from_file("../streamlit_app.py", default_timeout=120).run()
    assert keras.backend.get_uid("probe_state") == before + 1
