"""Quality levers of the training recipe, each on tiny seeded data: what it computes and that a run uses it."""

from __future__ import annotations

import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

from tests.models import tiny_training_data  # noqa: E402
from utkface_core.config import ConfigError, TrainConfig  # noqa: E402
from utkface_core.inference.prediction import PredictionError, predict_arrays  # noqa: E402
from utkface_core.training import lossweights  # noqa: E402
from utkface_core.training.lossweights import LossWeights, MultiTaskModel  # noqa: E402
from utkface_core.training.model import PRESET_SPECS, ModelBuildError, age_bins, build_model  # noqa: E402
from utkface_core.training.pipeline import PipelineError, make_dataset, mix_batch, mixup_weights  # noqa: E402
from utkface_core.training.trainer import train  # noqa: E402

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


# --- long-tail age loss: DLDL (a distribution head whose expectation is the age) -------------------------------


def test_dldl_label_distribution_sums_to_one_and_centres_on_the_age():
    net = build_model("fast", SIZE, 65.0, min_age=10.0, age_loss="dldl")
    model = MultiTaskModel(net, LossWeights(), age_loss="dldl")
    ages = np.array([[20.0], [37.5], [50.0]], "float32")
    dist = np.asarray(model.age_distribution(ages))
    assert dist.shape == (3, age_bins(10.0, 65.0)) == (3, 56)
    np.testing.assert_allclose(dist.sum(axis=1), 1.0, rtol=1e-5)
    years = np.linspace(10.0, 65.0, 56)
    # Away from the ends of the range the truncated Gaussian is symmetric: its expectation is the age.
    np.testing.assert_allclose(dist @ years, ages[:, 0], atol=1e-3)
    assert years[dist[0].argmax()] == 20.0


def test_dldl_head_outputs_the_median_of_its_bins_in_years():
    net = build_model("fast", SIZE, 65.0, min_age=10.0, age_loss="dldl")
    head = keras.Model(net.get_layer("age_dist").output, net.output["age"])  # bin probabilities -> age in years
    years = np.linspace(10.0, 65.0, 56)
    gaussian = np.exp(-0.5 * ((years - 30.0) / 2.0) ** 2)
    skewed = np.zeros(56)
    skewed[[10, 50]] = 0.6, 0.4  # 20 y and 60 y: the mean would be 36 y, the median is 20 y
    probs = np.stack([gaussian / gaussian.sum(), skewed, np.full(56, 1 / 56)]).astype("float32")
    age = np.asarray(head(probs))[:, 0]
    np.testing.assert_allclose(age, [30.0, 20.0, 37.5], atol=0.5)
    for layer in ("age_below", "age_unit"):
        assert not net.get_layer(layer).trainable


def test_dldl_head_median_comes_from_the_networks_own_bins():
    net = build_model("fast", SIZE, 65.0, min_age=10.0, age_loss="dldl")
    images = np.random.default_rng(0).integers(0, 256, (4, SIZE, SIZE, 3)).astype("float32")
    probe = keras.Model(net.input, [net.get_layer("age_dist").output, net.output["age"]])
    probs, age = (np.asarray(t) for t in probe(images, training=False))
    assert age.shape == (4, 1)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    median = np.linspace(10.0, 65.0, 56)[np.argmax(np.cumsum(probs, axis=1) >= 0.5, axis=1)]
    np.testing.assert_allclose(age[:, 0], median, atol=1.0)  # within a bin of the discrete median


def test_dldl_loss_is_kl_plus_l1_and_is_lowest_at_the_target():
    net = build_model("fast", SIZE, 65.0, min_age=10.0, age_loss="dldl")
    model = MultiTaskModel(net, LossWeights(), age_loss="dldl")
    y = _targets(np.array([0, 1]))  # ages 30
    target = np.asarray(model.age_distribution(y["age"]))
    flat = np.full_like(target, 1.0 / target.shape[1])
    years = np.linspace(10.0, 65.0, 56)

    def y_pred(probs):
        return {
            "age": (probs @ years)[:, None].astype("float32"),
            "age_dist": probs.astype("float32"),
            "gender": np.full((2, 2), 0.5, "float32"),
            "race": np.full((2, 5), 0.2, "float32"),
        }

    at_target = float(model.head_losses(y, y_pred(target))[0])
    assert at_target == pytest.approx(0.0, abs=1e-4)  # KL 0 and L1 0
    kl_flat = float(np.sum(target * (np.log(np.clip(target, 1e-7, 1)) - np.log(flat)), axis=1).mean())
    l1_flat = float(np.abs(flat @ years - 30.0).mean() / 55.0)
    expected = lossweights.DLDL_KL_WEIGHT * kl_flat + l1_flat
    assert float(model.head_losses(y, y_pred(flat))[0]) == pytest.approx(expected, rel=1e-4)


