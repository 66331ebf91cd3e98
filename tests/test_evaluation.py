"""Tests of the evaluation module: hand-computed metrics, tables, calibration, JSON contract and evaluate_run."""

from __future__ import annotations

import importlib
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from utkface_core.evaluation.evaluation import (
    EVALUATION_PHASES,
    EvaluationError,
    Predictions,
    evaluate_arrays,
    evaluate_run,
    reliability_table,
)
from utkface_core.labels import GENDERS, RACES

# ------------------------------------------------------------------------------------------------------------
# A 6-sample case computed by hand.
#   true age  20 30 40 50 25 35 ; predicted 22 27 40 56 25 34 -> errors +2 -3 0 +6 0 -1
#   MAE = 12/6 = 2.0 ; RMSE = sqrt((4+9+0+36+0+1)/6) = sqrt(50/6)
#   gender true 0 0 0 1 1 1 ; P(female) .1 .6 .2 .9 .3 .8 -> predicted 0 1 0 1 0 1 -> 4/6 correct
#   race   true 0 0 1 1 2 2 ; predicted 0 1 1 1 2 0 -> 4/6 correct
TRUE_AGE = [20, 30, 40, 50, 25, 35]
PRED_AGE = [22, 27, 40, 56, 25, 34]
TRUE_GENDER = [0, 0, 0, 1, 1, 1]
P_FEMALE = [0.1, 0.6, 0.2, 0.9, 0.3, 0.8]
TRUE_RACE = [0, 0, 1, 1, 2, 2]
PRED_RACE = [0, 1, 1, 1, 2, 0]


def _race_probs(pred: list[int], confidence: float = 0.96) -> np.ndarray:
    other = (1 - confidence) / (len(RACES) - 1)
    probs = np.full((len(pred), len(RACES)), other)
    probs[np.arange(len(pred)), pred] = confidence
    return probs


def _hand_case(**kwargs) -> object:
    p_female = np.array(P_FEMALE)
    preds = Predictions(np.array(PRED_AGE, float), np.stack([1 - p_female, p_female], axis=1), _race_probs(PRED_RACE))
    return evaluate_arrays(TRUE_AGE, TRUE_GENDER, TRUE_RACE, preds, **kwargs)


def test_age_mae_and_rmse_match_hand_computation():
    ev = _hand_case()
    assert ev.n == 6
    assert ev.age_mae == pytest.approx(2.0)
    assert ev.age_rmse == pytest.approx(np.sqrt(50 / 6))
    np.testing.assert_allclose(ev.residuals, [2, -3, 0, 6, 0, -1])


def test_accuracies_match_hand_computation():
    ev = _hand_case()
    assert ev.gender_accuracy == pytest.approx(4 / 6)
    assert ev.race_accuracy == pytest.approx(4 / 6)


def test_gender_confusion_matches_hand_computation():
    ev = _hand_case()
    assert ev.confusion_gender.to_numpy().tolist() == [[2, 1], [1, 2]]
    assert list(ev.confusion_gender.index) == list(GENDERS)
    assert list(ev.confusion_gender.columns) == list(GENDERS)


def test_race_confusion_has_every_class_and_sums_to_n():
    ev = _hand_case()
    counts = ev.confusion_race
    assert list(counts.index) == list(RACES) and list(counts.columns) == list(RACES)
    assert counts.to_numpy().sum() == 6
    assert counts.loc["White"].tolist() == [1, 1, 0, 0, 0]
    assert counts.loc["Asian"].tolist() == [1, 0, 1, 0, 0]


def test_normalized_confusion_rows_sum_to_one_and_empty_rows_are_zero():
    ev = _hand_case()
    norm = ev.confusion_race_normalized
    assert not norm.isna().to_numpy().any()
    np.testing.assert_allclose(norm.loc[["White", "Black", "Asian"]].sum(axis=1), 1.0)
    assert norm.loc["Indian"].tolist() == [0.0] * 5 and norm.loc["Others"].tolist() == [0.0] * 5
    assert norm.loc["Asian", "White"] == pytest.approx(0.5)
    np.testing.assert_allclose(ev.confusion_gender_normalized.sum(axis=1), 1.0)


