"""Sweep trial runs next to ordinary runs: listed for Evaluate and Predict, opened by their unique name."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from tests.test_cli_eval_predict import make_tiny_run
from tests.waits import wait_until
from utkface_core import runs, sweep
from utkface_core.evaluation.evaluation import evaluate_run
from utkface_core.jobs import list_jobs

APP = "../streamlit_app.py"


@pytest.fixture
def trial_run(app_dir):
    """An ordinary finished run 'run-a' and a sweep whose trial-000 is a finished run with a model."""
    make_tiny_run(runs.runs_dir(), "run-a")
    folder = sweep.sweeps_dir() / "20260101-120000-grid-abc123"
    (folder / "trials").mkdir(parents=True)
    runs.write_json_atomic(folder / sweep.SPEC_FILE, {"id": "abc", "spec": sweep.SweepSpec().to_dict()})
    trial = make_tiny_run(folder / "trials", "trial-000", seed=1)
    runs.write_json_atomic(
        trial / sweep.TRIAL_FILE, {"mode": "fixed", "fractions": {"age": 0.5, "gender": 0.25, "race": 0.25}}
    )
    return trial


def test_model_runs_lists_sweep_trials_after_the_runs_with_unique_names(trial_run):
    from pages.shared import model_runs

    found = model_runs()
    assert [r.name for r in found] == ["run-a", f"{trial_run.parents[1].name}/trial-000"]
    assert found[1].path == trial_run


def test_evaluate_page_opens_a_trial_named_in_the_url(trial_run):
    name = f"{trial_run.parents[1].name}/trial-000"
    at = AppTest.from_file(APP, default_timeout=120)
    at.query_params["run"] = name
    at.switch_page("pages/evaluate.py").run()
    wait_until(lambda: not any(j.active for j in list_jobs("evaluate")), "the evaluation jobs to end")
    at.run()
    assert not at.exception
    assert at.selectbox(key="run").value == name
    assert not at.warning or all("does not exist" not in w.value for w in at.warning)
    ev = evaluate_run(trial_run)
    assert next(m.value for m in at.metric if m.label == "Age MAE") == f"{ev.age_mae:.2f} y"