def test_fast_preset_uses_the_dldl_head_and_fast_v1_keeps_its_sigmoid():
    assert PRESET_SPECS["fast"].age_loss == "dldl" and PRESET_SPECS["fast-v1"].age_loss == "mae"
    assert build_model("fast", SIZE, 65.0, min_age=10.0).get_layer("age_dist").units == 56
    with pytest.raises(ValueError):
        build_model("fast-v1", SIZE, 65.0, min_age=10.0).get_layer("age_dist")


def test_dldl_needs_a_distribution_head_and_a_known_loss():
    with pytest.raises(ValueError, match="age_dist"):
        MultiTaskModel(build_model("fast", SIZE, 65.0, min_age=10.0, age_loss="mae"), LossWeights(), age_loss="dldl")
    with pytest.raises(ModelBuildError, match="age_loss"):
        build_model("fast", SIZE, 65.0, min_age=10.0, age_loss="ordinal")


@pytest.mark.parametrize(("age_loss", "mixup"), [("dldl", 0.0), ("mae", 0.4), ("dldl", 0.4)])
def test_lever_models_train_and_save_as_keras_without_custom_objects(tmp_path, age_loss, mixup):
    rng = np.random.default_rng(0)
    n = 32
    images = rng.integers(0, 256, (n, SIZE, SIZE, 3), dtype=np.uint8)
    ages, genders, races = rng.integers(10, 66, n), rng.integers(0, 2, n), rng.integers(0, 5, n)
    keras.utils.set_random_seed(0)
    net = build_model("fast", SIZE, 65.0, min_age=10.0, age_loss=age_loss)
    model = MultiTaskModel(net, LossWeights(), age_loss=age_loss)
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    ds = make_dataset(images, np.arange(n), ages, genders, races, 8, training=True, augment=True, mixup_alpha=mixup)
    history = model.fit(ds, epochs=2, verbose=0, shuffle=False).history
    assert np.isfinite(history["loss"]).all() and np.isfinite(history["age_loss"]).all()
    path = tmp_path / "model.keras"
    net.save(path)
    # A plain load, no custom_objects: only built-in layers are in the file; the outputs are the three heads.
    loaded = keras.saving.load_model(path, compile=False)
    x = images[:5].astype("float32")
    before, after = net(x, training=False), loaded(x, training=False)
    assert sorted(after) == ["age", "gender", "race"] and tuple(after["age"].shape) == (5, 1)
    for head in ("age", "gender", "race"):
        np.testing.assert_allclose(np.asarray(after[head]), np.asarray(before[head]), rtol=1e-5, atol=1e-5)
    assert np.all((np.asarray(after["age"]) >= 10.0) & (np.asarray(after["age"]) <= 65.0))


def test_train_records_the_levers_in_the_run_config(tmp_path):
    images, frame, split = tiny_training_data((16, 4, 4), SIZE, seed=1)
    config = TrainConfig(
        preset="fast", image_size=SIZE, epochs=1, batch_size=8, age_loss="dldl", mixup_alpha=0.3, split_method="select"
    )
    result = train(config, images, frame, split, tmp_path / "run")
    assert result.state == "completed", result.message
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["age_loss"] == "dldl" and saved["mixup_alpha"] == 0.3
    assert keras.saving.load_model(tmp_path / "run" / "model.keras", compile=False).get_layer("age_dist")
    assert np.isfinite(result.metrics["age_mae"])
    # Flip-averaged test metrics are recorded beside the plain ones.
    assert {"age_mae", "gender_accuracy", "race_accuracy", "race_macro_f1"} <= set(result.metrics["flip"])


@pytest.mark.parametrize(
    ("field", "value"), [("age_loss", "ordinal"), ("mixup_alpha", -0.1), ("mixup_alpha", True), ("mixup_alpha", 100)]
)
def test_config_rejects_bad_lever_values(field, value):
    with pytest.raises(ConfigError, match=field):
        TrainConfig(**{field: value}).validate()


# --- mixup (in the tf.data graph, seeded) ------------------------------------------------------------------------


def _feed(n: int = 12):
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, (n, SIZE, SIZE, 3), dtype=np.uint8)
    return images, np.arange(n) + 10.0, np.arange(n) % 2, np.arange(n) % 5


def test_mixup_with_lambda_one_is_the_identity():
    images, ages, genders, races = _feed()
    x = tf.constant(images[:6].astype("float32"))
    targets = {
        "age": tf.constant(ages[:6, None].astype("float32")),
        "gender": tf.one_hot(genders[:6], 2),
        "race": tf.one_hot(races[:6], 5),
    }
    mixed, out = mix_batch(x, targets, tf.ones([6]))
    np.testing.assert_array_equal(mixed.numpy(), x.numpy())
    for key, value in targets.items():
        np.testing.assert_array_equal(out[key].numpy(), value.numpy())
    np.testing.assert_array_equal(out["mix"].numpy(), np.ones((6, 1)))
    np.testing.assert_array_equal(out["age_pair"].numpy()[:, 0], ages[:6])


