"""Figures and tables of an Evaluation (utkface_core.evaluation.evalcharts), on seeded synthetic predictions."""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest

from utkface_core.evaluation import evalcharts
from utkface_core.evaluation.evalcharts import EvalChartError
from utkface_core.evaluation.evaluation import Predictions, evaluate_arrays
from utkface_core.labels import GENDERS, RACES


def make_eval(n: int = 300, seed: int = 0, genders=(0, 1)):
    rng = np.random.default_rng(seed)
    age = rng.integers(10, 66, n)
    gender = rng.choice(genders, n)
    race = rng.integers(0, 5, n)
    gender_probs = rng.dirichlet([1, 1], n)
    race_probs = rng.dirichlet([1] * 5, n)
    preds = Predictions(age + rng.normal(0, 5, n), gender_probs, race_probs)
    return evaluate_arrays(age, gender, race, preds, files=[f"/data/{i}.jpg" for i in range(n)])


@pytest.fixture(scope="module")
def ev():
    return make_eval()


def test_age_scatter_has_every_point_and_the_identity_line(ev):
    fig = evalcharts.age_scatter(ev)
    points, identity = fig.data
    assert len(points.x) == ev.n
    np.testing.assert_allclose(points.y, ev.predictions.age)
    assert identity.x == identity.y
    assert identity.x[0] <= ev.true_age.min() and identity.x[1] >= ev.predictions.age.max()


def test_age_scatter_samples_large_sets(monkeypatch, ev):
    monkeypatch.setattr(evalcharts, "MAX_SCATTER_POINTS", 50)
    fig = evalcharts.age_scatter(ev)
    assert len(fig.data[0].x) == 50
    assert f"50 of {ev.n:,} shown" in fig.layout.title.text


def test_residual_charts_use_predicted_minus_true(ev):
    hist = evalcharts.residual_histogram(ev)
    np.testing.assert_allclose(hist.data[0].x, ev.predictions.age - ev.true_age)
    by_age = evalcharts.residuals_vs_true(ev, bin_width=10)
    means = by_age.data[1]
    first = ev.residuals[(ev.true_age >= 10) & (ev.true_age < 20)].mean()
    assert means.x[0] == 15 and means.y[0] == pytest.approx(first)


def test_residuals_vs_true_rejects_a_bad_bin_width(ev):
    with pytest.raises(EvalChartError, match="bin_width"):
        evalcharts.residuals_vs_true(ev, bin_width=0)


def test_mae_by_age_bin_bars_match_the_table(ev):
    bars = evalcharts.mae_by_age_bin(ev).data[0]
    assert list(bars.x) == ev.mae_by_age_bin["bin"].astype(str).tolist()
    np.testing.assert_allclose(bars.y, ev.mae_by_age_bin["mae"])
    assert bars.text[0] == f"n={int(ev.mae_by_age_bin['n'].iloc[0])}"


@pytest.mark.parametrize("head, names", [("gender", GENDERS), ("race", RACES)])
def test_confusion_heatmap_shows_counts_with_class_names(ev, head, names):
    heat, cells = evalcharts.confusion_heatmap(ev, head).data
    counts = ev.confusion_gender if head == "gender" else ev.confusion_race
    np.testing.assert_array_equal(heat.z, counts.to_numpy())
    assert list(heat.x) == list(names) and list(heat.y) == list(names)
    assert len(cells.customdata) == len(names) ** 2  # one clickable point per cell
    assert list(cells.customdata[1]) == [names[0], names[1]]  # [true, predicted]


def test_normalised_confusion_rows_sum_to_one(ev):
    heat = evalcharts.confusion_heatmap(ev, "race", normalized=True).data[0]
    np.testing.assert_allclose(np.asarray(heat.z).sum(axis=1), 1.0)
    assert heat.text[0][0].endswith("%")


def test_cell_from_selection_reads_the_clicked_cell():
    selection = {"points": [{"x": "Asian", "y": "White", "customdata": ["White", "Asian"]}]}
    assert evalcharts.cell_from_selection(selection) == ("White", "Asian")
    assert evalcharts.cell_from_selection(SimpleNamespace(points=selection["points"])) == ("White", "Asian")
    assert evalcharts.cell_from_selection({"points": []}) is None
    assert evalcharts.cell_from_selection(None) is None


def test_confusion_cell_frame_lists_the_images_of_the_cell(ev):
    cell = evalcharts.confusion_cell_frame(ev, "race", "Black", "Asian")
    assert len(cell) == ev.confusion_race.loc["Black", "Asian"]
    assert (ev.true_race[cell["index"]] == RACES.index("Black")).all()
    assert (ev.predictions.race_probs[cell["index"]].argmax(axis=1) == RACES.index("Asian")).all()
    assert cell["confidence"].is_monotonic_decreasing
    assert cell["file"].iloc[0] == ev.files[cell["index"].iloc[0]]


def test_confusion_cell_frame_rejects_unknown_classes(ev):
    with pytest.raises(EvalChartError, match="true_name must be one of"):
        evalcharts.confusion_cell_frame(ev, "race", "Martian", "Asian")
    with pytest.raises(EvalChartError, match="head must be one of"):
        evalcharts.confusion_cell_frame(ev, "age", "a", "b")


