"""Where the app keeps its data: caches, extracted archives, runs (never inside the repository)."""

from __future__ import annotations

import os
from pathlib import Path


def app_data_dir() -> Path:
    """Return the app data directory (``UTKFACE_APP_DIR`` or ``~/.cache/utkface-dashboard``), created."""
    root = os.environ.get("UTKFACE_APP_DIR") or str(Path.home() / ".cache" / "utkface-dashboard")
    path = Path(root).expanduser().resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


def data_subdir(kind: str) -> Path:
    """Return ``app_data_dir()/kind``, created (kinds: ``demo``, ``images``, ``uploads``, ``index``)."""
    path = app_data_dir() / kind
    path.mkdir(parents=True, exist_ok=True)
    return path


def runs_dir() -> Path:
    """Return the training runs folder (``UTKFACE_RUNS_DIR`` or ``app_data_dir()/runs``), created."""
    root = os.environ.get("UTKFACE_RUNS_DIR")
    path = Path(root).expanduser().resolve() if root else app_data_dir() / "runs"
    path.mkdir(parents=True, exist_ok=True)
    return path
