"""TensorBoard event files: the callback's tags and values, read back with TensorBoard's own event reader."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402
from tensorboard.util.tensor_util import make_ndarray  # noqa: E402

from tests.models import tiny_training_data  # noqa: E402
from utkface_core.config import TrainConfig  # noqa: E402
from utkface_core.training.tensorboard_log import LOG_DIR, TensorBoardLog, scalar_tag  # noqa: E402
from utkface_core.training.trainer import train  # noqa: E402

SIZE = 32


def _scalars(folder) -> dict[str, list[tuple[int, float]]]:
    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    tags = acc.Tags()
    out = {}
    # TF2's tf.summary.scalar writes tensor summaries; older writers write scalar summaries. Accept both.
    for tag in tags.get("tensors", []):
        out[tag] = [(e.step, float(make_ndarray(e.tensor_proto))) for e in acc.Tensors(tag)]
    for tag in tags.get("scalars", []):
        out[tag] = [(e.step, float(e.value)) for e in acc.Scalars(tag)]
    return out


@pytest.mark.parametrize(
    "key, tag",
    [
        ("age_mae", "age/mae"),
        ("gender_loss", "gender/loss"),
        ("race_accuracy", "race/accuracy"),
        ("loss", "total/loss"),
        ("w_age", None),
        ("lr", None),
    ],
)
def test_scalar_tag_groups_keys_by_head(key, tag):
    assert scalar_tag(key) == tag


class _FakeOptimizer:
    learning_rate = 0.0025


class _FakeModel:
    optimizer = _FakeOptimizer()


def test_callback_writes_per_head_scalars_weights_and_learning_rate(tmp_path):
    weights = {"age": 2.0, "gender": 1.0, "race": 1.5}
    callback = TensorBoardLog(tmp_path / LOG_DIR, weights_fn=lambda: dict(weights))
    callback.set_model(_FakeModel())
    callback.on_train_begin()
    for epoch in range(3):
        weights["age"] = 2.0 - 0.5 * epoch
        callback.on_epoch_end(
            epoch,
            {
                "loss": 5.0 - epoch,
                "age_mae": 9.0 - epoch,
                "gender_accuracy": 0.6,
                "val_age_mae": 10.0 - epoch,
                "val_race_accuracy": 0.3 + 0.1 * epoch,
                "val_loss": float("nan"),
            },
        )
    callback.on_train_end()

    train_scalars = _scalars(tmp_path / LOG_DIR / "train")
    valid_scalars = _scalars(tmp_path / LOG_DIR / "validation")
    assert train_scalars["age/mae"] == [(1, 9.0), (2, 8.0), (3, 7.0)]
    assert train_scalars["total/loss"][-1] == (3, 3.0)
    assert [v for _, v in train_scalars["weights/age"]] == [2.0, 1.5, 1.0]
    assert train_scalars["weights/race"][0] == (1, 1.5)
    assert train_scalars["learning_rate"][0] == (1, pytest.approx(0.0025))
    assert valid_scalars["age/mae"][0] == (1, 10.0)  # same tag as train: one chart with both curves
    assert valid_scalars["race/accuracy"][2][1] == pytest.approx(0.5)
    assert "total/loss" not in valid_scalars  # a NaN is left out, not written


def test_training_run_folder_has_readable_event_files(tmp_path, monkeypatch):
    monkeypatch.setattr("utkface_core.training.model.FAST_STAGES", ((8, 1), (16, 1)))
    images, frame, split = tiny_training_data((24, 6, 6), SIZE, folder="/d/")
    config = TrainConfig(
        image_size=SIZE,
        epochs=2,
        batch_size=8,
        augment=False,
        early_stopping_patience=None,
        loss_weights={"age": 2.0, "gender": 1.0, "race": 1.5},
    )
    keras.utils.set_random_seed(0)
    result = train(config, images, frame, split, tmp_path / "run")
    assert result.state == "completed", result.message

    train_scalars = _scalars(tmp_path / "run" / LOG_DIR / "train")
    valid_scalars = _scalars(tmp_path / "run" / LOG_DIR / "validation")
    history = pd.read_csv(tmp_path / "run" / "history.csv")
    for head, metric in (("age", "mae"), ("gender", "accuracy"), ("race", "accuracy")):
        assert [step for step, _ in train_scalars[f"{head}/{metric}"]] == [1, 2]
        assert valid_scalars[f"{head}/{metric}"][-1][1] == pytest.approx(
            history[f"val_{head}_{metric}"].iloc[-1], rel=1e-5
        )
        assert f"{head}/loss" in train_scalars
        assert train_scalars[f"weights/{head}"][0][1] == pytest.approx(config.loss_weights[head])
    assert train_scalars["learning_rate"][-1][1] == pytest.approx(history["lr"].iloc[-1], rel=1e-5)
