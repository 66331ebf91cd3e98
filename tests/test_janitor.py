"""The app-data janitor: byte budget, least recently used first, upload time-to-live, runs never touched."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

from tests.conftest import write_jpeg
from tests.hostile import folder_bytes
from utkface_core import janitor, paths
from utkface_core.data import imagecache


def age(path, seconds_ago: float) -> None:
    stamp = time.time() - seconds_ago
    os.utime(path, (stamp, stamp))


@pytest.fixture
def filled(app_dir, tmp_path):
    """Two decode caches (the older one least recently used), one extracted upload, one index pickle, one run."""
    data = [write_jpeg(tmp_path / "data" / f"{20 + i}_0_0_2017.jpg.chip.jpg", seed=i) for i in range(4)]
    old = imagecache.build_image_cache(data, 64)
    new = imagecache.build_image_cache(data, 32)
    age(old.path.with_suffix(".json"), 3000)
    age(new.path.with_suffix(".json"), 2000)
    upload = paths.data_subdir("uploads") / "s-abc" / "0123456789abcdef"
    write_jpeg(upload / "30_1_1_2017.jpg.chip.jpg", size=64)
    age(upload, 1000)
    index = paths.data_subdir("index") / "x.pkl"
    index.write_bytes(b"\0" * 5000)
    age(index, 500)
    run = paths.runs_dir() / "run-1"
    run.mkdir()
    (run / "model.keras").write_bytes(b"\0" * 100_000)
    age(run, 10**6)
    return {"old": old, "new": new, "upload": upload, "index": index, "run": run}


def test_tiny_budget_removes_least_recently_used_first(filled):
    total = sum(e.nbytes for e in janitor.entries())
    oldest = filled["old"].path.stat().st_size + filled["old"].path.with_suffix(".json").stat().st_size
    report = janitor.sweep(budget_bytes=total - 1, protect_s=0)
    assert [row["name"] for row in report.removed] == [filled["old"].key]
    assert report.before_bytes == total and report.after_bytes == total - oldest <= total - 1
    assert not filled["old"].path.exists() and filled["new"].path.exists()
    assert imagecache.load_image_cache(filled["old"].key) is None  # rebuilt on next use


def test_zero_budget_empties_the_caches_but_never_runs(filled):
    report = janitor.sweep(budget_bytes=0, protect_s=0)
    assert {row["kind"] for row in report.removed} == {"images", "uploads", "index"}
    assert report.after_bytes == 0 and janitor.entries() == []
    assert (filled["run"] / "model.keras").stat().st_size == 100_000
    assert folder_bytes(paths.data_subdir("uploads")) == 0


def test_recently_used_entries_are_kept_over_budget(filled):
    report = janitor.sweep(budget_bytes=0, protect_s=2500)
    assert [row["name"] for row in report.removed] == [filled["old"].key]
    assert report.kept_recent == 3 and filled["new"].path.exists() and filled["upload"].exists()


def test_uploads_expire_after_their_time_to_live(filled):
    report = janitor.sweep(budget_bytes=10**12, upload_ttl_s=600, protect_s=0)
    assert [row["kind"] for row in report.removed] == ["uploads"]
    assert not filled["upload"].exists()
    assert filled["new"].path.exists() and filled["index"].exists()


def test_default_budget_comes_from_the_limit(filled, monkeypatch):
    monkeypatch.setenv("UTKFACE_APP_DATA_BUDGET_MB", "1")  # 1 MiB: more than these tiny caches
    assert janitor.sweep(protect_s=0).budget_bytes == 1024 * 1024


def test_bad_arguments_raise(app_dir):
    with pytest.raises(ValueError, match="budget_bytes"):
        janitor.sweep(budget_bytes=-1)
    with pytest.raises(ValueError, match="protect_s"):
        janitor.sweep(budget_bytes=0, protect_s=-5)


def test_cache_hits_count_as_use(filled):
    stamp = filled["old"].path.with_suffix(".json").stat().st_mtime
    imagecache.load_image_cache(filled["old"].key)
    assert filled["old"].path.with_suffix(".json").stat().st_mtime > stamp + 1000
    assert np.asarray(filled["old"].images).shape[0] == 4


def test_background_janitor_sweeps_once_per_process(app_dir):
    state = janitor.start_background(interval_s=3600)
    assert janitor.start_background() is state
    deadline = time.time() + 60
    while state.get("sweeps", 0) < 1 and time.time() < deadline:
        time.sleep(0.05)
    assert state["sweeps"] >= 1 and "error" not in state