def test_classification_report_lists_every_class():
    ev = _hand_case()
    for name in RACES:
        assert name in ev.report_race
    assert ev.report_race["Indian"]["support"] == 0
    assert ev.report_gender["female"]["recall"] == pytest.approx(2 / 3)


def test_mae_by_age_bin_matches_hand_computation():
    ev = _hand_case()
    table = ev.mae_by_age_bin.set_index("bin")
    # 20,25 -> errors 2,0 ; 30,35 -> 3,1 ; 40 -> 0 ; 50 -> 6 ; nothing in 10-19 and no outer bins.
    assert list(table.index) == ["10-19", "20-29", "30-39", "40-49", "50-64"]
    assert table.loc["20-29", "n"] == 2 and table.loc["20-29", "mae"] == pytest.approx(1.0)
    assert table.loc["30-39", "mae"] == pytest.approx(2.0)
    assert table.loc["50-64", "mae"] == pytest.approx(6.0)
    assert table.loc["10-19", "n"] == 0 and np.isnan(table.loc["10-19", "mae"])


def test_custom_age_bins_add_outer_bins_only_when_occupied():
    ev = _hand_case(age_bins=(30, 45))
    table = ev.mae_by_age_bin.set_index("bin")
    assert list(table.index) == ["<30", "30-44", "45+"]
    assert table["n"].tolist() == [2, 3, 1]


def test_gender_roc_auc_matches_pair_count():
    ev = _hand_case()
    # Female scores .9 .3 .8 vs male .1 .6 .2: 8 of 9 pairs ranked correctly.
    assert ev.gender_roc.score == pytest.approx(8 / 9)
    assert ev.gender_roc.x[0] == 0 and ev.gender_roc.y[-1] == 1
    assert 0 < ev.gender_pr.score <= 1


def test_gender_curves_are_none_when_one_class_only():
    preds = Predictions(np.array([20.0, 30.0]), np.array([[0.9, 0.1], [0.8, 0.2]]), _race_probs([0, 0]))
    ev = evaluate_arrays([20, 30], [0, 0], [0, 0], preds)
    assert ev.gender_roc.score is None and ev.gender_pr.score is None


def test_subgroup_counts_sum_to_n_and_cover_every_cell():
    ev = _hand_case()
    table = ev.subgroups
    assert len(table) == len(RACES) * len(GENDERS)
    assert table["n"].sum() == 6
    white_male = table[(table["race"] == "White") & (table["gender"] == "male")].iloc[0]
    assert white_male["n"] == 2
    assert white_male["age_mae"] == pytest.approx(2.5)
    assert white_male["gender_accuracy"] == pytest.approx(0.5)
    assert white_male["race_accuracy"] == pytest.approx(0.5)


def _gap_case(min_group_n: int):
    """White male n=25 (all right, error 1), Black female n=25 (gender 20/25, error 3), Asian male n=5 (all wrong)."""
    sizes = [(0, 0, 25, 25, 1.0), (1, 1, 25, 20, 3.0), (2, 0, 5, 0, 50.0)]
    ages, genders, races, p_female, pred_age = [], [], [], [], []
    for race, gender, n, right, err in sizes:
        for i in range(n):
            correct = i < right
            ages.append(30)
            pred_age.append(30 + err)
            genders.append(gender)
            races.append(race)
            predicted_female = gender == 1 if correct else gender == 0
            p_female.append(0.9 if predicted_female else 0.1)
    p_female = np.array(p_female)
    preds = Predictions(np.array(pred_age, float), np.stack([1 - p_female, p_female], 1), _race_probs(races))
    return evaluate_arrays(ages, genders, races, preds, min_group_n=min_group_n)


