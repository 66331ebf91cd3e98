"""Tests of utkface_core.evaluation.modelcard: sections, numbers, run-folder reading and bad arguments."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from utkface_core.evaluation.evaluation import Predictions, evaluate_arrays
from utkface_core.evaluation.modelcard import render_model_card

CONFIG = {
    "image_size": 64,
    "min_age": 10,
    "max_age": 65,
    "preset": "fast",
    "seed": 1234,
    "split_method": "stratified",
    "loss_weights": {"age": 0.25, "gender": 1.5, "race": 2.0},
    "epochs": 17,
    "learning_rate": 0.0007,
    "optimizer": {"name": "adam", "beta_1": 0.9},
    "data": {"source": "/data/UTKFace", "fingerprint": "f00dfeedcafe1234"},
}
METRICS = {"age_mae": 7.125, "gender_accuracy": 0.875, "race_accuracy": 0.7625, "n": 480}


def _evaluation(min_group_n: int = 2):
    """8 samples: White male x4 (age error 1, all right), Black female x4 (error 3, gender 2 of 4 right)."""
    true_gender = np.array([0] * 4 + [1] * 4)
    true_race = np.array([0] * 4 + [1] * 4)
    p_female = np.array([0.1] * 4 + [0.9, 0.9, 0.2, 0.2])
    race_probs = np.full((8, 5), 0.01)
    race_probs[np.arange(8), true_race] = 0.96
    preds = Predictions(np.array([31.0] * 4 + [33.0] * 4), np.stack([1 - p_female, p_female], 1), race_probs)
    return evaluate_arrays(np.full(8, 30.0), true_gender, true_race, preds, min_group_n=min_group_n)


def test_card_has_the_key_sections():
    card = render_model_card(CONFIG, METRICS, _evaluation())
    for heading in (
        "# Model card",
        "## Data",
        "## Training",
        "## Held-out test metrics",
        "## Subgroup performance",
        "## Intended use",
        "## Limitations",
        "## Ethical considerations",
    ):
        assert heading in card


def test_card_shows_data_and_training_settings():
    card = render_model_card(CONFIG, METRICS, None)
    assert "/data/UTKFace" in card and "f00dfeedcafe1234" in card
    assert "10-65" in card
    assert "stratified" in card and "1234" in card and "fast" in card
    assert "| gender | 1.5 |" in card and "| race | 2 |" in card
    assert "| epochs | 17 |" in card and "| learning_rate | 0.0007 |" in card
    assert "| optimizer.name | adam |" in card


def test_card_shows_held_out_metrics():
    card = render_model_card(CONFIG, METRICS, None)
    assert "| Test images | 480 |" in card
    assert "7.12 years" in card or "7.13 years" in card
    assert "87.5%" in card and "76.2%" in card


def test_card_shows_subgroup_table_and_gaps():
    card = render_model_card(CONFIG, METRICS, _evaluation())
    assert "| White | male | 4 | 1.00 years | 100.0% | 100.0% |" in card
    assert "| Black | female | 4 | 3.00 years | 50.0% | 100.0% |" in card
    # Gaps: age MAE 3 - 1 = 2 years, gender accuracy 100% - 50% = 50 points.
    assert "| Age MAE | 2.00 years | White male | Black female |" in card
    assert "50.0 percentage points" in card
    assert "at least 2 test images" in card


def test_card_says_gaps_need_big_enough_cells():
    card = render_model_card(CONFIG, METRICS, _evaluation(min_group_n=20))
    assert "too few cells with enough images" in card


def test_card_without_evaluation_says_so():
    card = render_model_card(CONFIG, METRICS, None)
    assert "No subgroup evaluation available" in card


def test_card_covers_limitations_and_intended_use():
    card = render_model_card(CONFIG, METRICS, None).lower()
    for phrase in ("education", "multi-task", "bias", "apparent", "socially", "identity", "demo", "ages 10-65"):
        assert phrase in card


def test_card_warns_for_demo_models():
    config = dict(CONFIG, data={"source": "demo", "fingerprint": "x"})
    card = render_model_card(config, METRICS, None)
    assert "synthetic demo data set" in card and "meaningless" in card


def test_card_reads_a_run_folder(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(CONFIG))
    (tmp_path / "metrics.json").write_text(json.dumps(METRICS))
    pd.DataFrame({"path": ["a"] * 6, "split": ["train", "train", "train", "valid", "test", "test"]}).to_csv(
        tmp_path / "split.csv", index=False
    )
    card = render_model_card(tmp_path, None, None)
    assert f"# Model card: {tmp_path.name}" in card
    assert "| train | 3 |" in card and "| valid | 1 |" in card and "| test | 2 |" in card and "| total | 6 |" in card
    assert "87.5%" in card


def test_given_metrics_override_the_run_metrics(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(CONFIG))
    (tmp_path / "metrics.json").write_text(json.dumps(METRICS))
    card = render_model_card(tmp_path, {"age_mae": 3.5, "n": 9}, None)
    assert "3.50 years" in card and "| Test images | 9 |" in card


def test_card_escapes_pipes_in_values():
    config = dict(CONFIG, note="a|b")
    card = render_model_card(config, METRICS, None)
    assert "a\\|b" in card


def test_card_for_a_minimal_config_does_not_crash():
    card = render_model_card({}, {}, None)
    assert "not recorded" in card and "No held-out metrics recorded yet" in card


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((42, METRICS, None), "run folder path or a config dict"),
        ((CONFIG, [1, 2], None), "metrics must be a dict"),
        ((CONFIG, METRICS, {"n": 3}), "evaluation must be an Evaluation"),
    ],
)
def test_bad_arguments_raise(args, message):
    with pytest.raises(ValueError, match=message):
        render_model_card(*args)


def test_missing_run_folder_raises(tmp_path):
    with pytest.raises(ValueError, match="config.json"):
        render_model_card(tmp_path / "nope", None, None)


def test_damaged_config_raises(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="cannot read"):
        render_model_card(Path(tmp_path), None, None)


def test_card_puts_recorded_and_evaluated_metrics_side_by_side():
    card = render_model_card(CONFIG, METRICS, _evaluation())
    assert "| Metric | Recorded by training | This evaluation |" in card
    assert "| Test images | 480 | 8 |" in card
    # Evaluation: age error 1 x4 and 3 x4 -> MAE 2; gender 6 of 8 right.
    assert "| Age MAE | 7.12 years | 2.00 years |" in card
    assert "| Gender accuracy | 87.5% | 75.0% |" in card


def test_card_marks_zero_gaps_as_all_equal():
    card = render_model_card(CONFIG, METRICS, _evaluation())
    assert "| Race accuracy | 0.0 percentage points | all equal | all equal |" in card
