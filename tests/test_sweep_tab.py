"""AppTest checks of the Sweep tab (pages/sweep_tab.py) on a sweep folder written by hand (no training)."""

import pytest
from streamlit.testing.v1 import AppTest

from utkface_core import runs, sweep


def _tab_script():
    from pages.sweep_tab import render_sweep_tab

    render_sweep_tab()


def _trial(folder, name, weights, val, state="completed", point=None):
    path = folder / "trials" / name
    path.mkdir(parents=True)
    runs.write_json_atomic(path / sweep.TRIAL_FILE, {"mode": "fixed", "fractions": weights, "point": point or name})
    runs.write_json_atomic(path / runs.CONFIG_FILE, {"preset": "fast", "image_size": 48})
    runs.write_json_atomic(path / runs.STATUS_FILE, {"state": state, "message": ""})
    mae, gender, race = val
    runs.write_json_atomic(
        path / runs.METRICS_FILE,
        {
            "val_age_mae": mae,
            "val_gender_accuracy": gender,
            "val_race_accuracy": race,
            "age_mae": mae + 0.1,
            "gender_accuracy": gender,
            "race_accuracy": race,
        },
    )


@pytest.fixture
def hand_sweep(app_dir):
    folder = sweep.sweeps_dir() / "20260101-120000-grid-abc123"
    folder.mkdir(parents=True)
    runs.write_json_atomic(
        folder / sweep.SPEC_FILE, {"id": "abc", "spec": sweep.SweepSpec().to_dict(), "fingerprint": "f"}
    )
    _trial(folder, "trial-000", {"age": 0.9, "gender": 0.05, "race": 0.05}, (7.0, 0.80, 0.60))
    _trial(folder, "trial-001", {"age": 0.05, "gender": 0.9, "race": 0.05}, (9.0, 0.90, 0.62))
    _trial(folder, "trial-002", {"age": 0.05, "gender": 0.05, "race": 0.9}, (9.5, 0.85, 0.61))  # dominated by 001
    return folder


def test_sweep_tab_shows_settings_and_the_pareto_set(hand_sweep):
    at = AppTest.from_function(_tab_script, default_timeout=60).run()
    assert not at.exception
    assert at.selectbox(key="sweep_strategy").value == "grid"
    assert at.number_input(key="sweep_trials").value == 9
    assert at.button(key="sweep_start").disabled  # no data set chosen in this bare run
    assert at.selectbox(key="sweep_pick").value == hand_sweep.name
    expected = sweep.load_sweep(hand_sweep)
    assert [m.value for m in at.metric] == ["3", "2", f"{expected['hypervolume']:.4f}"]
    table = at.dataframe[0].value  # the Pareto table comes first
    assert list(table["trial"]) == ["trial-000", "trial-001"]


def test_sweep_tab_offers_sampler_options_for_optuna(hand_sweep):
    at = AppTest.from_function(_tab_script, default_timeout=60).run()
    at.selectbox(key="sweep_strategy").set_value("optuna").run()
    assert not at.exception
    assert at.selectbox(key="sweep_sampler").value == "tpe"
    assert at.checkbox(key="sweep_tune_lr").value is False
    assert at.selectbox(key="sweep_pick").value == hand_sweep.name


def test_pareto_trials_link_to_the_evaluate_page_by_unique_name(hand_sweep):
    at = AppTest.from_function(_tab_script, default_timeout=60).run()
    table = at.dataframe[0].value
    assert list(table["open"]) == [
        f"./evaluate?run={hand_sweep.name}%2Ftrial-000",
        f"./evaluate?run={hand_sweep.name}%2Ftrial-001",
    ]


def test_using_a_pareto_trial_sets_the_train_sliders_and_opens_the_train_tab(hand_sweep):
    at = AppTest.from_function(_tab_script, default_timeout=60).run()
    at.selectbox(key="sweep_use_trial").set_value("trial-001").run()
    at.button(key="sweep_use_weights").click().run()
    assert not at.exception
    trained = sweep.trained_weights({"age": 0.05, "gender": 0.9, "race": 0.05})
    assert at.session_state["train_auto"] is False
    assert at.session_state["train_w_gender"] == pytest.approx(round(trained["gender"], 1))
    assert at.session_state["train_w_age"] == pytest.approx(round(trained["age"], 1))
    assert at.session_state["train_tab"] == "Train"


def test_another_visitors_sweep_cannot_be_stopped_from_the_tab(hand_sweep):
    from utkface_core import jobs

    other = jobs.submit_job("sweep", {"sweep_dir": str(hand_sweep)}, "someone-else", spawn=False)
    try:
        at = AppTest.from_function(_tab_script, default_timeout=60).run()
        assert not at.exception
        assert not [b for b in at.button if b.key == "sweep_stop"]
        assert jobs.request_stop(other, at.session_state["_owner_token"]) is False
        assert jobs.request_stop(other, "someone-else") is True
    finally:
        runs.write_status(other.dir, "stopped", "test over")