def test_gaps_only_use_cells_with_enough_samples():
    ev = _gap_case(min_group_n=20)
    assert ev.gaps["gender_accuracy"] == pytest.approx(1.0 - 0.8)
    assert ev.gaps["age_mae"] == pytest.approx(3.0 - 1.0)
    assert ev.gaps["race_accuracy"] == pytest.approx(0.0)
    assert ev.gap_cells["age_mae"] == {"best": "White male", "worst": "Black female"}


def test_gaps_include_small_cells_when_threshold_lowered():
    ev = _gap_case(min_group_n=5)
    assert ev.gaps["gender_accuracy"] == pytest.approx(1.0)
    assert ev.gaps["age_mae"] == pytest.approx(49.0)


def test_gaps_are_none_with_fewer_than_two_eligible_cells():
    ev = _hand_case()  # every cell has fewer than the default 20 samples
    assert ev.gaps == {"age_mae": None, "gender_accuracy": None, "race_accuracy": None}


def test_ece_is_zero_when_perfectly_calibrated():
    # Confidence 0.8 and 8 of 10 right; race confidence 0.6 and 6 of 10 right.
    gender_true = np.array([1] * 8 + [0] * 2)
    gender_probs = np.tile([0.2, 0.8], (10, 1))
    race_true = np.array([3] * 6 + [0] * 4)
    race_probs = np.tile([0.1, 0.1, 0.1, 0.6, 0.1], (10, 1))
    preds = Predictions(np.full(10, 30.0), gender_probs, race_probs)
    ev = evaluate_arrays(np.full(10, 30.0), gender_true, race_true, preds)
    assert ev.ece["gender"] == pytest.approx(0.0, abs=1e-9)
    assert ev.ece["race"] == pytest.approx(0.0, abs=1e-9)
    table = ev.reliability["gender"].table
    assert table["n"].sum() == 10
    row = table[table["n"] > 0].iloc[0]
    assert row["confidence"] == pytest.approx(0.8) and row["accuracy"] == pytest.approx(0.8)


def test_ece_is_positive_when_over_confident():
    true = np.array([0, 1] * 5)
    probs = np.tile([0.99, 0.01], (10, 1))  # 99% sure, right half the time
    rel = reliability_table(probs, true, n_bins=10)
    assert rel.ece == pytest.approx(0.49)
    assert len(rel.table) == 10


def test_reliability_rejects_zero_bins():
    with pytest.raises(ValueError, match="n_bins"):
        reliability_table(np.tile([0.5, 0.5], (2, 1)), np.array([0, 1]), n_bins=0)


def test_worst_errors_rank_by_error_and_wrong_confidence():
    ev = _hand_case(files=[f"f{i}.jpg" for i in range(6)], top_k=3)
    assert ev.worst["age"]["index"].tolist() == [3, 1, 0]
    assert ev.worst["age"]["file"].tolist() == ["f3.jpg", "f1.jpg", "f0.jpg"]
    # Wrong gender: sample 4 (male at 0.7) before sample 1 (female at 0.6).
    assert ev.worst["gender"]["index"].tolist() == [4, 1]
    assert ev.worst["gender"]["confidence"].tolist() == pytest.approx([0.7, 0.6])
    assert set(ev.worst["race"]["index"]) == {1, 5}


def test_worst_errors_file_column_is_empty_without_files():
    ev = _hand_case()
    assert ev.worst["age"]["file"].isna().all()


def test_json_dict_has_the_cli_contract_and_serialises():
    ev = _hand_case()
    data = ev.to_json_dict()
    text = json.dumps(data, allow_nan=False)
    assert json.loads(text)["n"] == 6
    for key in (
        "n",
        "age_mae",
        "age_rmse",
        "gender_accuracy",
        "race_accuracy",
        "confusion",
        "report",
        "subgroups",
        "gaps",
        "ece",
    ):
        assert key in data
    assert data["confusion"]["gender"] == [[2, 1], [1, 2]]
    assert all(type(v) is int for row in data["confusion"]["race"] for v in row)
    assert len(data["subgroups"]) == 10
    # Empty cells have no MAE: null, not NaN.
    assert any(row["age_mae"] is None for row in data["subgroups"])
    assert set(data["ece"]) == {"gender", "race"}


