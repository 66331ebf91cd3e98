"""Quality levers of the training recipe, each on tiny seeded data: what it computes and that a run uses it."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from utkface_core.training.lossweights import LossWeights, MultiTaskModel  # noqa: E402
from utkface_core.training.model import build_model  # noqa: E402

SIZE = 16


@pytest.fixture(autouse=True)
def small_fast_net(monkeypatch):
    monkeypatch.setattr("utkface_core.training.model.FAST_STAGES", ((8, 1), (16, 1)))


def _targets(races: np.ndarray) -> dict:
    n = len(races)
    return {
        "age": np.full((n, 1), 30.0, "float32"),
        "gender": np.eye(2, dtype="float32")[np.zeros(n, int)],
        "race": np.eye(5, dtype="float32")[races],
    }


def test_logit_adjusted_race_loss_is_cross_entropy_of_prior_shifted_logits():
    net = build_model("fast", SIZE, 65.0, min_age=10.0)
    prior = np.array([50.0, 20.0, 15.0, 10.0, 5.0])
    model = MultiTaskModel(net, LossWeights(), race_prior=prior, race_tau=1.0)
    plain = MultiTaskModel(net, LossWeights())
    probs = np.array([[0.5, 0.2, 0.1, 0.1, 0.1], [0.1, 0.1, 0.1, 0.1, 0.6]], "float32")
    y = _targets(np.array([4, 0]))
    y_pred = {"age": np.full((2, 1), 30.0, "float32"), "gender": np.full((2, 2), 0.5, "float32"), "race": probs}
    adjusted = np.log(probs) + np.log(prior / prior.sum())
    adjusted = np.exp(adjusted) / np.exp(adjusted).sum(axis=1, keepdims=True)
    expected = -np.mean(np.log(adjusted[[0, 1], [4, 0]]))
    race_loss = float(model.head_losses(y, y_pred)[2])
    assert race_loss == pytest.approx(expected, rel=1e-5)
    # A rare true class costs more after the shift, so the net learns to raise it: a balanced posterior.
    assert race_loss > float(plain.head_losses(y, y_pred)[2])


def test_logit_adjustment_rejects_a_missing_or_bad_prior():
    net = build_model("fast", SIZE, 65.0, min_age=10.0)
    with pytest.raises(ValueError, match="race_prior"):
        MultiTaskModel(net, LossWeights(), race_tau=1.0)
    with pytest.raises(ValueError, match="race_prior"):
        MultiTaskModel(net, LossWeights(), race_prior=[1.0, 0.0, 1.0, 1.0, 1.0], race_tau=1.0)
    with pytest.raises(ValueError, match="race_tau"):
        MultiTaskModel(net, LossWeights(), race_prior=[1.0] * 5, race_tau=-1.0)


def test_logit_adjusted_model_trains_and_raises_the_rare_class():
    rng = np.random.default_rng(0)
    n = 64
    images = rng.integers(0, 256, (n, SIZE, SIZE, 3)).astype("float32")
    races = np.where(np.arange(n) < 56, 0, 4)  # 4 ("Others") is rare and unrelated to the pixels
    prior = np.bincount(races, minlength=5) + 1.0
    means = {}
    for tau in (0.0, 1.0):
        keras.utils.set_random_seed(0)
        net = build_model("fast", SIZE, 65.0, min_age=10.0)
        model = MultiTaskModel(
            net, LossWeights({"age": 0.0, "gender": 0.0, "race": 1.0}), race_prior=prior, race_tau=tau
        )
        model.compile(optimizer=keras.optimizers.Adam(3e-3))
        history = model.fit(images, _targets(races), batch_size=16, epochs=6, verbose=0, shuffle=False).history
        assert np.isfinite(history["loss"]).all()
        means[tau] = float(net.predict(images, verbose=0)["race"][:, 4].mean())
    # Plain cross-entropy learns the 1/8 base rate; the adjusted loss lifts the rare class towards 1/2.
    assert means[1.0] > means[0.0] + 0.1
