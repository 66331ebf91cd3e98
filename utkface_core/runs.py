"""Training run directories: creation, atomic JSON, status, listing (robust to damage), loading and deletion."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from utkface_core.paths import runs_dir

STATES: tuple[str, ...] = ("running", "completed", "stopped", "failed")
CONFIG_FILE = "config.json"
STATUS_FILE = "status.json"
METRICS_FILE = "metrics.json"
HISTORY_FILE = "history.csv"
MODEL_FILE = "model.keras"
SPLIT_FILE = "split.csv"


class RunError(ValueError):
    """A run directory request was invalid (bad name, path outside the runs root, missing run)."""


@dataclass
class RunInfo:
    """What is known about one run directory; ``state`` is also "interrupted" or "broken" when applicable."""

    path: Path
    name: str
    state: str
    created: str | None
    config: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] | None = None
    error: str | None = None
    message: str | None = None
    has_model: bool = False


def _root(root: str | Path | None) -> Path:
    if root is None:
        return runs_dir()
    path = Path(root).expanduser().resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


def create_run_dir(root: str | Path | None = None, name: str | None = None) -> Path:
    """Create and return a new, unique run folder ``<root>/<YYYYmmdd-HHMMSS>[-name][-n]``."""
    base = _root(root)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    label = stamp
    if name:
        slug = re.sub(r"[^A-Za-z0-9_-]+", "-", name).strip("-")[:60]
        if not slug:
            raise RunError(f"run name {name!r} has no usable characters: use letters, digits, '-' or '_'")
        label = f"{stamp}-{slug}"
    for n in range(1000):
        path = base / (label if n == 0 else f"{label}-{n}")
        try:
            path.mkdir(parents=False, exist_ok=False)
            return path
        except FileExistsError:
            continue
    raise RunError(f"could not create a unique run folder under {base}; remove old runs")


def write_json_atomic(path: str | Path, data: Any) -> Path:
    """Write ``data`` as JSON to ``path`` via a temporary file and ``os.replace`` (never half-written)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2, sort_keys=True, default=_json_default)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    return path


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def write_status(run_dir: str | Path, state: str, message: str = "", **extra: Any) -> dict[str, Any]:
    """Write ``status.json`` with state, message, pid, host and times; return what was written."""
    if state not in STATES:
        raise RunError(f"unknown run state {state!r}: use one of {list(STATES)}")
    run_dir = Path(run_dir)
    previous = _read_json(run_dir / STATUS_FILE)[0] or {}
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    status = {
        "state": state,
        "message": message,
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": previous.get("started", now),
        "updated": now,
    }
    status.update(extra)
    write_json_atomic(run_dir / STATUS_FILE, status)
    return status


def _read_json(path: Path) -> tuple[Any, str | None]:
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle), None
    except FileNotFoundError:
        return None, f"{path.name} is missing"
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return None, f"{path.name} is unreadable ({exc})"


def _process_alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True


def load_run(run_dir: str | Path) -> RunInfo:
    """Describe one run folder; never raises for damaged contents (state "broken" / "failed" with ``error``)."""
    path = Path(run_dir)
    info = RunInfo(path=path, name=path.name, state="broken", created=None)
    try:
        info.created = datetime.fromtimestamp(path.stat().st_ctime).isoformat(timespec="seconds")
    except OSError as exc:
        info.error = f"run folder is unreadable ({exc})"
        return info
    info.has_model = (path / MODEL_FILE).is_file()
    problems = []
    config, err = _read_json(path / CONFIG_FILE)
    if isinstance(config, dict):
        info.config = config
    else:
        problems.append(err or f"{CONFIG_FILE} is not a JSON object")
    status, err = _read_json(path / STATUS_FILE)
    if not isinstance(status, dict) or status.get("state") not in STATES:
        problems.append(err or f"{STATUS_FILE} has no valid state")
        status = None
    metrics, err = _read_json(path / METRICS_FILE)
    if isinstance(metrics, dict):
        info.metrics = metrics
    elif err and "unreadable" in err:
        problems.append(err)
    if status is not None:
        info.state = status["state"]
        info.message = status.get("message") or None
        info.created = status.get("started", info.created)
        if info.state == "running" and status.get("host") == socket.gethostname():
            if not _process_alive(status.get("pid")):
                info.state = "interrupted"
                problems.append("the training process ended without finishing (crash, kill or restart)")
        elif info.state == "failed":
            problems.append(info.message or "training failed")
    if info.config == {} or status is None:
        info.state = "broken"
    if problems:
        info.error = "; ".join(problems)
    return info


def list_runs(root: str | Path | None = None) -> list[RunInfo]:
    """Return all run folders under the runs root, newest first; damaged runs are listed, never raised."""
    try:
        base = _root(root)
        entries = [p for p in base.iterdir() if p.is_dir() and not p.name.startswith(".")]
    except OSError:
        return []
    infos = []
    for entry in entries:
        try:
            infos.append(load_run(entry))
        except Exception as exc:  # noqa: BLE001 - listing must survive anything a damaged folder throws
            infos.append(RunInfo(path=entry, name=entry.name, state="broken", created=None, error=str(exc)))
    infos.sort(key=lambda info: (info.created or "", info.name), reverse=True)
    return infos


def delete_run(run_dir: str | Path, root: str | Path | None = None) -> None:
    """Delete a run folder; refuse anything that is not a direct child of the runs root."""
    base = _root(root)
    path = Path(run_dir).expanduser()
    if path.is_symlink():
        raise RunError(f"{path} is a symbolic link; delete run folders only")
    resolved = path.resolve()
    if resolved.parent != base or resolved == base:
        raise RunError(f"refusing to delete {resolved}: it is not a run folder directly inside {base}")
    if not resolved.is_dir():
        raise RunError(f"run folder {resolved} does not exist")
    shutil.rmtree(resolved)


def read_history(run_dir: str | Path) -> pd.DataFrame:
    """Return the per-epoch history of a run (empty DataFrame when there is none or it is unreadable)."""
    path = Path(run_dir) / HISTORY_FILE
    try:
        return pd.read_csv(path)
    except (FileNotFoundError, pd.errors.EmptyDataError, pd.errors.ParserError, OSError, UnicodeDecodeError):
        return pd.DataFrame()