def test_starting_a_sweep_records_the_owner_names_no_folder_and_shows_public_limits(app_dir, monkeypatch):
    from types import SimpleNamespace

    import pages.sweep_tab as tab

    started = []
    source = SimpleNamespace(synthetic=False, path=app_dir / "secret-folder", label=f"Folder {app_dir}")
    index = SimpleNamespace(frame=[1, 2, 3])
    monkeypatch.setattr(tab, "current_data", lambda: (source, index))
    monkeypatch.setattr(tab.sweep, "start_sweep_job", lambda spec, owner, label: started.append((spec, owner, label)))
    monkeypatch.setenv("UTKFACE_MODE", "public")
    at = AppTest.from_function(_tab_script, default_timeout=60).run()
    assert any("A sweep on this shared server takes at most 5 minutes" in c.value for c in at.caption)
    at.button(key="sweep_start").click().run()
    assert not at.exception
    [(spec, owner, label)] = started
    assert owner == at.session_state["_owner_token"]
    assert spec.trials == 9 and str(app_dir) not in label and "secret-folder" not in label
    clamped = sweep.clamp_sweep_spec(spec)[0]  # start_sweep_job applies the same caps
    assert clamped.trials == 3 and clamped.with_auto and clamped.with_tutorial  # 3 mixes + 2 baselines: 5 min


def test_a_clicked_scatter_point_names_its_trial(hand_sweep):
    from pages.sweep_tab import clicked_trial
    from utkface_core.evaluation import sweepcharts

    frame = sweepcharts.trials_frame(sweep.load_sweep(hand_sweep))
    event = {"selection": {"points": [{"x": 9.0, "y": 0.90, "curve_number": 0, "point_index": 1}]}}
    assert clicked_trial(frame, event) == "trial-001"
    assert clicked_trial(frame, {"selection": {"points": [{"x": 1.0, "y": 0.5}]}}) is None
    assert clicked_trial(frame, {"selection": {"points": []}}) is None
    assert clicked_trial(frame, None) is None


def test_the_age_range_slider_reaches_the_started_sweep(app_dir, monkeypatch):
    from types import SimpleNamespace

    import pages.sweep_tab as tab

    started = []
    source = SimpleNamespace(synthetic=True, path=app_dir / "demo", label="demo")
    monkeypatch.setattr(tab, "current_data", lambda: (source, SimpleNamespace(frame=[1, 2, 3])))
    monkeypatch.setattr(tab.sweep, "start_sweep_job", lambda spec, owner, label: started.append(spec))
    at = AppTest.from_function(_tab_script, default_timeout=60).run()
    assert at.slider(key="sweep_ages").value == (10, 65)
    at.slider(key="sweep_ages").set_range(20, 40).run()
    at.button(key="sweep_start").click().run()
    assert not at.exception
    [spec] = started
    assert (spec.min_age, spec.max_age) == (20, 40)


def test_the_sweep_list_follows_a_newly_started_sweep_once(hand_sweep):
    from utkface_core import jobs

    at = AppTest.from_function(_tab_script, default_timeout=60).run()
    assert at.selectbox(key="sweep_pick").value == hand_sweep.name
    newer = sweep.sweeps_dir() / "20260101-130000-grid-def456"
    newer.mkdir()
    runs.write_json_atomic(
        newer / sweep.SPEC_FILE, {"id": "def", "spec": sweep.SweepSpec().to_dict(), "fingerprint": "f"}
    )
    mine = jobs.submit_job("sweep", {"sweep_dir": str(newer)}, at.session_state["_owner_token"], spawn=False)
    try:
        at.run()
        assert not at.exception
        assert at.selectbox(key="sweep_pick").value == newer.name  # not the sweep picked before the start
        at.selectbox(key="sweep_pick").set_value(hand_sweep.name).run()
        assert at.selectbox(key="sweep_pick").value == hand_sweep.name  # the visitor's own choice then stays
    finally:
        runs.write_status(mine.dir, "stopped", "test over")


def test_the_charts_mark_the_tutorial_trial_and_the_tutorials_weights(hand_sweep):
    from utkface_core.evaluation import sweepcharts

    tutorial = {"age": 2 / 4.5, "gender": 1 / 4.5, "race": 1.5 / 4.5}
    _trial(hand_sweep, "trial-003", tutorial, (8.0, 0.86, 0.63), point=sweep.TUTORIAL_POINT)
    result = sweep.load_sweep(hand_sweep)
    scatter = sweepcharts.pareto_scatter(result)
    names = {trace.name for trace in scatter.data}
    assert sweepcharts.TUTORIAL_LABEL in names and "Pareto-optimal" in names and "dominated" in names
    marked = next(t for t in scatter.data if t.name == sweepcharts.TUTORIAL_LABEL)
    assert list(marked.x) == [8.0] and marked.marker.symbol == "square"
    ternary = sweepcharts.weights_ternary(result)
    reference = [t for t in ternary.data if t.name.startswith("tutorial's 2 / 1 / 1.5")]
    assert len(reference) == 1 and abs(reference[0].a[0] - 2 / 4.5) < 1e-9


def test_the_charts_mark_the_auto_trial(hand_sweep):
    from utkface_core.evaluation import sweepcharts

    frame = sweepcharts.trials_frame(sweep.load_sweep(hand_sweep))
    frame.loc[0, "mode"] = "auto"
    marked = sweepcharts._completed(frame)
    assert marked.loc[0, "set"] == sweepcharts.AUTO_LABEL and marked.loc[1, "set"] == "Pareto-optimal"
