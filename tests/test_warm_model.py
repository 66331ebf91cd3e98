"""Models traced ahead (trainer.warm_up): the same start as a fresh build, used once, only for their configuration."""

from __future__ import annotations

import dataclasses
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from tests.test_training import SIZE, _data  # noqa: E402 - the same tiny seeded data set
from utkface_core.config import TrainConfig  # noqa: E402
from utkface_core.training import trainer  # noqa: E402
from utkface_core.training.lossweights import LossWeights, MultiTaskModel  # noqa: E402


@pytest.fixture(autouse=True)
def small_fast_net(monkeypatch):
    monkeypatch.setattr("utkface_core.training.model.FAST_STAGES", ((8, 1), (16, 1)))


def _config(**overrides) -> TrainConfig:
    values = {"image_size": SIZE, "epochs": 1, "batch_size": 8, "early_stopping_patience": None}
    return TrainConfig(**{**values, **overrides})


def _fresh_weights(config: TrainConfig, frame: pd.DataFrame, split: pd.Series) -> list[np.ndarray]:
    train_idx = np.flatnonzero(split.isin(["train", "valid"]).to_numpy())  # the "final" split trains on both
    prior = trainer._race_prior(frame["race"].to_numpy(), train_idx)
    import keras

    keras.utils.set_random_seed(config.seed)
    net, _ = trainer._build(config, LossWeights(), prior)
    return [np.array(w) for w in net.get_weights()]


def test_a_warm_model_starts_where_a_freshly_built_one_starts():
    images, frame, split = _data()
    config = _config()
    warm = trainer.warm_up(config, images, frame, split)
    net, _ = warm.take(LossWeights())
    fresh = _fresh_weights(config, frame, split)
    assert len(fresh) == len(net.get_weights())
    for got, want in zip(net.get_weights(), fresh, strict=True):
        np.testing.assert_array_equal(got, want)
    assert int(warm.model.optimizer.iterations.numpy()) == 0


def test_train_uses_a_matching_warm_model_without_tracing_again(tmp_path, monkeypatch):
    images, frame, split = _data()
    config = _config(batch_size=6)  # 40 rows trained on: the last batch (4) is smaller than the one traced ahead
    warm = trainer.warm_up(config, images, frame, split)

    def no_build(*args, **kwargs):
        raise AssertionError("a matching warm model must be used, not a new one built")

    traced = []
    original = MultiTaskModel.compute_loss

    def counting(self, *args, **kwargs):
        traced.append(1)  # Python runs only while a step is traced: a traced step runs as a graph
        return original(self, *args, **kwargs)

    monkeypatch.setattr(trainer, "_build", no_build)
    monkeypatch.setattr(MultiTaskModel, "compute_loss", counting)
    events = []
    result = trainer.train(
        dataclasses.replace(config, epochs=2, time_budget_s=600),  # runtime fields may differ
        images,
        frame,
        split,
        tmp_path / "run",
        report=events.append,
        warm=warm,
    )
    assert result.state == "completed", result.message
    assert traced == []
    assert any("traced ahead" in str(e.get("message")) for e in events)


def test_a_warm_model_of_another_configuration_is_ignored(tmp_path):
    images, frame, split = _data()
    warm = trainer.warm_up(_config(seed=1), images, frame, split)
    result = trainer.train(_config(seed=2), images, frame, split, tmp_path / "run", warm=warm)
    assert result.state == "completed", result.message
    assert not warm.used


def test_the_jobs_loss_weights_drive_the_warm_model():
    images, frame, split = _data()
    warm = trainer.warm_up(_config(), images, frame, split)
    weights = LossWeights({"age": 0.5, "gender": 0.0, "race": 3.0})
    _, model = warm.take(weights)
    np.testing.assert_allclose(model.fixed_weights.numpy(), [0.5, 0.0, 3.0])
    assert model.loss_weights_ref is weights
    weights.set(gender=2.0)  # a live change reaches the warm model's variables
    np.testing.assert_allclose(model.fixed_weights.numpy(), [0.5, 2.0, 3.0])


def test_a_warm_model_serves_one_training_only():
    images, frame, split = _data()
    warm = trainer.warm_up(_config(), images, frame, split)
    warm.take(LossWeights())
    with pytest.raises(RuntimeError, match="one training"):
        warm.take(LossWeights())


def test_preset_defaults_and_the_same_values_spelled_out_share_a_warm_model():
    prior = np.ones(5)
    default = TrainConfig()
    spelled = TrainConfig(image_size=48, learning_rate=default.resolved_learning_rate(), epochs=200, time_budget_s=60)
    assert trainer._warm_key(default, prior) == trainer._warm_key(spelled, prior)
    assert trainer._warm_key(default, prior) != trainer._warm_key(TrainConfig(batch_size=64), prior)
    assert trainer._warm_key(default, prior) != trainer._warm_key(default, np.arange(1, 6))


def test_warm_up_rejects_inputs_that_do_not_fit_the_config():
    images, frame, split = _data()
    with pytest.raises(trainer.TrainInputError, match="image_size"):
        trainer.warm_up(_config(image_size=48), images, frame, split)
