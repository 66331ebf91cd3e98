"""Atomic writes and the sweep of stale temporaries (utkface_core.files)."""

from __future__ import annotations

import os
import stat

import pytest

from utkface_core import files


def _crash(tmp):
    tmp.write_bytes(b"half of the new")
    raise RuntimeError("killed mid-write")


def test_write_atomic_replaces_the_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "a.json"
    target.write_text("old")
    assert files.write_atomic(target, lambda tmp: tmp.write_text("new")) == target
    assert target.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


def test_a_crash_mid_write_keeps_the_old_file_and_removes_the_temp(tmp_path):
    target = tmp_path / "model.keras"
    target.write_bytes(b"the old model")
    with pytest.raises(RuntimeError, match="killed mid-write"):
        files.write_atomic(target, _crash, suffix=".keras")
    assert target.read_bytes() == b"the old model"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.keras"]


def test_a_crash_mid_write_of_a_new_file_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError):
        files.write_atomic(tmp_path / "new.csv", _crash)
    assert list(tmp_path.iterdir()) == []


def test_the_writer_gets_a_hidden_temp_beside_the_target_with_the_asked_suffix(tmp_path):
    seen = []
    files.write_atomic(tmp_path / "model.keras", lambda tmp: (seen.append(tmp), tmp.write_bytes(b"m")), suffix=".keras")
    (tmp,) = seen
    assert tmp.parent == tmp_path and tmp.name.startswith(".model.keras.tmp-") and tmp.suffix == ".keras"
    assert tmp.match(files.TEMP_PATTERN)


def test_a_writer_that_writes_nothing_is_an_error_and_the_old_file_stays(tmp_path):
    target = tmp_path / "a.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="did not create a file"):
        files.write_atomic(target, lambda tmp: None)
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


def test_write_text_and_bytes_atomic(tmp_path):
    files.write_text_atomic(tmp_path / "t.txt", "héllo")
    files.write_bytes_atomic(tmp_path / "b.bin", b"\x00\x01")
    assert (tmp_path / "t.txt").read_text(encoding="utf-8") == "héllo"
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"


def test_write_bytes_atomic_creates_the_file_with_its_mode(tmp_path):
    files.write_bytes_atomic(tmp_path / "secret.key", b"k" * 32, mode=0o600)
    assert stat.S_IMODE((tmp_path / "secret.key").stat().st_mode) == 0o600


def test_an_exclusive_write_never_replaces_an_existing_file(tmp_path):
    target = tmp_path / "secret.key"
    files.write_bytes_atomic(target, b"first", exclusive=True)
    with pytest.raises(FileExistsError):
        files.write_bytes_atomic(target, b"second", exclusive=True)
    assert target.read_bytes() == b"first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["secret.key"]


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda d: files.write_atomic(d / "x", "not callable"), TypeError, "write must be a callable"),
        (lambda d: files.write_bytes_atomic(d / "x", "text"), TypeError, "data must be bytes"),
        (lambda d: files.write_text_atomic(d / "x", b"bytes"), TypeError, "text must be a str"),
        (lambda d: files.write_atomic(d / "x", lambda t: None, suffix="/evil"), ValueError, "suffix"),
        (lambda d: files.temp_path(d / ".."), ValueError, "names no file"),
        (lambda d: files.sweep_stale_temp(d, "*", 10), ValueError, "pattern"),
        (lambda d: files.sweep_stale_temp(d, "sub/.*.tmp-*", 10), ValueError, "pattern"),
        (lambda d: files.sweep_stale_temp(d, files.TEMP_PATTERN, -1), ValueError, "older_than_s"),
        (lambda d: files.sweep_stale_temp(d, files.TEMP_PATTERN, float("inf")), ValueError, "finite"),
        (lambda d: files.sweep_stale_temp(d, files.TEMP_PATTERN, True), ValueError, "older_than_s"),
    ],
)
def test_bad_arguments_raise(tmp_path, call, error, message):
    with pytest.raises(error, match=message):
        call(tmp_path)
    assert list(tmp_path.iterdir()) == []


def _age(path, seconds):
    when = path.lstat().st_mtime - seconds
    os.utime(path, (when, when), follow_symlinks=False)


def test_stale_temps_are_swept_and_young_ones_kept(tmp_path):
    stale_file = files.temp_path(tmp_path / "history.csv")
    stale_file.write_text("half")
    stale_dir = files.make_temp_dir(tmp_path / "demo")
    (stale_dir / "img.jpg").write_bytes(b"x")
    young = files.temp_path(tmp_path / "status.json")
    young.write_text("being written")
    keep = tmp_path / "history.csv"
    keep.write_text("real")
    for path in (stale_file, stale_dir, keep):
        _age(path, 7200)
    assert files.sweep_stale_temp(tmp_path, files.TEMP_PATTERN, 3600) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([young.name, "history.csv"])


def test_a_sweep_removes_a_stale_link_but_not_what_it_points_to(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious").write_text("keep")
    folder = tmp_path / "run"
    folder.mkdir()
    link = folder / ".x.tmp-1-abcd"
    link.symlink_to(outside, target_is_directory=True)
    _age(link, 7200)
    assert files.sweep_stale_temp(folder, files.TEMP_PATTERN, 3600) == 1
    assert not link.exists() and (outside / "precious").read_text() == "keep"


def test_a_sweep_of_a_missing_folder_removes_nothing(tmp_path):
    assert files.sweep_stale_temp(tmp_path / "missing", files.TEMP_PATTERN, 0) == 0


def test_a_sweep_takes_the_time_it_is_given(tmp_path):
    tmp = files.temp_path(tmp_path / "a")
    tmp.write_text("x")
    now = tmp.lstat().st_mtime
    assert files.sweep_stale_temp(tmp_path, files.TEMP_PATTERN, 60, now=now + 60) == 0
    assert files.sweep_stale_temp(tmp_path, files.TEMP_PATTERN, 60, now=now + 61) == 1