def test_predictions_accept_column_age():
    preds = Predictions(np.array([[20.0], [30.0]]), np.tile([0.5, 0.5], (2, 1)), _race_probs([0, 1]))
    assert preds.age.shape == (2,)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"true_age": []}, "empty"),
        ({"true_age": TRUE_AGE[:5]}, "same length"),
        ({"true_gender": [0, 0, 0, 1, 1, 2]}, "true_gender"),
        ({"true_race": [0, 0, 1, 1, 2, 5]}, "true_race"),
        ({"true_race": [0, 0, 1, 1, 2, -1]}, "true_race"),
        ({"true_gender": [0, 0, 0, 1, 1, 0.5]}, "whole-number"),
        ({"true_age": [20, 30, 40, 50, 25, np.nan]}, "NaN"),
        ({"true_age": ["a"] * 6}, "numeric"),
        ({"files": ["a.jpg"]}, "same length"),
        ({"age_bins": (30, 20)}, "increasing"),
        ({"min_group_n": 0}, "min_group_n"),
    ],
)
def test_bad_arguments_raise(kwargs, message):
    p_female = np.array(P_FEMALE)
    preds = Predictions(np.array(PRED_AGE, float), np.stack([1 - p_female, p_female], 1), _race_probs(PRED_RACE))
    args = {"true_age": TRUE_AGE, "true_gender": TRUE_GENDER, "true_race": TRUE_RACE}
    extra = {k: v for k, v in kwargs.items() if k not in args}
    args.update({k: v for k, v in kwargs.items() if k in args})
    with pytest.raises(ValueError, match=message):
        evaluate_arrays(args["true_age"], args["true_gender"], args["true_race"], preds, **extra)


@pytest.mark.parametrize(
    ("gender_probs", "race_probs", "message"),
    [
        (np.tile([0.5, 0.5], (5, 1)), _race_probs(PRED_RACE), r"gender_probs must have shape \(N, 2\)"),
        (np.tile([0.5, 0.5], (6, 1)), _race_probs(PRED_RACE)[:, :4], r"race_probs must have shape \(N, 5\)"),
        (np.tile([2.0, -1.0], (6, 1)), _race_probs(PRED_RACE), "not logits"),
        (np.tile([0.5, 0.2], (6, 1)), _race_probs(PRED_RACE), "sum to 1"),
        (np.tile([np.nan, 0.5], (6, 1)), _race_probs(PRED_RACE), "NaN"),
    ],
)
def test_bad_probabilities_raise(gender_probs, race_probs, message):
    preds = Predictions(np.array(PRED_AGE, float), gender_probs, race_probs)
    with pytest.raises(ValueError, match=message):
        evaluate_arrays(TRUE_AGE, TRUE_GENDER, TRUE_RACE, preds)


def test_preds_must_be_predictions():
    with pytest.raises(EvaluationError, match="Predictions"):
        evaluate_arrays(TRUE_AGE, TRUE_GENDER, TRUE_RACE, {"age": PRED_AGE})


def test_module_does_not_import_tensorflow():
    code = (
        "import sys, utkface_core.evaluation.evaluation, utkface_core.evaluation.modelcard; "
        "print('tensorflow' in sys.modules)"
    )
    import subprocess

    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert out.stdout.strip() == "False"


# ------------------------------------------------------------------------------------------------------------
# evaluate_run on a tiny run folder: a tiny Keras model and a few generated images.

IMAGE_SIZE = 8


@pytest.fixture()
def core():
    """The real imagecache and prediction modules (monkeypatched in the cache test)."""
    return {
        "imagecache": importlib.import_module("utkface_core.data.imagecache"),
        "prediction": importlib.import_module("utkface_core.inference.prediction"),
    }


