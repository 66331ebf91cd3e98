"""Atomic file writes and the sweep of stale temporaries: the one place that publishes a file by rename.

A file is written to a hidden sibling ``.<name>.tmp-<pid>-<token>[suffix]`` and renamed over its target, so a
reader sees the old file or the new one, never half of one. A process killed while writing leaves that temp
behind; ``sweep_stale_temp`` removes temps older than any live writer could be.
"""

from __future__ import annotations

import math
import os
import secrets
import shutil
import time
from collections.abc import Callable
from pathlib import Path

TEMP_MARK = ".tmp-"
# What every temp made here matches (``.model.keras.tmp-123-ab12cd34.keras``, ``.demo.tmp-123-ab12cd34``).
TEMP_PATTERN = f".*{TEMP_MARK}*"


def temp_path(path: str | Path, suffix: str = "") -> Path:
    """Return a new, unused hidden sibling of ``path`` to write to: ``.<name>.tmp-<pid>-<token><suffix>``.

    ``suffix`` serves writers that insist on an extension (``model.save`` needs ``.keras``).
    """
    path = Path(path)
    if not path.name or path.name in (".", ".."):
        raise ValueError(f"{str(path)!r} names no file: give a file path")
    if not isinstance(suffix, str) or "/" in suffix or os.sep in suffix:
        raise ValueError(f"suffix must be a plain file extension such as '.keras', got {suffix!r}")
    return path.with_name(f".{path.name}{TEMP_MARK}{os.getpid()}-{secrets.token_hex(4)}{suffix}")


def make_temp_dir(path: str | Path, mode: int = 0o777) -> Path:
    """Create and return an empty hidden folder beside ``path`` to assemble it in (see ``temp_path``).

    Rename it onto ``path`` when complete; until then a sweep with ``TEMP_PATTERN`` may remove it once stale.
    """
    tmp = temp_path(path)
    tmp.mkdir(mode=mode)
    return tmp


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(
    path: str | Path,
    write: Callable[[Path], object],
    *,
    suffix: str = "",
    fsync: bool = True,
    exclusive: bool = False,
) -> Path:
    """Publish a file at ``path`` that ``write(tmp)`` creates at a temp path beside it; return ``path``.

    The temp is flushed to disk (``fsync``) and renamed over ``path``; if ``write`` raises, ``path`` keeps its
    old content and the temp is removed. ``exclusive`` publishes only if ``path`` does not exist yet
    (FileExistsError otherwise; the existing file wins), for files such as secrets that must never change.
    """
    if not callable(write):
        raise TypeError(f"write must be a callable that writes the file at the Path it is given, got {write!r}")
    path = Path(path)
    tmp = temp_path(path, suffix)
    try:
        write(tmp)
        if not tmp.is_file():
            raise RuntimeError(f"the writer for {path} did not create a file at {tmp}")
        if fsync:
            _fsync_file(tmp)
        if exclusive:
            os.link(tmp, path)  # fails when path exists: never replaces what another process wrote first
        else:
            os.replace(tmp, path)
    finally:
        _discard(tmp)
    return path


def _discard(tmp: Path) -> None:
    if tmp.is_dir() and not tmp.is_symlink():
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        tmp.unlink(missing_ok=True)


def write_bytes_atomic(
    path: str | Path, data: bytes, *, mode: int = 0o666, fsync: bool = True, exclusive: bool = False
) -> Path:
    """Atomically write ``data`` to ``path`` (see ``write_atomic``); the file is created with ``mode`` (less umask)."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"data must be bytes, got {type(data).__name__}")

    def write(tmp: Path) -> None:
        # Created with its final mode: a secret is never readable by others, not even for a moment.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)

    return write_atomic(path, write, fsync=fsync, exclusive=exclusive)


def write_text_atomic(path: str | Path, text: str, *, encoding: str = "utf-8", fsync: bool = True) -> Path:
    """Atomically write ``text`` to ``path`` (see ``write_atomic``)."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    return write_bytes_atomic(path, text.encode(encoding), fsync=fsync)


def sweep_stale_temp(
    folder: str | Path, pattern: str = TEMP_PATTERN, older_than_s: float = 3600.0, *, now: float | None = None
) -> int:
    """Delete the temp files and folders in ``folder`` matching ``pattern`` last changed over ``older_than_s`` ago.

    They are what a process killed while writing leaves behind; younger ones may still be in use and are kept.
    ``pattern`` is a glob of names in ``folder`` and must name temporaries (contain "tmp"). Links are removed, never
    followed. Returns how many were removed; a missing folder has none.
    """
    if not isinstance(pattern, str) or "tmp" not in pattern or "/" in pattern or os.sep in pattern:
        raise ValueError(f"pattern must be a glob of temp names in one folder (containing 'tmp'), got {pattern!r}")
    if isinstance(older_than_s, bool) or not isinstance(older_than_s, (int, float)) or not older_than_s >= 0:
        raise ValueError(f"older_than_s must be a number of seconds >= 0, got {older_than_s!r}")
    if not math.isfinite(older_than_s):
        raise ValueError(f"older_than_s must be finite, got {older_than_s!r}")
    folder = Path(folder)
    now = time.time() if now is None else now
    try:
        candidates = list(folder.glob(pattern))
    except OSError:
        return 0
    removed = 0
    for path in candidates:
        try:
            if now - path.lstat().st_mtime <= older_than_s:
                continue
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
            removed += 1
        except OSError:
            continue  # gone already, or not ours to remove: the next sweep tries again
    return removed
