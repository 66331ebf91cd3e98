"""Training engine: live loss weights, stop/NaN/time-budget handling, run outputs, mirrored strategy, config."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from utkface_core import config as config_module  # noqa: E402
from utkface_core.config import ConfigError, TrainConfig  # noqa: E402
from utkface_core.inference.prediction import load_model  # noqa: E402
from utkface_core.training import trainer as trainer_module  # noqa: E402
from utkface_core.training.callbacks import BudgetCosineSchedule  # noqa: E402
from utkface_core.training.lossweights import LossWeights, LossWeightsError, MultiTaskModel  # noqa: E402
from utkface_core.training.model import build_model  # noqa: E402
from utkface_core.training.pipeline import make_dataset  # noqa: E402
from utkface_core.training.trainer import TrainInputError, train  # noqa: E402

SIZE = 32
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def small_fast_net(monkeypatch):
    """Train a narrower fast network: the engine's behaviour is the same and tests trace faster."""
    monkeypatch.setattr("utkface_core.training.model.FAST_STAGES", ((8, 1), (16, 1)))


def _data(n: int = 48, seed: int = 0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, SIZE, SIZE, 3), dtype=np.uint8)
    frame = pd.DataFrame(
        {
            "path": [f"/data/{i}.jpg" for i in range(n)],
            "file": [f"{i}.jpg" for i in range(n)],
            "age": rng.integers(10, 66, n),
            "gender": rng.integers(0, 2, n),
            "race": rng.integers(0, 5, n),
        }
    )
    n_train, n_valid = n * 2 // 3, n // 6
    split = pd.Series(["train"] * n_train + ["valid"] * n_valid + ["test"] * (n - n_train - n_valid), index=frame.index)
    return images, frame, split


def _config(**overrides) -> TrainConfig:
    values = {"image_size": SIZE, "epochs": 2, "batch_size": 8, "augment": False, "early_stopping_patience": None}
    values.update(overrides)
    return TrainConfig(**values)


def _model(weights: LossWeights, jit_compile: bool | str = "auto") -> tuple[MultiTaskModel, object]:
    images, frame, _ = _data(32)
    keras.utils.set_random_seed(0)
    model = MultiTaskModel(build_model("fast", SIZE, 65.0, min_age=10.0), weights)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), jit_compile=jit_compile)
    ds = make_dataset(images, np.arange(32), frame["age"], frame["gender"], frame["race"], 4, training=True)
    return model, ds


# --- live loss weights -----------------------------------------------------------------------------------


