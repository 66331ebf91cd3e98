"""Shared fixtures: an isolated app data directory and tiny generated UTKFace-style folders."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

# Every test session gets its own app data and runs folders, never the user's.
_SESSION_DIR = Path(tempfile.mkdtemp(prefix="utkface-tests-"))
os.environ["UTKFACE_APP_DIR"] = str(_SESSION_DIR / "app")
os.environ["UTKFACE_RUNS_DIR"] = str(_SESSION_DIR / "runs")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# No standby workers (utkface_core.standby) unless a test asks: each would import TensorFlow in the background.
os.environ.setdefault("UTKFACE_STANDBY", "0")
# Private mode only opens folders under the allowed roots; tests build their data sets in the temp folder.
_ROOTS = [tempfile.gettempdir(), str(Path.home()), os.environ.get("UTKFACE_DIR", "")]
os.environ.setdefault("UTKFACE_ALLOWED_ROOTS", os.pathsep.join(r for r in _ROOTS if r))

REPO = Path(__file__).resolve().parents[1]


def write_jpeg(path: Path, seed: int = 0, size: int = 32) -> Path:
    """Write a small random RGB JPEG (content depends on seed)."""
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(path, "JPEG")
    return path


@pytest.fixture
def app_dir(tmp_path, monkeypatch) -> Path:
    """A fresh app data directory for one test."""
    monkeypatch.setenv("UTKFACE_APP_DIR", str(tmp_path / "app"))
    monkeypatch.setenv("UTKFACE_RUNS_DIR", str(tmp_path / "runs"))
    return tmp_path / "app"


@pytest.fixture
def utk_folder(tmp_path, app_dir) -> Path:
    """A tiny UTKFace-style folder: 12 good names, the known name defects, a duplicate pair and a non-image."""
    root = tmp_path / "utk"
    for i in range(12):
        write_jpeg(root / f"{20 + i}_{i % 2}_{i % 5}_2017011617452{i:04d}.jpg.chip.jpg", seed=i)
    write_jpeg(root / "39_1_20170116174525125.jpg.chip.jpg", seed=100)  # no race field
    write_jpeg(root / "28_1_2_201701161846515488.jpg.chip.jpg", seed=101)  # 18-digit stamp
    write_jpeg(root / "24_0_1_20170116220224657 .jpg.chip.jpg", seed=102)  # space before .jpg
    write_jpeg(root / "55_0_0_20170116232725357jpg.chip.jpg", seed=103)  # no dot before jpg
    # Byte-identical pair with agreeing labels, and a pair with conflicting labels.
    write_jpeg(root / "30_0_0_20170101000000001.jpg.chip.jpg", seed=200)
    write_jpeg(root / "30_0_0_20170101000000002.jpg.chip.jpg", seed=200)
    write_jpeg(root / "40_1_1_20170101000000003.jpg.chip.jpg", seed=201)
    write_jpeg(root / "45_1_3_20170101000000004.jpg.chip.jpg", seed=201)
    (root / "notes.txt").write_text("not an image")
    return root
