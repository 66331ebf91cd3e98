"""The app-data janitor: keeps decode caches, extracted uploads and index caches within a byte budget.

``sweep()`` first deletes uploads unused for longer than ``upload_ttl_s``, then, while the total is
over ``app_data_budget_mb``, the least recently used entries of any kind. Runs (``runs_dir()``),
the demo set and the server secret are never touched; neither are temp files of a build in
progress or entries used in the last ``protect_s`` seconds. Call it at start and after each job.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from utkface_core import limits
from utkface_core import paths as app_paths

KINDS: tuple[str, ...] = ("images", "uploads", "index")
_LOCK = threading.Lock()


@dataclass
class Entry:
    """One deletable unit: a decode cache (.npy + .json), an extracted upload (folder + manifest) or an index pickle."""

    kind: str
    name: str
    paths: list[Path]
    nbytes: int
    last_used: float


@dataclass
class SweepReport:
    """What a sweep found and removed (sizes in bytes); ``removed`` rows name the kind, entry, size and why."""

    budget_bytes: int
    before_bytes: int
    after_bytes: int
    removed: list[dict] = field(default_factory=list)
    kept_recent: int = 0

    @property
    def freed_bytes(self) -> int:
        """Bytes deleted by the sweep."""
        return sum(row["bytes"] for row in self.removed)


def _size(path: Path) -> int:
    if path.is_symlink() or path.is_file():
        with contextlib.suppress(OSError):
            return path.lstat().st_size
        return 0
    total = 0
    for dirpath, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, name)).st_size
    return total


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def entries(root: Path | None = None) -> list[Entry]:
    """Every deletable entry under the app data folder ``root`` (default ``app_data_dir()``)."""
    root = Path(root) if root is not None else app_paths.app_data_dir()
    found: list[Entry] = []
    images = root / "images"
    if images.is_dir():
        for meta in images.glob("[0-9a-f]*.json"):
            key = meta.stem
            parts = [p for p in (meta, images / f"{key}.npy") if p.exists()]
            found.append(Entry("images", key, parts, sum(_size(p) for p in parts), _mtime(meta)))
        for npy in images.glob("[0-9a-f]*.npy"):
            if not npy.with_suffix(".json").exists():  # an orphan: its commit marker was lost
                found.append(Entry("images", npy.stem, [npy], _size(npy), _mtime(npy)))
    uploads = root / "uploads"
    if uploads.is_dir():
        for folder in _upload_folders(uploads):
            manifest = folder.with_name(f"{folder.name}.json")
            parts = [folder] + ([manifest] if manifest.exists() else [])
            found.append(
                Entry(
                    "uploads",
                    folder.relative_to(uploads).as_posix(),
                    parts,
                    sum(_size(p) for p in parts),
                    _mtime(folder),
                )
            )
    index = root / "index"
    if index.is_dir():
        for pkl in index.glob("*.pkl"):
            found.append(Entry("index", pkl.name, [pkl], _size(pkl), _mtime(pkl)))
    return found


def _upload_folders(uploads: Path) -> list[Path]:
    """Extracted archives: ``uploads/<digest>`` and per-session ``uploads/s-*/<digest>``; also old batch folders."""
    folders = []
    for child in uploads.iterdir():
        if child.name.startswith(".") or not child.is_dir() or child.is_symlink():
            continue
        if child.name.startswith("s-"):
            folders += [g for g in child.iterdir() if g.is_dir() and not g.is_symlink() and not g.name.startswith(".")]
        else:
            folders.append(child)
    return folders


def _remove(entry: Entry) -> None:
    for path in entry.paths:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                path.unlink()
    if entry.kind == "uploads":
        parent = entry.paths[0].parent
        if parent.name.startswith("s-"):
            with contextlib.suppress(OSError):
                parent.rmdir()  # only when empty


def sweep(
    budget_bytes: int | None = None,
    *,
    root: Path | None = None,
    upload_ttl_s: float | None = None,
    protect_s: float = 600.0,
    now: float | None = None,
) -> SweepReport:
    """Bring the app data caches under ``budget_bytes`` (default: the ``app_data_budget_mb`` limit).

    Uploads unused for ``upload_ttl_s`` (default: the limit) go first, then least recently used
    entries until the total fits. Entries used less than ``protect_s`` seconds ago are kept even
    over budget (``kept_recent`` counts them). Runs are never deleted. Returns a SweepReport.
    """
    if budget_bytes is None:
        budget_bytes = int(limits.get("app_data_budget_mb")) * 1024 * 1024
    if isinstance(budget_bytes, bool) or not isinstance(budget_bytes, int) or budget_bytes < 0:
        raise ValueError(f"budget_bytes must be an integer >= 0, got {budget_bytes!r}")
    if upload_ttl_s is None:
        upload_ttl_s = float(limits.get("upload_ttl_s"))
    if isinstance(protect_s, bool) or not isinstance(protect_s, (int, float)) or protect_s < 0:
        raise ValueError(f"protect_s must be a number of seconds >= 0, got {protect_s!r}")
    now = time.time() if now is None else now
    with _LOCK:
        found = entries(root)
        total = sum(e.nbytes for e in found)
        report = SweepReport(budget_bytes=budget_bytes, before_bytes=total, after_bytes=total)
        remaining: list[Entry] = []
        for entry in found:
            if entry.kind == "uploads" and now - entry.last_used > upload_ttl_s:
                _remove(entry)
                total -= entry.nbytes
                report.removed.append(_row(entry, f"upload unused for more than {upload_ttl_s:g} s"))
            else:
                remaining.append(entry)
        for entry in sorted(remaining, key=lambda e: e.last_used):
            if total <= budget_bytes:
                break
            if now - entry.last_used < protect_s:
                report.kept_recent += 1
                continue
            _remove(entry)
            total -= entry.nbytes
            report.removed.append(_row(entry, f"over the {limits.fmt_bytes(budget_bytes)} budget, least recently used"))
        report.after_bytes = total
    return report


_BACKGROUND: dict[str, object] = {}


def start_background(interval_s: float | None = None) -> dict:
    """Sweep now and then every ``interval_s`` seconds (default: the ``janitor_interval_s`` limit) in a daemon thread.

    Once per process: later calls return the same state dict, whose ``report`` (last SweepReport),
    ``error`` and ``sweeps`` keys the caller may read.
    """
    with _LOCK:
        if _BACKGROUND:
            return _BACKGROUND
        _BACKGROUND["sweeps"] = 0

    def loop() -> None:
        while True:
            try:
                _BACKGROUND["report"] = sweep()
                _BACKGROUND.pop("error", None)
            except (OSError, ValueError) as exc:
                _BACKGROUND["error"] = str(exc)
            _BACKGROUND["sweeps"] = int(_BACKGROUND["sweeps"]) + 1  # type: ignore[call-overload]
            try:
                wait = float(interval_s if interval_s is not None else limits.get("janitor_interval_s"))
            except ValueError:
                wait = 600.0
            time.sleep(wait)  # a daemon thread's pacing, not a test wait

    threading.Thread(target=loop, name="janitor", daemon=True).start()
    return _BACKGROUND


def _row(entry: Entry, reason: str) -> dict:
    return {"kind": entry.kind, "name": entry.name, "bytes": entry.nbytes, "reason": reason}