# XLA (jit_compile=True) is off on CPU ("auto": slower there, see benchmarks/README.md) but on for GPUs:
# the weights must stay live in the compiled step too.
@pytest.mark.parametrize("jit_compile", ["auto", True])
def test_weight_change_from_another_thread_during_fit_changes_the_optimised_loss(jit_compile):
    weights = LossWeights({"age": 2.0, "gender": 1.0, "race": 1.5})
    model, ds = _model(weights, jit_compile)
    epoch_logs = []

    class MidEpochChange(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch == 3 and not epoch_logs:
                # The change comes from another thread, as a UI would make it.
                worker = threading.Thread(target=weights.set, kwargs={"gender": 0.0, "race": 0.0, "age": 3.0})
                worker.start()
                worker.join()

        def on_epoch_end(self, epoch, logs=None):
            epoch_logs.append(dict(logs))

    model.fit(ds, epochs=2, callbacks=[MidEpochChange()], shuffle=False, verbose=0)
    first, second = epoch_logs
    # Epoch 2 ran entirely under the new weights: total == 3 * age_loss exactly.
    assert second["loss"] == pytest.approx(3.0 * second["age_loss"], rel=1e-4)
    assert second["w_age"] == pytest.approx(3.0) and second["w_gender"] == 0.0 and second["w_race"] == 0.0
    # Epoch 1 mixed both settings, so its total also carried the classification losses.
    assert first["loss"] > 2.0 * first["age_loss"] + 0.5 * first["gender_loss"]
    assert weights.get() == {"age": 3.0, "gender": 0.0, "race": 0.0}


def test_auto_weighting_learns_the_weights():
    weights = LossWeights("auto")
    assert weights.get() == {"age": 1.0, "gender": 1.0, "race": 1.0}
    model, ds = _model(weights)
    history = model.fit(ds, epochs=2, shuffle=False, verbose=0).history
    learned = weights.get()
    # The scaled age loss is far below 1, so its weight exp(-s) must grow; all weights moved off 1.
    assert learned["age"] > 1.05
    assert all(abs(value - 1.0) > 1e-3 for value in learned.values())
    assert history["w_age"][-1] == pytest.approx(learned["age"], rel=0.05)


def test_loss_weights_reject_bad_values():
    weights = LossWeights()
    with pytest.raises(LossWeightsError, match="unknown heads"):
        weights.set(height=1.0)
    with pytest.raises(LossWeightsError, match="finite and >= 0"):
        weights.set(age=-1.0)
    with pytest.raises(LossWeightsError, match="finite and >= 0"):
        weights.set(race=math.nan)
    with pytest.raises(LossWeightsError, match="need all heads"):
        LossWeights({"age": 1.0})


# --- train(): run outputs and end states -----------------------------------------------------------------


def test_train_writes_a_complete_run(tmp_path):
    images, frame, split = _data()
    events = []
    result = train(
        _config(data_source="demo", data_fingerprint="abc"),
        images,
        frame,
        split,
        tmp_path / "run",
        report=events.append,
    )
    run = tmp_path / "run"
    assert result.state == "completed", result.message
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "completed" and status["pid"] == os.getpid()
    config = json.loads((run / "config.json").read_text())
    assert config["image_size"] == SIZE and config["data"] == {"source": "demo", "fingerprint": "abc"}
    assert TrainConfig.from_dict({k: v for k, v in config.items() if k in TrainConfig.__dataclass_fields__})
    saved_split = pd.read_csv(run / "split.csv")
    assert list(saved_split.columns) == ["path", "file", "age", "gender", "race", "split"]
    assert (saved_split["split"] == "test").sum() == result.metrics["n"]
    history = pd.read_csv(run / "history.csv")
    for column in (
        "age_loss",
        "gender_loss",
        "race_loss",
        "loss",
        "w_age",
        "w_gender",
        "w_race",
        "val_age_mae",
        "val_gender_accuracy",
        "val_race_accuracy",
        "lr",
    ):
        assert column in history.columns, column
    assert len(history) == 2
    metrics = json.loads((run / "metrics.json").read_text())
    assert 0 <= metrics["age_mae"] < 60 and 0 <= metrics["gender_accuracy"] <= 1 and metrics["n"] == 8
    assert load_model(run / "model.keras").output_names is not None
    kinds = [e["kind"] for e in events]
    assert kinds.count("epoch") == 2 and kinds[-1] == "end"
    epoch_event = next(e for e in events if e["kind"] == "epoch")
    assert "val_race_accuracy" in epoch_event["logs"] and set(epoch_event["weights"]) == {"age", "gender", "race"}


def test_stop_event_ends_within_a_batch_and_keeps_a_model(tmp_path):
    images, frame, split = _data(96)
    stop = threading.Event()
    events = []
    stopped_at = []

    def report(event):
        events.append(event)
        if event["kind"] == "batch" and not stop.is_set():
            stopped_at.append(event["batch"])
            stop.set()

    config = _config(epochs=5, batch_size=4)
    result = train(config, images, frame, split, tmp_path / "run", report=report, stop_event=stop)
    assert result.state == "stopped"
    assert (tmp_path / "run" / "model.keras").is_file()
    assert json.loads((tmp_path / "run" / "status.json").read_text())["state"] == "stopped"
    epochs = [e for e in events if e["kind"] == "epoch"]
    assert len(epochs) == 1
    assert epochs[0]["batches"] <= stopped_at[0] + 2 < 16  # the batch in flight finishes, no more
    assert result.metrics is not None and result.metrics["state"] == "stopped"


def test_nan_loss_fails_the_run_with_a_clear_message(tmp_path, monkeypatch):
    images, frame, split = _data()
    real = trainer_module.make_dataset

    def poisoned(*args, training, **kwargs):
        ds = real(*args, training=training, **kwargs)
        if not training:
            return ds
        return ds.map(lambda x, y: (x, {**y, "age": y["age"] * float("nan")}))

    monkeypatch.setattr(trainer_module, "make_dataset", poisoned)
    result = train(_config(), images, frame, split, tmp_path / "run")
    assert result.state == "failed"
    assert "diverged" in result.message and "learning rate" in result.message
    status = json.loads((tmp_path / "run" / "status.json").read_text())
    assert status["state"] == "failed" and "diverged" in status["message"]
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_time_budget_stops_training_early(tmp_path):
    images, frame, split = _data()
    result = train(_config(epochs=200, time_budget_s=0.5), images, frame, split, tmp_path / "run")
    assert result.state == "completed"
    assert "time budget" in result.message
    assert result.metrics["epochs_run"] < 200


def test_exception_during_training_fails_the_run_and_keeps_the_best_model(tmp_path, monkeypatch):
    images, frame, split = _data()
    run = tmp_path / "run"
    run.mkdir()
    previous = build_model("fast", SIZE, 65.0, min_age=10.0)
    previous.save(run / "model.keras")

    def broken(*args, **kwargs):
        raise RuntimeError("out of memory (simulated)")

    monkeypatch.setattr(trainer_module, "build_model", broken)
    result = train(_config(), images, frame, split, run)
    assert result.state == "failed" and "simulated" in result.message
    assert json.loads((run / "status.json").read_text())["state"] == "failed"
    assert "RuntimeError" in (run / "error.log").read_text()
    assert load_model(run / "model.keras").count_params() == previous.count_params()


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda im, fr, sp: (im[:-1], fr, sp), "rows"),
        (lambda im, fr, sp: (im[:, :16, :16], fr, sp), "rebuild the image cache"),
        (lambda im, fr, sp: (im, fr.drop(columns="race"), sp), "lacks columns"),
        (lambda im, fr, sp: (im, fr, sp.replace("valid", "train")), "no 'valid' rows"),
        (lambda im, fr, sp: (im, fr.assign(age=fr["age"] + 100), sp), "ages outside"),
    ],
)
def test_train_rejects_mismatched_inputs_before_writing(tmp_path, mutate, match):
    images, frame, split = mutate(*_data())
    with pytest.raises(TrainInputError, match=match):
        train(_config(), images, frame, split, tmp_path / "run")
    assert not (tmp_path / "run").exists()


