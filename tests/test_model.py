"""Model builders, saving/loading, inference helper and the input pipeline (no training)."""

from __future__ import annotations

import json
import os
import zipfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from utkface_core.inference.prediction import ModelLoadError, load_model, predict_arrays  # noqa: E402
from utkface_core.inference.prediction import PredictionError as PredictionInputError  # noqa: E402
from utkface_core.training import model as model_module  # noqa: E402
from utkface_core.training.callbacks import save_model_atomic  # noqa: E402
from utkface_core.training.model import ModelBuildError, build_model  # noqa: E402
from utkface_core.training.pipeline import PipelineError, make_dataset  # noqa: E402


def _modules(config) -> set[str]:
    """Return every "module" named in a saved Keras config (custom objects name their own module)."""
    found = set()
    if isinstance(config, dict):
        if isinstance(config.get("module"), str):
            found.add(config["module"])
        for value in config.values():
            found |= _modules(value)
    elif isinstance(config, list):
        for value in config:
            found |= _modules(value)
    return found


def _images(n: int, size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def test_fast_preset_outputs_named_heads_with_shapes():
    model = build_model("fast", 32, 65.0, min_age=10.0)
    out = model(np.zeros((3, 32, 32, 3), "float32"))
    assert set(out) == {"age", "gender", "race"}
    assert tuple(out["age"].shape) == (3, 1)
    assert tuple(out["gender"].shape) == (3, 2)
    assert tuple(out["race"].shape) == (3, 5)
    assert tuple(model.inputs[0].shape) == (None, 32, 32, 3)


def test_fast_preset_default_size_is_48():
    assert tuple(build_model("fast").inputs[0].shape) == (None, 48, 48, 3)
    assert tuple(build_model("fast-v1").inputs[0].shape) == (None, 48, 48, 3)


def test_fast_v1_preset_keeps_the_earlier_fast_network():
    model = build_model("fast-v1", 48, 65.0, min_age=10.0)
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert [c.filters for c in convs] == [32, 32, 64, 128, 256]  # stem, then one conv per stage
    assert convs[0].strides == (2, 2) and all(c.strides == (1, 1) for c in convs[1:])
    fast = [layer.filters for layer in build_model("fast").layers if isinstance(layer, keras.layers.Conv2D)]
    assert fast == [model_module.FAST_STAGES[0][0]] + [f for f, n in model_module.FAST_STAGES for _ in range(n)]


def test_tutorial_preset_is_the_tutorial_network_at_198():
    model = build_model("tutorial", max_age=65.0)
    assert tuple(model.inputs[0].shape) == (None, 198, 198, 3)
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert [c.filters for c in convs] == [32, 64, 96, 128, 160, 192]
    assert all(c.padding == "valid" and c.kernel_size == (3, 3) for c in convs)
    assert sum(isinstance(layer, keras.layers.MaxPooling2D) for layer in model.layers) == 5
    assert sum(isinstance(layer, keras.layers.BatchNormalization) for layer in model.layers) == 5
    # 198 -> 196 -> (194 -> 97) -> (95 -> 47) -> (45 -> 22) -> (20 -> 10) -> (8 -> 4)
    assert tuple(model.get_layer("pool6").output.shape) == (None, 4, 4, 192)
    conv_params = sum((9 * a + 1) * b for a, b in [(3, 32), (32, 64), (64, 96), (96, 128), (128, 160), (160, 192)])
    bn_params = 4 * (64 + 96 + 128 + 160 + 192)
    head_params = 3 * (192 * 128 + 128) + (128 + 1) + (128 * 2 + 2) + (128 * 5 + 5)
    assert model.count_params() == conv_params + bn_params + head_params
    out = model(np.zeros((1, 198, 198, 3), "float32"))
    assert tuple(out["race"].shape) == (1, 5)


@pytest.mark.parametrize(
    "args, kwargs",
    [(("resnet",), {}), (("fast", 8), {}), (("tutorial", 64), {}), (("fast", 32, 10.0), {"min_age": 20.0})],
)
def test_build_model_rejects_bad_arguments(args, kwargs):
    with pytest.raises(ModelBuildError):
        build_model(*args, **kwargs)


@pytest.mark.parametrize("preset", ["fast", "fast-v1"])
def test_saved_model_reloads_with_same_predictions_in_years(tmp_path, preset):
    model = build_model(preset, 32, 65.0, min_age=10.0)
    path = save_model_atomic(model, tmp_path / "model.keras")
    images = _images(5, 32)
    before = predict_arrays(model, images)
    loaded = load_model(path)
    after = predict_arrays(loaded, images)
    for key in ("age", "gender", "race"):
        np.testing.assert_allclose(before[key], after[key], rtol=1e-5, atol=1e-5)
    assert after["age"].shape == (5,)
    assert np.all((after["age"] >= 10.0) & (after["age"] <= 65.0))
    np.testing.assert_allclose(after["gender"].sum(axis=1), 1.0, rtol=1e-5)
    # Only built-in Keras classes: the file loads anywhere without custom objects.
    with zipfile.ZipFile(path) as archive:
        config = json.loads(archive.read("config.json"))
    assert all(module.split(".")[0] == "keras" for module in _modules(config)), _modules(config)


def test_predict_arrays_resizes_other_sizes_and_rejects_bad_input():
    model = build_model("fast", 32, 65.0, min_age=10.0)
    assert predict_arrays(model, _images(2, 48))["race"].shape == (2, 5)
    assert predict_arrays(model, _images(1, 32)[0])["age"].shape == (1,)
    with pytest.raises(PredictionInputError):
        predict_arrays(model, _images(2, 32).astype("float32"))
    with pytest.raises(PredictionInputError):
        predict_arrays(model, np.zeros((2, 32, 32), "uint8"))


def test_load_model_names_missing_and_damaged_files(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_model(tmp_path / "missing.keras")
    broken = tmp_path / "broken.keras"
    broken.write_bytes(b"not a zip")
    with pytest.raises(ModelLoadError, match="could not be loaded"):
        load_model(broken)


def test_atomic_save_crash_keeps_previous_model_loadable(tmp_path, monkeypatch):
    path = tmp_path / "model.keras"
    first = build_model("fast", 32, 65.0, min_age=10.0)
    save_model_atomic(first, path)
    expected = predict_arrays(first, _images(2, 32))["age"]
    second = build_model("fast", 32, 65.0, min_age=10.0)

    def crash(self, filepath, *args, **kwargs):
        with open(filepath, "wb") as handle:
            handle.write(b"PK\x03\x04 half written")
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(keras.Model, "save", crash)
    with pytest.raises(OSError, match="simulated"):
        save_model_atomic(second, path)
    monkeypatch.undo()
    np.testing.assert_allclose(predict_arrays(load_model(path), _images(2, 32))["age"], expected, rtol=1e-5)
    assert [p.name for p in tmp_path.iterdir()] == ["model.keras"]


def test_dataset_reads_memmap_rows_with_aligned_targets(tmp_path):
    n, size = 20, 16
    images = np.lib.format.open_memmap(tmp_path / "images.npy", mode="w+", dtype=np.uint8, shape=(n, size, size, 3))
    for i in range(n):
        images[i] = i  # the row number is written into the pixels
    images.flush()
    images = np.load(tmp_path / "images.npy", mmap_mode="r")
    ages = np.arange(n) + 10
    genders, races = np.arange(n) % 2, np.arange(n) % 5
    indices = np.arange(3, 17)
    ds = make_dataset(images, indices, ages, genders, races, 4, training=True, seed=1, augment=False)
    seen = []
    for x, y in ds:
        rows = x.numpy()[:, 0, 0, 0].astype(int)
        np.testing.assert_array_equal(y["age"].numpy()[:, 0], rows + 10)
        np.testing.assert_array_equal(y["gender"].numpy().argmax(1), rows % 2)
        np.testing.assert_array_equal(y["race"].numpy().argmax(1), rows % 5)
        assert y["race"].shape[1] == 5 and y["gender"].shape[1] == 2
        seen.extend(rows)
    assert sorted(seen) == list(indices)


def test_augmented_dataset_keeps_shape_and_range():
    images = np.full((8, 16, 16, 3), 200, np.uint8)
    ds = make_dataset(
        images, np.arange(8), np.full(8, 30), np.zeros(8, int), np.zeros(8, int), 8, training=True, seed=0, augment=True
    )
    x, _ = next(iter(ds))
    assert x.shape == (8, 16, 16, 3) and x.dtype == "float32"
    assert float(x.numpy().min()) >= 0.0 and float(x.numpy().max()) <= 255.0
    assert not np.allclose(x.numpy(), 200.0)  # brightness/shift changed something


@pytest.mark.parametrize(
    "change, match",
    [
        ({"indices": np.array([0, 99])}, "indices must lie"),
        ({"ages": np.zeros(3)}, "ages has 3 entries"),
        ({"images": np.zeros((8, 16, 16, 3), "float32")}, "uint8"),
        ({"batch_size": 0}, "batch_size"),
        ({"races": np.full(8, 7)}, "races"),
    ],
)
def test_make_dataset_rejects_bad_arguments(change, match):
    args = {
        "images": np.zeros((8, 16, 16, 3), np.uint8),
        "indices": np.arange(8),
        "ages": np.full(8, 30),
        "genders": np.zeros(8, int),
        "races": np.zeros(8, int),
        "batch_size": 4,
    }
    args.update(change)
    with pytest.raises(PipelineError, match=match):
        make_dataset(**args, training=False)
