"""Data sources the app can work on: the synthetic demo set, a folder, a named data folder, or an uploaded archive.

``folder_source`` trusts its caller (the CLI, a training worker given a folder the page already
approved); a path a visitor typed goes through ``visitor_folder_source``, which applies the server
mode and the allowed roots of ``utkface_core.access``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from utkface_core import access
from utkface_core import paths as app_paths

DEMO_N = 3000
DEMO_SEED = 0
_SESSION_RE = re.compile(r"^[A-Za-z0-9_-]{8,128}$")


@dataclass(frozen=True)
class DataSource:
    """A resolved data set folder and how to label it in the UI (the label never holds a path in public mode)."""

    kind: str  # "demo", "folder", "named" or "archive"
    path: Path
    label: str

    @property
    def synthetic(self) -> bool:
        """True for the generated demo set."""
        return self.kind == "demo"


def demo_source(
    n: int = DEMO_N, seed: int = DEMO_SEED, progress: Callable[[int, int], None] | None = None
) -> DataSource:
    """The synthetic demo set, generated on first use into the app data directory."""
    from utkface_core.data.demo import ensure_demo_dataset

    path = ensure_demo_dataset(n=n, seed=seed, progress=progress)
    return DataSource("demo", path, f"Synthetic demo faces ({n} generated images, not real people)")


def folder_source(path: str | Path) -> DataSource:
    """A folder of UTKFace images named by a trusted caller; FileNotFoundError with advice when it is not there."""
    folder = Path(str(path).strip()).expanduser()
    if not str(path).strip():
        raise FileNotFoundError("no folder given: type the path of a folder holding UTKFace images")
    if not folder.exists():
        raise FileNotFoundError(f"folder {folder} does not exist: check the path (or set UTKFACE_DIR)")
    if not folder.is_dir():
        raise FileNotFoundError(
            f"{folder} is a file, not a folder: give the folder that holds the images, or upload an archive"
        )
    return DataSource("folder", folder.resolve(), f"Folder {folder.resolve()}")


def visitor_folder_source(text: str, mode: str | None = None) -> DataSource:
    """A folder path typed by a visitor: refused in public mode and outside the allowed roots (AccessError)."""
    real = access.resolve_folder(text, mode)
    return DataSource("folder", real, f"Folder {real}")


def named_source(name: str) -> DataSource:
    """One of the operator's named data folders (``UTKFACE_DATA_ROOTS``), labelled by its name only."""
    return DataSource("named", access.named_root(name), f"Data folder “{name}”")


def session_upload_root(session_id: str) -> Path:
    """The folder holding one session's extracted uploads (private to that session), created."""
    if not isinstance(session_id, str) or not _SESSION_RE.match(session_id):
        raise ValueError("session_id must be 8-128 characters of letters, digits, '-' or '_'")
    # Hashed, so a folder name never tells whose session it is.
    digest = hashlib.sha256(session_id.encode()).hexdigest()[:24]
    path = app_paths.data_subdir("uploads") / f"s-{digest}"
    path.mkdir(parents=True, exist_ok=True)
    return path


def archive_source(data: bytes, name: str, session_id: str | None = None) -> DataSource:
    """An uploaded .zip/.tar/.tar.gz archive, safely extracted into the app data directory.

    With ``session_id`` it goes into that session's own folder (``session_upload_root``): the same
    archive uploaded again by the session reuses it, and ``release_uploads`` removes it when the
    session ends. Its last use is recorded for the janitor's time-to-live.
    """
    from utkface_core.data.archive import extract_archive

    root = session_upload_root(session_id) if session_id is not None else None
    result = extract_archive(data, dest_root=root)
    touch(result.dest)
    label_name = Path(str(name)).name or "upload"
    return DataSource("archive", result.dest, f"Archive {label_name} ({result.extracted} images extracted)")


def touch(path: Path) -> None:
    """Record that an extracted upload was used now (the janitor deletes uploads unused for a while)."""
    with contextlib.suppress(OSError):
        os.utime(path)


def release_uploads(session_id: str, keep: Path | None = None) -> int:
    """Delete a session's extracted uploads (all but ``keep``); return how many folders were removed."""
    root = session_upload_root(session_id)
    removed = 0
    for entry in list(root.iterdir()):
        if keep is not None and entry.resolve() in (keep.resolve(), keep.resolve().with_name(f"{keep.name}.json")):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
            removed += 1
        else:
            with contextlib.suppress(OSError):
                entry.unlink()
    if keep is None:
        with contextlib.suppress(OSError):
            root.rmdir()
    return removed
