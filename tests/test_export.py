"""Model export (ONNX, TFLite, .keras) checked against Keras, the ONNX Runtime engine, and the export CLI."""

from __future__ import annotations

import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

from tests.models import tiny_model  # noqa: E402
from utkface_core.cli import main  # noqa: E402
from utkface_core.inference import export, prediction  # noqa: E402

SIZE = 32
REAL_TO_ONNX = export.to_onnx


@pytest.fixture(scope="module")
def model():
    return tiny_model(SIZE, min_age=10.0, max_age=65.0)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, model) -> Path:
    run = tmp_path_factory.mktemp("runs") / "tiny-run"
    run.mkdir()
    model.save(run / "model.keras")
    (run / "config.json").write_text(json.dumps({"image_size": SIZE}), encoding="utf-8")
    return run


@pytest.fixture(scope="module")
def onnx_data(run_dir) -> bytes:
    return export.export_onnx(run_dir / "model.keras")


def _images(n: int, size: int = SIZE, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def test_onnx_export_matches_keras_on_fresh_images(model, onnx_data):
    images = _images(5, seed=3).astype(np.float32)
    got = export.run_onnx(onnx_data, images)
    expected = model(images, training=False)
    for head in ("age", "gender", "race"):
        assert got[head].shape == tuple(expected[head].shape)
        np.testing.assert_allclose(got[head], np.asarray(expected[head]), atol=export.TOLERANCE[head])
    assert not np.allclose(got["age"], got["age"][0])  # outputs depend on the image, not a constant


def test_export_reports_a_small_difference_per_head(run_dir):
    result = export.export_model(run_dir / "model.keras", "onnx")
    assert set(result.max_abs_diff) == {"age", "gender", "race"}
    for head, diff in result.max_abs_diff.items():
        assert 0.0 <= diff <= export.TOLERANCE[head]
    assert result.suffix == ".onnx" and result.data[:2] != b"PK"
    assert "age" in result.parity_text()
    keras_result = export.export_model(run_dir / "model.keras", "keras")
    assert keras_result.data == (run_dir / "model.keras").read_bytes()
    assert keras_result.max_abs_diff == {"age": 0.0, "gender": 0.0, "race": 0.0}


def test_export_refuses_a_conversion_that_differs_from_keras(run_dir, monkeypatch):
    other = tiny_model(SIZE, min_age=0.0, max_age=116.0)  # same architecture, other age range
    monkeypatch.setattr(export, "to_onnx", lambda model: REAL_TO_ONNX(other))
    with pytest.raises(export.ExportError, match="age output differs from Keras"):
        export.export_model(run_dir / "model.keras", "onnx")


@pytest.mark.parametrize("fmt", ["pdf", "", None])
def test_export_rejects_an_unknown_format(run_dir, fmt):
    with pytest.raises(export.ExportError, match="format must be one of"):
        export.export_model(run_dir / "model.keras", fmt)


def test_export_names_a_missing_model(tmp_path):
    with pytest.raises(export.ExportError, match="does not exist"):
        export.export_model(tmp_path / "model.keras", "onnx")


def test_onnx_engine_predicts_like_keras(run_dir):
    keras_model = prediction.load_model_cached(run_dir / "model.keras")
    onnx_model = prediction.load_model_cached(run_dir / "model.keras", engine="onnx")
    assert isinstance(onnx_model, prediction.OnnxModel)
    assert prediction.load_model_cached(run_dir / "model.keras", engine="onnx") is onnx_model  # cached
    assert prediction.model_input_size(onnx_model) == SIZE
    face = _images(1, 90, seed=7)[0]
    a = prediction.predict_image(keras_model, face, image_size=SIZE, detect=False)
    b = prediction.predict_image(onnx_model, face, image_size=SIZE, detect=False)
    assert b.faces[0].age == pytest.approx(a.faces[0].age, abs=1e-3)
    for name, p in a.faces[0].race_probs.items():
        assert b.faces[0].race_probs[name] == pytest.approx(p, abs=1e-5)
    arrays = prediction.predict_arrays(onnx_model, _images(3, 48, seed=1))  # resized to the input size
    assert arrays["age"].shape == (3,) and arrays["gender"].shape == (3, 2) and arrays["race"].shape == (3, 5)


def test_unknown_engine_is_rejected(run_dir):
    with pytest.raises(prediction.PredictionError, match="engine must be one of"):
        prediction.load_model_cached(run_dir / "model.keras", engine="torch")


def test_onnx_model_rejects_bytes_that_are_not_onnx():
    with pytest.raises(prediction.ModelLoadError, match="ONNX model cannot be loaded"):
        prediction.OnnxModel(b"not an onnx graph")


# --- one inference path ----------------------------------------------------------------------------


def test_predict_arrays_runs_the_traced_model_and_frees_it_afterwards():
    import gc
    import weakref

    local = tiny_model(SIZE)
    images = _images(3, seed=2)
    got = prediction.predict_arrays(local, images, batch_size=2)
    expected = local(images.astype(np.float32), training=False)
    np.testing.assert_allclose(got["age"], np.asarray(expected["age"]).reshape(-1), rtol=1e-5)
    np.testing.assert_allclose(got["race"], np.asarray(expected["race"]), atol=1e-6)
    ref = weakref.ref(local)
    del local
    gc.collect()
    assert ref() is None  # the per-model graph cache does not keep models alive


def test_prediction_is_the_only_module_that_runs_a_model():
    import importlib

    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("utkface_core.inference.inference")  # the old second path is gone


# --- CLI ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt, suffix", [("onnx", ".onnx"), ("keras", ".keras"), ("tflite", ".tflite")])
def test_cli_export_writes_the_file_and_prints_parity(run_dir, tmp_path, capsys, fmt, suffix):
    assert main(["export", str(run_dir), "--format", fmt, "--out", str(tmp_path)]) == 0
    written = tmp_path / f"tiny-run{suffix}"
    assert written.is_file() and written.stat().st_size > 1000
    out = capsys.readouterr().out
    assert str(written) in out and "max abs difference from Keras per head: age" in out
    if fmt == "onnx":
        got = export.run_onnx(written.read_bytes(), _images(2).astype(np.float32))
        assert got["race"].shape == (2, 5)


def test_cli_export_defaults_to_the_current_folder(run_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["export", str(run_dir)]) == 0
    assert (tmp_path / "tiny-run.onnx").is_file()
    assert not (run_dir / "model.onnx").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["export", "{missing}"], "neither a run folder nor a .keras file"),
        (["export", "{run}", "--out", "{run}/model.keras", "--format", "keras"], "the run's own model file"),
        (["export", "{run}", "--out", "{missing}/x.onnx"], "does not exist"),
    ],
)
def test_cli_export_bad_input_exits_2_with_one_line(run_dir, tmp_path, capsys, args, message):
    names = {"run": run_dir, "missing": tmp_path / "nope"}
    assert main([a.format(**names) for a in args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and message in err and "\n" not in err


def test_cli_predict_with_onnx_engine_matches_keras(run_dir, tmp_path, capsys):
    face = tmp_path / "face.png"
    Image.fromarray(_images(1, 80, seed=5)[0]).save(face)
    assert main(["predict", str(run_dir), str(face), "--no-detect", "--json"]) == 0
    keras_out = json.loads(capsys.readouterr().out)
    assert main(["predict", str(run_dir), str(face), "--no-detect", "--json", "--engine", "onnx"]) == 0
    onnx_out = json.loads(capsys.readouterr().out)
    assert onnx_out[0][0]["age"] == pytest.approx(keras_out[0][0]["age"], abs=0.02)
    assert onnx_out[0][0]["race_probs"] == pytest.approx(keras_out[0][0]["race_probs"], abs=2e-4)


# --- Predict page ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def page_runs(tmp_path_factory):
    from tests.test_cli_eval_predict import make_tiny_run

    root = tmp_path_factory.mktemp("export-page-runs")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("UTKFACE_RUNS_DIR", str(root))
        make_tiny_run(root, "run-x")
        yield root


def test_predict_page_offers_the_onnx_download_with_its_parity(page_runs):
    from tests.test_predict_page import predict_page

    at = predict_page()
    assert "Download .onnx" not in [b.label for b in at.get("download_button")]
    at.button(key="predict_onnx").click().run()
    assert not at.exception
    assert "Download .onnx" in [b.label for b in at.get("download_button")]
    captions = [c.value for c in at.caption if "Largest difference from Keras per head" in c.value]
    assert len(captions) == 1 and "age" in captions[0] and "race" in captions[0]