def test_mixup_mixes_each_row_with_the_next_by_its_weight():
    x = tf.constant(np.arange(3, dtype="float32")[:, None, None, None] * np.ones((3, 2, 2, 3), "float32"))
    targets = {"age": tf.constant([[10.0], [20.0], [30.0]]), "gender": tf.one_hot([0, 1, 0], 2)}
    lam = tf.constant([1.0, 0.75, 0.5])
    mixed, out = mix_batch(x, targets, lam)
    # Row i is mixed with row i-1 (rolled by one): row 1 = 0.75 * 1 + 0.25 * 0.
    np.testing.assert_allclose(mixed.numpy()[:, 0, 0, 0], [1.0 * 0 + 0.0 * 2, 0.75, 0.5 * 2 + 0.5 * 1])
    np.testing.assert_allclose(out["age"].numpy()[:, 0], [10.0, 17.5, 25.0])
    np.testing.assert_allclose(out["gender"].numpy()[1], [0.25, 0.75])
    np.testing.assert_allclose(out["age_pair"].numpy(), [[10.0, 30.0], [20.0, 10.0], [30.0, 20.0]])


def test_mixup_weights_are_seeded_and_in_the_upper_half():
    first = mixup_weights(tf.constant([3, 4], tf.int64), 64, 0.4).numpy()
    again = mixup_weights(tf.constant([3, 4], tf.int64), 64, 0.4).numpy()
    other = mixup_weights(tf.constant([5, 4], tf.int64), 64, 0.4).numpy()
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    assert first.min() >= 0.5 and first.max() <= 1.0 and first.std() > 0.01


def test_mixup_dataset_is_deterministic_per_seed_and_off_at_evaluation():
    images, ages, genders, races = _feed()

    def batches(seed, training=True):
        ds = make_dataset(images, np.arange(12), ages, genders, races, 4, training=training, seed=seed, mixup_alpha=0.4)
        return [(x.numpy(), {k: v.numpy() for k, v in y.items()}) for x, y in ds]

    a, b, c = batches(7), batches(7), batches(8)
    for (xa, ya), (xb, yb) in zip(a, b, strict=True):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya["mix"], yb["mix"])
    assert not all(np.array_equal(xa, xc) for (xa, _), (xc, _) in zip(a, c, strict=True))
    assert any((y["mix"] < 1.0).any() for _, y in a)  # mixed
    for x, y in batches(7, training=False):  # evaluation batches are plain rows
        assert set(y) == {"age", "gender", "race"}
        rows = y["age"][:, 0].astype(int) - 10
        np.testing.assert_array_equal(x, images[rows].astype("float32"))


def test_mixup_rejects_a_bad_alpha():
    images, ages, genders, races = _feed()
    with pytest.raises(PipelineError, match="mixup_alpha"):
        make_dataset(images, np.arange(12), ages, genders, races, 4, training=True, mixup_alpha=-1.0)


# --- test-time flip averaging in predict_arrays -----------------------------------------------------------------


def test_flip_tta_on_a_mirror_symmetric_image_equals_no_tta():
    net = build_model("fast", SIZE, 65.0, min_age=10.0)
    half = np.random.default_rng(3).integers(0, 256, (3, SIZE, SIZE // 2, 3), dtype=np.uint8)
    symmetric = np.concatenate([half, half[:, :, ::-1]], axis=2)
    plain, flipped = predict_arrays(net, symmetric, flip=False), predict_arrays(net, symmetric, flip=True)
    for head in ("age", "gender", "race"):
        np.testing.assert_allclose(flipped[head], plain[head], rtol=1e-5, atol=1e-5)


def test_flip_tta_is_the_mean_of_the_plain_and_mirrored_predictions():
    net = build_model("fast", SIZE, 65.0, min_age=10.0)
    images = np.random.default_rng(4).integers(0, 256, (5, SIZE, SIZE, 3), dtype=np.uint8)
    plain = predict_arrays(net, images, flip=False)
    mirrored = predict_arrays(net, np.ascontiguousarray(images[:, :, ::-1]), flip=False)
    tta = predict_arrays(net, images, flip=True, batch_size=2)
    for head in ("age", "gender", "race"):
        np.testing.assert_allclose(tta[head], (plain[head] + mirrored[head]) / 2.0, rtol=1e-5, atol=1e-5)
    assert not np.allclose(plain["race"], mirrored["race"])  # the flip did change the input
    with pytest.raises(PredictionError, match="flip"):
        predict_arrays(net, images, flip="yes")