@pytest.fixture(scope="module")
def tiny_model_file(tmp_path_factory) -> Path:
    """A tiny functional Keras model obeying the model contract (0..255 input, dict of age/gender/race)."""
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((IMAGE_SIZE, IMAGE_SIZE, 3))
    x = keras.layers.Flatten()(keras.layers.Rescaling(1 / 255)(inputs))
    outputs = {
        "age": keras.layers.Dense(1, name="age", bias_initializer=keras.initializers.Constant(30.0))(x),
        "gender": keras.layers.Dense(2, activation="softmax", name="gender")(x),
        "race": keras.layers.Dense(5, activation="softmax", name="race")(x),
    }
    model = keras.Model(inputs, outputs)
    path = tmp_path_factory.mktemp("model") / "model.keras"
    model.save(path)
    return path


def _write_images(folder: Path, labels: list[tuple[int, int, int]]) -> list[Path]:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i, (age, gender, race) in enumerate(labels):
        path = folder / f"{age}_{gender}_{race}_2017010100000{i:04d}.png"
        Image.fromarray(rng.integers(0, 256, (IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


LABELS = [(20, 0, 0), (35, 1, 1), (50, 0, 2), (28, 1, 3), (61, 0, 4), (44, 1, 0), (33, 0, 1), (70, 1, 2)]


@pytest.fixture()
def run_dir(tmp_path, monkeypatch, tiny_model_file) -> Path:
    """A run folder: config, split (5 test rows, one aged 70 outside 10-65 for data_dir tests), model."""
    monkeypatch.setenv("UTKFACE_APP_DIR", str(tmp_path / "app"))
    monkeypatch.setenv("UTKFACE_RUNS_DIR", str(tmp_path / "app" / "runs"))
    images = _write_images(tmp_path / "data", LABELS)
    run = tmp_path / "app" / "runs" / "run1"
    run.mkdir(parents=True)
    shutil.copy(tiny_model_file, run / "model.keras")
    config = {
        "image_size": IMAGE_SIZE,
        "min_age": 10,
        "max_age": 65,
        "preset": "tiny",
        "seed": 0,
        "loss_weights": {"age": 1.0, "gender": 1.0, "race": 1.0},
        "data": {"source": str(tmp_path / "data"), "fingerprint": "abc"},
    }
    (run / "config.json").write_text(json.dumps(config))
    splits = ["train", "train", "test", "test", "test", "test", "valid", "test"]
    pd.DataFrame(
        {
            "path": [str(p) for p in images],
            "file": [p.name for p in images],
            "age": [a for a, _, _ in LABELS],
            "gender": [g for _, g, _ in LABELS],
            "race": [r for _, _, r in LABELS],
            "split": splits,
        }
    ).to_csv(run / "split.csv", index=False)
    return run


def _expected(run: Path, rows: list[int]) -> dict:
    """Predictions of the run's model, computed directly, for the given LABELS rows."""
    import keras
    from PIL import Image

    split = pd.read_csv(run / "split.csv")
    images = np.stack([np.asarray(Image.open(split.loc[i, "path"]).convert("RGB")) for i in rows])
    out = keras.saving.load_model(run / "model.keras").predict(images.astype(np.float32), verbose=0)
    ages = np.array([LABELS[i][0] for i in rows], float)
    return {"age_mae": float(np.mean(np.abs(np.asarray(out["age"]).reshape(-1) - ages)))}


def test_evaluate_run_uses_the_test_rows(run_dir, core):
    ev = evaluate_run(run_dir)
    assert ev.n == 5
    assert ev.excluded == [] and not ev.cached
    assert sorted(ev.true_age.tolist()) == [28, 44, 50, 61, 70]
    assert ev.age_mae == pytest.approx(_expected(run_dir, [2, 3, 4, 5, 7])["age_mae"], rel=1e-4)
    assert ev.confusion_race.to_numpy().sum() == 5


def test_evaluate_run_reports_progress(run_dir, core):
    calls = []
    evaluate_run(run_dir, progress=lambda done, total: calls.append((done, total)))
    assert calls and calls[-1] == (5, 5)


def test_evaluate_run_names_its_phases(run_dir, core, tmp_path):
    phases = []
    evaluate_run(run_dir, on_phase=phases.append)
    assert phases == ["decoding", "predicting"]
    phases.clear()
    evaluate_run(run_dir, on_phase=phases.append)
    assert phases == ["cached"]
    phases.clear()
    evaluate_run(run_dir, data_dir=tmp_path / "data", on_phase=phases.append)
    assert phases == ["indexing", "decoding", "predicting"]
    assert set(phases) <= set(EVALUATION_PHASES)


def test_evaluate_run_second_call_hits_the_cache(run_dir, core, monkeypatch):
    first = evaluate_run(run_dir)
    assert len(list((run_dir / "evaluation").glob("*.json"))) == 1
    assert len(list((run_dir / "evaluation").glob("*.npz"))) == 1

    def fail(*_, **__):
        raise AssertionError("decoding or inference ran despite a cached result")

    monkeypatch.setattr(core["imagecache"], "build_image_cache", fail)
    monkeypatch.setattr(core["prediction"], "load_model", fail)
    second = evaluate_run(run_dir)
    assert second.cached
    assert second.age_mae == pytest.approx(first.age_mae)
    assert second.to_json_dict() == first.to_json_dict()
    assert second.files == first.files


def test_evaluate_run_cache_is_invalidated_by_a_new_model(run_dir, core):
    evaluate_run(run_dir)
    model = run_dir / "model.keras"
    st = model.stat()
    os.utime(model, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    again = evaluate_run(run_dir)
    assert not again.cached
    assert len(list((run_dir / "evaluation").glob("*.json"))) == 2


def test_evaluate_run_ignores_a_damaged_cache(run_dir, core):
    evaluate_run(run_dir)
    for npz in (run_dir / "evaluation").glob("*.npz"):
        npz.write_bytes(b"garbage")
    again = evaluate_run(run_dir)
    assert not again.cached and again.n == 5


def test_evaluate_run_excludes_undecodable_images(run_dir, core):
    split = pd.read_csv(run_dir / "split.csv")
    Path(split.loc[2, "path"]).write_bytes(b"not an image")
    ev = evaluate_run(run_dir)
    assert ev.n == 4
    assert len(ev.excluded) == 1
    assert Path(ev.excluded[0]["file"]).name == split.loc[2, "file"]
    assert ev.to_json_dict()["n_excluded"] == 1


def test_evaluate_run_with_data_dir_filters_to_the_run_age_range(run_dir, core, tmp_path):
    ev = evaluate_run(run_dir, data_dir=tmp_path / "data")
    assert ev.n == 7  # all eight images but the 70-year-old, outside the run's 10-65
    assert 70 not in ev.true_age


def test_evaluate_run_with_given_age_range(run_dir, core, tmp_path):
    ev = evaluate_run(run_dir, data_dir=tmp_path / "data", min_age=30, max_age=50)
    assert sorted(ev.true_age.tolist()) == [33, 35, 44, 50]


def test_evaluate_run_rejects_a_folder_without_config(tmp_path):
    with pytest.raises(ValueError, match="config.json"):
        evaluate_run(tmp_path)


def test_evaluate_run_rejects_a_run_without_model(run_dir):
    (run_dir / "model.keras").unlink()
    with pytest.raises(ValueError, match="model.keras"):
        evaluate_run(run_dir)


def test_evaluate_run_rejects_an_empty_age_range(run_dir, core):
    with pytest.raises(ValueError, match="no images"):
        evaluate_run(run_dir, min_age=100, max_age=110)


def test_evaluate_run_rejects_inverted_age_range(run_dir):
    with pytest.raises(ValueError, match="min_age"):
        evaluate_run(run_dir, min_age=50, max_age=20)


def test_evaluate_run_rejects_a_missing_data_dir(run_dir, tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        evaluate_run(run_dir, data_dir=tmp_path / "nowhere")
