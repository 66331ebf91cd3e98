"""The ``evaluate`` and ``predict`` commands of ``python -m utkface_core`` on a tiny hand-built run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from tests.models import tiny_model as contract_model
from utkface_core import runs
from utkface_core.cli import main
from utkface_core.evaluation.evaluation import evaluate_run

SIZE = 32
N_IMAGES = 48


def tiny_model(size: int = SIZE):
    """The tiny contract model with ages spanning 10-65 years."""
    return contract_model(size, min_age=10.0, max_age=65.0)


def write_images(folder: Path, n: int = N_IMAGES, seed: int = 0) -> pd.DataFrame:
    """Seeded smooth colour images named like UTKFace files; returns path/file/age/gender/race rows."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        age, gender, race = int(rng.integers(12, 64)), i % 2, i % 5
        small = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
        path = folder / f"{age}_{gender}_{race}_20170101{i:09d}.jpg.chip.jpg"
        Image.fromarray(small).resize((SIZE * 2, SIZE * 2), Image.BILINEAR).save(path, "JPEG")
        rows.append({"path": str(path), "file": path.name, "age": age, "gender": gender, "race": race})
    return pd.DataFrame(rows)


def make_tiny_run(root: Path, name: str = "tiny-run", *, model=None, data: Path | None = None, seed: int = 0) -> Path:
    """A finished run folder as the trainer writes it (config, split, model, metrics, status), in seconds."""
    run = Path(root) / name
    run.mkdir(parents=True)
    frame = write_images(data or Path(root) / f"{name}-data", seed=seed)
    # Half the images are test rows, both genders and every race among them.
    frame["split"] = [("train", "test", "test", "valid")[i % 4] for i in range(len(frame))]
    frame.to_csv(run / "split.csv", index=False)
    (model or tiny_model()).save(run / "model.keras")
    config = {
        "preset": "fast",
        "image_size": SIZE,
        "min_age": 10,
        "max_age": 65,
        "seed": seed,
        "epochs": 1,
        "loss_weights": {"age": 2.0, "gender": 1.0, "race": 1.5},
        "data": {"source": str(frame["path"].iloc[0].rsplit("/", 1)[0]), "fingerprint": "tiny"},
    }
    runs.write_json_atomic(run / "config.json", config)
    runs.write_json_atomic(
        run / "metrics.json",
        {"age_mae": 12.5, "gender_accuracy": 0.5, "race_accuracy": 0.2, "n": int((frame["split"] == "test").sum())},
    )
    runs.write_status(run, "completed", "trained 1 epochs")
    return run


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    return make_tiny_run(tmp_path_factory.mktemp("cli-runs"))


@pytest.fixture(scope="module")
def face_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("faces") / "face.png"
    rng = np.random.default_rng(3)
    Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)).resize((80, 60), Image.BILINEAR).save(path)
    return path


def test_evaluate_json_has_the_contract_keys_and_matches_evaluate_run(tiny_run, capsys):
    assert main(["evaluate", str(tiny_run), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {"n", "age_mae", "gender_accuracy", "race_accuracy", "confusion", "report", "subgroups"} <= set(out)
    assert set(out["confusion"]) == {"gender", "race"}
    ev = evaluate_run(tiny_run)
    assert out["n"] == ev.n == N_IMAGES // 2
    assert out["age_mae"] == pytest.approx(ev.age_mae)
    assert np.array(out["confusion"]["race"]).sum() == ev.n


def test_evaluate_text_summary_is_readable(tiny_run, capsys):
    assert main(["evaluate", str(tiny_run)]) == 0
    out = capsys.readouterr().out
    assert "Age MAE" in out and "Race confusion (rows true, columns predicted)" in out
    assert "Subgroups" in out


def test_evaluate_age_range_filters_the_test_rows(tiny_run, capsys):
    assert main(["evaluate", str(tiny_run), "--min-age", "30", "--max-age", "45", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    split = pd.read_csv(tiny_run / "split.csv")
    test = split[split["split"] == "test"]
    assert out["n"] == int(test["age"].between(30, 45).sum())


def test_evaluate_on_a_data_folder(tiny_run, capsys):
    data = Path(pd.read_csv(tiny_run / "split.csv")["path"].iloc[0]).parent
    assert main(["evaluate", str(tiny_run), "--data", str(data), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n"] == N_IMAGES


@pytest.mark.parametrize(
    "args, message",
    [
        (["evaluate", "{missing}"], "does not exist"),
        (["evaluate", "{run}", "--data", "{missing}"], "does not exist"),
        (["evaluate", "{run}", "--min-age", "50", "--max-age", "20"], "must not exceed"),
        (["evaluate", "{not_run}"], "config.json is missing"),
    ],
)
def test_evaluate_bad_input_exits_2_with_one_line(tiny_run, tmp_path, capsys, args, message):
    names = {"missing": str(tmp_path / "missing"), "run": str(tiny_run), "not_run": str(tmp_path)}
    assert main([a.format(**names) for a in args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err


def test_evaluate_broken_model_exits_2(tiny_run, tmp_path, capsys):
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("config.json", "split.csv", "status.json"):
        (broken / name).write_bytes((tiny_run / name).read_bytes())
    (broken / "model.keras").write_bytes(b"not a keras archive")
    assert main(["evaluate", str(broken)]) == 2
    assert "could not be loaded" in capsys.readouterr().err


def test_predict_json_gives_one_face_per_cropped_image(tiny_run, face_file, capsys):
    assert main(["predict", str(tiny_run), str(face_file), str(face_file), "--no-detect", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out) == 2 and all(len(faces) == 1 for faces in out)
    face = out[0][0]
    assert face["box"] == [10, 0, 60, 60]  # the centre square of an 80x60 image
    assert set(face["gender_probs"]) == {"male", "female"} and len(face["race_probs"]) == 5
    assert sum(face["race_probs"].values()) == pytest.approx(1, abs=1e-3)
    assert 10 <= face["age"] <= 65


def test_predict_text_names_age_gender_and_race(tiny_run, face_file, capsys):
    assert main(["predict", str(tiny_run), str(face_file), "--no-detect"]) == 0
    out = capsys.readouterr().out
    assert "1 face(s)" in out and "age" in out and "face 1 at x=10 y=0 w=60 h=60" in out


def test_predict_unreadable_image_exits_2(tiny_run, tmp_path, capsys):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8 this is not a jpeg")
    assert main(["predict", str(tiny_run), str(bad), "--no-detect"]) == 2
    err = capsys.readouterr().err.strip()
    assert str(bad) in err and "\n" not in err


def test_predict_missing_run_exits_2(tmp_path, face_file, capsys):
    assert main(["predict", str(tmp_path / "nope"), str(face_file)]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_predict_run_without_model_exits_2(tiny_run, tmp_path, face_file, capsys):
    empty = tmp_path / "nomodel"
    empty.mkdir()
    (empty / "config.json").write_bytes((tiny_run / "config.json").read_bytes())
    assert main(["predict", str(empty), str(face_file)]) == 2
    assert "model" in capsys.readouterr().err