# --- split methods: "final" trains on train + valid, never on test ----------------------------------------


def _capture_training_rows(monkeypatch) -> list:
    seen = []
    real = trainer_module.make_dataset

    def spy(images, indices, *args, training, **kwargs):
        if training:
            seen.append(np.asarray(indices).copy())
        return real(images, indices, *args, training=training, **kwargs)

    monkeypatch.setattr(trainer_module, "make_dataset", spy)
    return seen


def test_final_split_trains_on_train_and_valid_but_never_on_test(tmp_path, monkeypatch):
    images, frame, split = _data()
    seen = _capture_training_rows(monkeypatch)
    result = train(_config(split_method="final"), images, frame, split, tmp_path / "run")
    assert result.state == "completed", result.message
    trained = set(seen[0].tolist())
    labels = split.to_numpy()
    assert trained == set(np.flatnonzero(labels != "test").tolist())
    assert not trained & set(np.flatnonzero(labels == "test").tolist())
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["split_method"] == "final" and config["split"]["trained_on"] == ["train", "valid"]
    assert config["split"]["fractions"]["test"] == pytest.approx(8 / 48, abs=1e-3)
    # Test metrics include what accuracy hides: macro-F1 and the recall of each race present in the test rows.
    metrics = result.metrics
    assert 0.0 <= metrics["race_macro_f1"] <= 1.0
    names = ("white", "black", "asian", "indian", "others")
    present = {int(r) for r in frame["race"][split == "test"]}
    assert {k for k in metrics if k.startswith("race_recall_")} == {f"race_recall_{names[r]}" for r in present}


def test_select_split_trains_on_train_only(tmp_path, monkeypatch):
    images, frame, split = _data()
    seen = _capture_training_rows(monkeypatch)
    train(_config(split_method="select"), images, frame, split, tmp_path / "run")
    assert set(seen[0].tolist()) == set(np.flatnonzero(split.to_numpy() == "train").tolist())
    assert json.loads((tmp_path / "run" / "config.json").read_text())["split"]["trained_on"] == ["train"]


def test_final_split_keeps_the_last_weights_not_an_epoch_picked_on_seen_rows(tmp_path, monkeypatch):
    images, frame, split = _data()
    saved = []
    real = trainer_module.save_model_atomic

    def spy(model, path):
        saved.append(np.concatenate([w.ravel() for w in model.get_weights()]))
        return real(model, path)

    monkeypatch.setattr(trainer_module, "save_model_atomic", spy)
    result = train(_config(split_method="final", epochs=3), images, frame, split, tmp_path / "run")
    assert result.state == "completed", result.message
    kept = np.concatenate([w.ravel() for w in load_model(tmp_path / "run" / "model.keras").get_weights()])
    np.testing.assert_allclose(kept, saved[-1], rtol=1e-6)


# --- learning-rate schedule ------------------------------------------------------------------------------


