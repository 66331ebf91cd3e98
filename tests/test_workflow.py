import json

import numpy as np
import pytest

from tests.conftest import write_jpeg
from utkface_core.cli import main, parse_loss_weights
from utkface_core.workflow import RowView, prepare_training_data


@pytest.fixture
def folder(tmp_path, app_dir):
    root = tmp_path / "set"
    for i in range(40):
        write_jpeg(root / f"{15 + i}_{i % 2}_{i % 5}_201701011200{i:05d}.jpg.chip.jpg", seed=i)
    (root / "30_0_0_20170101999999999.jpg.chip.jpg").write_bytes(b"not a jpeg at all")
    return root


def test_row_view_reads_rows_lazily_in_the_asked_order():
    base = np.arange(5 * 2 * 2 * 3, dtype=np.uint8).reshape(5, 2, 2, 3)
    view = RowView(base, np.array([4, 1, 3]))
    assert view.shape == (3, 2, 2, 3) and view.dtype == np.uint8 and len(view) == 3
    assert np.array_equal(view[np.array([2, 0])], base[[3, 4]])
    assert np.array_equal(np.asarray(view), base[[4, 1, 3]])


def test_prepare_filters_ages_excludes_corrupt_images_and_aligns_rows(folder):
    data = prepare_training_data(folder, image_size=32, min_age=20, max_age=50, seed=0)
    assert data.frame["age"].between(20, 50).all()
    assert [e["reason"] for e in data.excluded] and "30_0_0_20170101999999999.jpg.chip.jpg" not in set(
        data.frame["file"]
    )
    assert len(data.images) == len(data.frame) == len(data.split)
    assert set(data.split) == {"train", "valid", "test"}
    assert data.images[np.array([0])].shape == (1, 32, 32, 3)


def test_prepare_refuses_an_empty_age_range(folder):
    with pytest.raises(ValueError, match="widen the age range"):
        prepare_training_data(folder, image_size=32, min_age=100, max_age=110)


@pytest.mark.parametrize(
    "text, expected", [("auto", "auto"), ("age=2,race=1.5,gender=1", {"age": 2.0, "race": 1.5, "gender": 1.0})]
)
def test_loss_weight_option_parses(text, expected):
    assert parse_loss_weights(text) == expected


def test_loss_weight_option_rejects_garbage():
    with pytest.raises(ValueError, match="HEAD=VALUE"):
        parse_loss_weights("age:2")


def test_cli_train_writes_a_complete_run(folder, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(
        [
            "train",
            "--data",
            str(folder),
            "--out",
            str(out),
            "--epochs",
            "1",
            "--image-size",
            "32",
            "--min-age",
            "15",
            "--max-age",
            "60",
            "--loss-weights",
            "age=1,race=1,gender=1",
        ]
    )
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["state"] == "completed"
    for name in ("config.json", "split.csv", "history.csv", "model.keras", "metrics.json", "status.json"):
        assert (out / name).exists(), name
    config = json.loads((out / "config.json").read_text())
    assert config["loss_weights"] == {"age": 1.0, "race": 1.0, "gender": 1.0}
    assert config["data"]["fingerprint"]


def test_cli_train_with_bad_data_folder_exits_2(tmp_path, capsys):
    assert main(["train", "--data", str(tmp_path / "none"), "--out", str(tmp_path / "r")]) == 2
    assert "does not exist" in capsys.readouterr().err


# --- jobs the pages start through the workflow -------------------------------------------------------------------


def test_evaluation_job_is_one_per_run_model_and_data(tmp_path, app_dir):
    from utkface_core.workflow import evaluation_job, evaluation_job_key

    run = tmp_path / "runs" / "r1"
    first = evaluation_job(run, 111, data_dir=None, data_tag="test", owner="a", label="Evaluating r1", spawn=False)
    again = evaluation_job(run, 111, data_dir=None, data_tag="test", owner="b", label="Evaluating r1", spawn=False)
    assert again.dir == first.dir and first.key == evaluation_job_key(run, 111, "test")
    newer = evaluation_job(run, 222, data_dir=None, data_tag="test", owner="a", label="Evaluating r1", spawn=False)
    assert newer.dir != first.dir  # a retrained model is a new evaluation


def test_evaluation_job_restarts_only_when_asked_or_stopped(tmp_path, app_dir):
    from utkface_core import runs
    from utkface_core.workflow import evaluation_job

    run = tmp_path / "runs" / "r1"
    first = evaluation_job(run, 1, data_dir=None, data_tag="t", owner="a", label="Evaluating", spawn=False)
    runs.write_status(first.dir, "failed", "boom")
    kept = evaluation_job(run, 1, data_dir=None, data_tag="t", owner="a", label="Evaluating", spawn=False)
    assert kept.dir == first.dir and kept.state == "failed"  # the page shows the failure and a Try again button
    retried = evaluation_job(
        run, 1, data_dir=None, data_tag="t", owner="a", label="Evaluating", restart=True, spawn=False
    )
    assert retried.dir != first.dir and retried.spec["args"] == {"run_dir": str(run), "data_dir": None}