def test_top_confusion_is_the_largest_wrong_cell(ev):
    true, pred = evalcharts.top_confusion(ev, "race")
    counts = ev.confusion_race.to_numpy().copy()
    np.fill_diagonal(counts, -1)
    assert true != pred
    assert ev.confusion_race.loc[true, pred] == counts.max()


def test_report_frame_has_a_row_per_class_and_average(ev):
    frame = evalcharts.report_frame(ev.report_race)
    assert frame["class"].tolist() == [*RACES, "macro avg", "weighted avg"]
    assert frame.loc[frame["class"] == "Asian", "recall"].item() == pytest.approx(ev.report_race["Asian"]["recall"])
    assert frame.loc[frame["class"] == "weighted avg", "support"].item() == ev.n
    with pytest.raises(EvalChartError, match="report must be"):
        evalcharts.report_frame([1, 2])


def test_roc_and_pr_curves_show_the_scores(ev):
    roc = evalcharts.roc_figure(ev)
    assert f"AUC {ev.gender_roc.score:.3f}" in roc.layout.title.text
    np.testing.assert_allclose(roc.data[1].x, ev.gender_roc.x)
    pr = evalcharts.pr_figure(ev)
    assert f"AP {ev.gender_pr.score:.3f}" in pr.layout.title.text
    assert pr.data[0].y[0] == pytest.approx(np.mean(ev.true_gender == 1))


def test_curves_explain_when_only_one_gender_is_present():
    single = make_eval(n=60, genders=(0,))
    roc = evalcharts.roc_figure(single)
    assert len(roc.data) == 1  # only the chance line
    assert "Only one gender" in roc.layout.annotations[0].text
    assert "Only one gender" in evalcharts.pr_figure(single).layout.annotations[0].text


@pytest.mark.parametrize("head", ["gender", "race"])
def test_reliability_diagram_has_the_diagonal_and_filled_bins(ev, head):
    fig = evalcharts.reliability_figure(ev, head)
    bars, diagonal, counts = fig.data
    table = ev.reliability[head].table
    assert list(diagonal.x) == [0, 1] and list(diagonal.y) == [0, 1]
    assert len(bars.x) == int((table["n"] > 0).sum())
    assert sum(counts.y) == ev.n
    assert f"ECE {ev.ece[head]:.3f}" in fig.layout.title.text


def test_subgroup_heatmap_and_tables(ev):
    fig = evalcharts.subgroup_heatmap(ev, "race_accuracy")
    row = ev.subgroups[(ev.subgroups["race"] == "Asian") & (ev.subgroups["gender"] == "female")].iloc[0]
    assert fig.data[0].z[RACES.index("Asian")][GENDERS.index("female")] == pytest.approx(row["race_accuracy"])
    assert f"n={int(row['n'])}" in fig.data[0].text[RACES.index("Asian")][GENDERS.index("female")]
    table = evalcharts.subgroup_table(ev)
    assert (table["enough"] == (table["n"] >= ev.min_group_n)).all()
    gaps = evalcharts.gap_table(ev)
    assert gaps["gap"].tolist() == [ev.gaps["age_mae"], ev.gaps["gender_accuracy"], ev.gaps["race_accuracy"]]
    with pytest.raises(EvalChartError, match="metric must be one of"):
        evalcharts.subgroup_heatmap(ev, "n")


def test_comparison_figures_have_one_series_per_run(ev):
    other = make_eval(seed=1)
    evals = {"a": ev, "b": other}
    fig = evalcharts.compare_metrics(evals)
    assert {t.name for t in fig.data} == {"a", "b"}
    assert len(fig.data) == 6  # 2 runs x 3 metrics
    mae_a = next(t for t in fig.data if t.name == "a" and t.x[0] == "age")
    assert mae_a.y[0] == pytest.approx(ev.age_mae)
    frame = evalcharts.compare_frame(evals)
    assert frame["run"].tolist() == ["a", "b"] and frame["race_accuracy"].iloc[1] == pytest.approx(other.race_accuracy)
    assert [t.name for t in evalcharts.compare_mae_by_age_bin(evals).data] == ["a", "b"]
    with pytest.raises(EvalChartError, match="at least one"):
        evalcharts.compare_metrics({})


def test_headline_and_captions(ev):
    head = evalcharts.headline(ev)
    assert head["Age MAE"] == f"{ev.age_mae:.2f} y" and head["Race accuracy"] == f"{ev.race_accuracy:.1%}"
    assert evalcharts.worst_captions(ev.worst["age"], "age")[0].startswith("true ")
    assert " · pred " in evalcharts.worst_captions(ev.worst["race"], "race")[0]


def test_existing_files_flags_missing_ones(tmp_path):
    present = tmp_path / "a.jpg"
    present.write_bytes(b"x")
    assert evalcharts.existing_files([str(present), str(tmp_path / "gone.jpg"), None]) == [True, False, False]


def test_charts_reject_what_is_not_an_evaluation():
    with pytest.raises(EvalChartError, match="expected an Evaluation"):
        evalcharts.age_scatter({"n": 3})
    with pytest.raises(EvalChartError, match="head must be one of"):
        evalcharts.confusion_heatmap(make_eval(n=30), "age")


def test_module_does_not_import_streamlit_or_tensorflow():
    code = (
        "import sys, utkface_core.evaluation.evalcharts; print('streamlit' in sys.modules, 'tensorflow' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False False"