def test_cosine_schedule_warms_up_then_decays_to_the_end():
    schedule = BudgetCosineSchedule(1e-2, total_steps=100, warmup_fraction=0.1)
    rates = []
    for step in range(100):
        schedule.step = step
        rates.append(schedule.lr_at(schedule.progress()))
    assert rates[0] < rates[9] == pytest.approx(max(rates), rel=0.05)
    assert rates[-1] < 0.05 * max(rates)
    assert all(a >= b for a, b in zip(rates[10:], rates[11:], strict=False))


def test_time_budget_schedule_follows_the_clock(monkeypatch):
    schedule = BudgetCosineSchedule(1e-2, total_steps=10_000, time_budget_s=100.0)
    clock = {"now": 1000.0}
    monkeypatch.setattr("utkface_core.training.callbacks.time.monotonic", lambda: clock["now"])
    schedule.on_train_begin()
    schedule.step = 500
    clock["now"] += 50.0
    assert schedule.progress() == pytest.approx(0.5)
    clock["now"] += 50.0
    assert schedule.lr_at(schedule.progress()) == pytest.approx(0.02 * 1e-2)


# --- distribution ------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_mirrored_strategy_trains_on_two_logical_cpus(tmp_path):
    script = textwrap.dedent(
        f"""
        import json, os, sys
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
        sys.path.insert(0, {str(REPO)!r})
        import tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_training import _config, _data
        import utkface_core.training.model
        utkface_core.training.model.FAST_STAGES = ((8, 1), (16, 1))
        from utkface_core.training.trainer import make_strategy, train
        print("REPLICAS", make_strategy("mirrored").num_replicas_in_sync)
        images, frame, split = _data()
        result = train(_config(strategy="mirrored", epochs=1), images, frame, split, {str(tmp_path / "run")!r})
        print("RESULT", json.dumps({{"state": result.state, "message": result.message}}))
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "REPLICAS 2" in proc.stdout
    result = json.loads(proc.stdout.split("RESULT", 1)[1])
    assert result["state"] == "completed", result["message"]
    assert (tmp_path / "run" / "model.keras").is_file()


# --- configuration -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "field, value",
    [
        ("preset", "huge"),
        ("image_size", 8),
        ("epochs", 0),
        ("time_budget_s", -5),
        ("batch_size", 0),
        ("learning_rate", 0.0),
        ("min_age", 70),
        ("loss_weights", {"age": 1.0, "gender": -1.0, "race": 1.0}),
        ("loss_weights", {"age": 1.0}),
        ("loss_weights", "equal"),
        ("split_method", "random"),
        ("preset", "fast-v2"),
        ("early_stopping_patience", 0),
        ("strategy", "tpu"),
        ("augment", "yes"),
    ],
)
def test_config_validation_names_the_bad_field(field, value):
    with pytest.raises(ConfigError, match=field):
        TrainConfig(**{field: value}).validate()


def test_config_round_trips_and_rejects_unknown_keys():
    config = TrainConfig(preset="tutorial", loss_weights="auto", time_budget_s=90.0)
    assert TrainConfig.from_dict(config.to_dict()) == config
    assert config.resolved_image_size() == 198 and TrainConfig().resolved_image_size() == 48
    with pytest.raises(ConfigError, match="unknown TrainConfig keys \\['colour'\\]"):
        TrainConfig.from_dict({**config.to_dict(), "colour": "red"})


def test_preset_defaults_fill_the_split_and_batch_size_and_scale_the_rate():
    assert TrainConfig().split_method == "final" and TrainConfig(preset="fast-v1").split_method == "final"
    assert TrainConfig(preset="tutorial").split_method == "tutorial"
    assert TrainConfig(preset="tutorial", split_method="final").split_method == "final"
    fast = TrainConfig()
    assert fast.batch_size == config_module.PRESET_BATCH_SIZE["fast"]
    base = config_module.PRESET_LEARNING_RATE["fast"]
    assert fast.resolved_learning_rate() == pytest.approx(base)
    assert TrainConfig(batch_size=4 * fast.batch_size).resolved_learning_rate() == pytest.approx(2 * base)
    assert TrainConfig(batch_size=256, learning_rate=1e-3).resolved_learning_rate() == 1e-3
    # The filled-in values are what config.json records, and they round-trip.
    assert TrainConfig.from_dict(fast.to_dict()) == fast


def test_train_rejects_an_invalid_config(tmp_path):
    images, frame, split = _data()
    with pytest.raises(ConfigError, match="batch_size"):
        train(_config(batch_size=-1), images, frame, split, tmp_path / "run")
