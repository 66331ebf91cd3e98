"""Run and job folders: creation, atomic JSON, status with heartbeat, events, control, listing, trash.

This module owns the folder format that the app and the worker processes share:
``job.json`` (the job spec: kind, args, owner), ``config.json``, ``status.json`` (state, pid, heartbeat, progress),
``control.json`` (written by the app, read by the worker between batches), ``events.jsonl`` (append-only),
``history.csv``, ``metrics.json``, ``model.keras`` and ``split.csv``.
"""

from __future__ import annotations

import hmac
import json
import os
import re
import secrets
import shutil
import socket
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from utkface_core.files import TEMP_PATTERN, make_temp_dir, sweep_stale_temp, write_text_atomic
from utkface_core.paths import runs_dir

STATES: tuple[str, ...] = ("preparing", "queued", "running", "completed", "stopped", "failed")
ACTIVE_STATES: tuple[str, ...] = ("preparing", "queued", "running")
CONFIG_FILE = "config.json"
STATUS_FILE = "status.json"
METRICS_FILE = "metrics.json"
HISTORY_FILE = "history.csv"
MODEL_FILE = "model.keras"
SPLIT_FILE = "split.csv"
JOB_FILE = "job.json"
EVENTS_FILE = "events.jsonl"
CONTROL_FILE = "control.json"
ERROR_FILE = "error.log"
TRASH_DIR = ".trash"
# A worker writes its heartbeat every second or so; this much silence means it is gone (or frozen).
HEARTBEAT_STALE_S = 45.0
TRASH_KEEP_S = 24 * 3600.0
TEMP_KEEP_S = 3600.0
_STATUS_LOCK = threading.Lock()  # status.json is read-modify-written by several threads of a worker


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
    owner: str | None = None  # opaque token of whoever started it; never displayed
    status: dict[str, Any] = field(default_factory=dict)

    @property
    def model_path(self) -> Path:
        """The run's saved model (``model.keras``; it may not exist yet, see ``has_model``)."""
        return model_path(self.path)

    @property
    def split_path(self) -> Path:
        """The run's saved split (``split.csv``: one row per image, with its labels and split name)."""
        return split_path(self.path)

    def model_mtime_ns(self) -> int:
        """Modification time (ns) of the model file, 0 when there is none: keys caches of a retrained model."""
        try:
            return self.model_path.stat().st_mtime_ns
        except OSError:
            return 0


def model_path(run_dir: str | Path) -> Path:
    """Path of a run folder's saved model (``model.keras``)."""
    return Path(run_dir) / MODEL_FILE


def split_path(run_dir: str | Path) -> Path:
    """Path of a run folder's saved split (``split.csv``)."""
    return Path(run_dir) / SPLIT_FILE


def config_path(run_dir: str | Path) -> Path:
    """Path of a run folder's ``config.json``."""
    return Path(run_dir) / CONFIG_FILE


def read_config(run_dir: str | Path, require: tuple[str, ...] = ()) -> dict[str, Any]:
    """The run's ``config.json`` as a dict holding every key in ``require``.

    RunError names the file and what to do when it is missing (not a run folder), unreadable or incomplete.
    """
    run_dir = Path(run_dir)
    path = config_path(run_dir)
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunError(f"{run_dir} is not a training run folder: {CONFIG_FILE} is missing") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RunError(f"cannot read {path}: {exc}; the run folder is damaged, retrain the run") from None
    if not isinstance(config, dict):
        raise RunError(f"{path} must hold a JSON object; the run folder is damaged, retrain the run")
    missing = [key for key in require if key not in config]
    if missing:
        raise RunError(f"{path} has no {', '.join(map(repr, missing))}; the run folder is damaged, retrain the run")
    return config


def read_metrics(run_dir: str | Path) -> dict[str, Any] | None:
    """The run's held-out test metrics (``metrics.json``) as a dict; None when missing, unreadable or not an object."""
    metrics = _read_json(Path(run_dir) / METRICS_FILE)[0]
    return metrics if isinstance(metrics, dict) else None


def write_split(run_dir: str | Path, frame: pd.DataFrame) -> Path:
    """Save the run's split (``split.csv``) atomically: one row per image, its labels and its split name."""
    return write_text_atomic(split_path(run_dir), frame.to_csv(index=False))


def write_error(run_dir: str | Path, text: str) -> Path:
    """Save a failed job's traceback (``error.log``) beside its status, for the operator."""
    return write_text_atomic(Path(run_dir) / ERROR_FILE, text, fsync=False)


def read_split(run_dir: str | Path, columns: tuple[str, ...] = ()) -> pd.DataFrame:
    """The run's saved split (``split.csv``), with at least ``columns``; RunError says what is wrong otherwise."""
    path = split_path(run_dir)
    try:
        frame = pd.read_csv(path)
    except FileNotFoundError:
        raise RunError(f"{path} is missing: the run saved no split") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise RunError(f"cannot read {path}: {exc}; the run folder is damaged") from None
    missing = sorted(set(columns) - set(frame.columns))
    if missing:
        raise RunError(f"{path} lacks column(s) {missing}; the run folder is damaged")
    return frame


def _root(root: str | Path | None) -> Path:
    if root is None:
        return runs_dir()
    path = Path(root).expanduser().resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


def _run_label(name: str | None) -> str:
    """``<YYYYmmdd-HHMMSS>[-slug]``: the base name of a new run folder."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    if not name:
        return stamp
    slug = re.sub(r"[^A-Za-z0-9_-]+", "-", name).strip("-")[:60]
    if not slug:
        raise RunError(f"run name {name!r} has no usable characters: use letters, digits, '-' or '_'")
    return f"{stamp}-{slug}"


def create_run_dir(root: str | Path | None = None, name: str | None = None) -> Path:
    """Create and return a new, unique run folder ``<root>/<YYYYmmdd-HHMMSS>[-name][-n]``."""
    base = _root(root)
    label = _run_label(name)
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
    return write_text_atomic(path, json.dumps(data, indent=2, sort_keys=True, default=_json_default))


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def write_status(run_dir: str | Path, state: str, message: str = "", **extra: Any) -> dict[str, Any]:
    """Write ``status.json`` with state, message, pid, host, times and a heartbeat; return what was written.

    Fields written earlier (owner, progress, ...) are kept unless ``extra`` replaces them.
    """
    if state not in STATES:
        raise RunError(f"unknown run state {state!r}: use one of {list(STATES)}")
    run_dir = Path(run_dir)
    with _STATUS_LOCK:
        previous = _read_json(run_dir / STATUS_FILE)[0]
        previous = previous if isinstance(previous, dict) else {}
        now = datetime.now(UTC).isoformat(timespec="seconds")
        status = dict(previous)
        status.update(
            {
                "state": state,
                "message": message,
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "started": previous.get("started", now),
                "updated": now,
                "heartbeat": time.time(),
            }
        )
        if state not in ACTIVE_STATES:
            status["ended"] = time.time()
        status.update(extra)
        write_json_atomic(run_dir / STATUS_FILE, status)
    return status


def update_status(run_dir: str | Path, **fields: Any) -> dict[str, Any] | None:
    """Merge ``fields`` into ``status.json`` and refresh the heartbeat, keeping the state; None if there is none."""
    run_dir = Path(run_dir)
    with _STATUS_LOCK:
        status = _read_json(run_dir / STATUS_FILE)[0]
        if not isinstance(status, dict):
            return None
        status.update(fields)
        status["heartbeat"] = time.time()
        write_json_atomic(run_dir / STATUS_FILE, status)
    return status


def read_status(run_dir: str | Path) -> dict[str, Any]:
    """The run's ``status.json`` as a dict (empty when missing or unreadable)."""
    status = _read_json(Path(run_dir) / STATUS_FILE)[0]
    return status if isinstance(status, dict) else {}


def read_json(path: str | Path) -> Any:
    """Read a JSON file; None when it is missing or unreadable."""
    return _read_json(Path(path))[0]


def _read_json(path: Path) -> tuple[Any, str | None]:
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle), None
    except FileNotFoundError:
        return None, f"{path.name} is missing"
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return None, f"{path.name} is unreadable ({exc})"


def process_alive(pid: Any) -> bool:
    """Whether process ``pid`` lives on this machine (a zombie counts as gone)."""
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
    try:
        # A finished child that its parent has not reaped yet still answers kill(0).
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            if handle.read().rsplit(")", 1)[-1].split()[0] in ("Z", "X"):
                return False
    except (OSError, IndexError):
        pass
    return True


def worker_alive(status: dict[str, Any], now: float | None = None) -> bool:
    """Whether the process behind an active ``status`` still lives: its pid exists here and its heartbeat is fresh."""
    now = time.time() if now is None else now
    beat = status.get("heartbeat")
    if isinstance(beat, (int, float)) and now - float(beat) > HEARTBEAT_STALE_S:
        return False
    if status.get("host") == socket.gethostname() and not process_alive(status.get("pid")):
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
    info.has_model = model_path(path).is_file()
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
        info.status = status
        info.state = status["state"]
        info.message = status.get("message") or None
        info.created = status.get("started", info.created)
        info.owner = status.get("owner") or info.config.get("owner")
        if info.state in ACTIVE_STATES:
            if not worker_alive(status):
                info.state = "interrupted"
                problems.append("the training process ended without finishing (crash, kill or restart)")
        elif info.state == "failed":
            problems.append(info.message or "training failed")
    if status is None and not (path / CONFIG_FILE).exists() and _young(path):
        # A folder being set up right now is not damaged: it only has no files yet.
        info.state, info.message = "preparing", "setting up the run folder"
        return info
    if info.config == {} or status is None:
        info.state = "broken"
    if problems:
        info.error = "; ".join(problems)
    return info


def _young(path: Path, seconds: float = 60.0) -> bool:
    try:
        return time.time() - path.stat().st_mtime < seconds
    except OSError:
        return False


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


def delete_run(run_dir: str | Path, root: str | Path | None = None) -> Path:
    """Move a run folder to the trash (``<root>/.trash``, emptied after 24 h); return where it went.

    Refuses anything that is not a direct child of the runs root.
    """
    base = _root(root)
    path = Path(run_dir).expanduser()
    if path.is_symlink():
        raise RunError(f"{path} is a symbolic link; delete run folders only")
    resolved = path.resolve()
    if resolved.parent != base or resolved == base or resolved.name.startswith("."):
        raise RunError(f"refusing to delete {resolved}: it is not a run folder directly inside {base}")
    if not resolved.is_dir():
        raise RunError(f"run folder {resolved} does not exist")
    trash = base / TRASH_DIR
    trash.mkdir(exist_ok=True)
    target = trash / f"{resolved.name}--{int(time.time())}-{secrets.token_hex(3)}"
    os.replace(resolved, target)
    os.utime(target)  # the trash keeps it for TRASH_KEEP_S from now
    return target


def sweep_trash(root: str | Path | None = None, keep_s: float = TRASH_KEEP_S, now: float | None = None) -> int:
    """Delete trashed runs older than ``keep_s`` seconds; return how many were removed."""
    trash = _root(root) / TRASH_DIR
    now = time.time() if now is None else now
    removed = 0
    try:
        entries = list(trash.iterdir())
    except OSError:
        return 0
    for entry in entries:
        try:
            if now - entry.stat().st_mtime > keep_s:
                shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
                removed += 1
        except OSError:
            continue
    return removed


def sweep_temp(root: str | Path | None = None, keep_s: float = TEMP_KEEP_S, now: float | None = None) -> int:
    """Delete temporary files and half-made folders (``.tmp-*`` names) older than ``keep_s``; return the count.

    They are what a process killed while writing leaves behind; younger ones may still be in use.
    """
    base = _root(root)
    now = time.time() if now is None else now
    # ".tmp-*": job folders half-made by versions that named them so.
    removed = sweep_stale_temp(base, ".tmp-*", keep_s, now=now) + sweep_stale_temp(base, TEMP_PATTERN, keep_s, now=now)
    for run in base.iterdir() if base.is_dir() else []:
        if run.is_dir() and not run.is_symlink() and not run.name.startswith("."):
            removed += sweep_stale_temp(run, TEMP_PATTERN, keep_s, now=now)
    return removed


def create_job_dir(root: str | Path | None, name: str | None, files: dict[str, Any]) -> Path:
    """Create a new run/job folder that appears complete: ``files`` (name -> JSON data) are written first.

    The folder is assembled under a hidden temp name and renamed into place, so a listing never sees it
    without its config and status.
    """
    base = _root(root)
    label = _run_label(name)
    tmp = make_temp_dir(base / label)
    try:
        for file_name, data in files.items():
            write_json_atomic(tmp / file_name, data)
        for n in range(1000):
            path = base / (label if n == 0 else f"{label}-{n}")
            try:
                # rename() onto an existing empty folder succeeds on Linux: claim the name with mkdir first.
                path.mkdir()
            except FileExistsError:
                continue
            os.replace(tmp, path)
            return path
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(tmp, ignore_errors=True)
    raise RunError(f"could not create a unique run folder under {base}; remove old runs")


def append_event(run_dir: str | Path, event: dict[str, Any]) -> dict[str, Any]:
    """Append one event (with its wall time ``t``) as a JSON line to ``events.jsonl``; return it."""
    event = {"t": round(time.time(), 3), **event}
    line = json.dumps(event, default=_json_default) + "\n"
    # One write() of an O_APPEND file: concurrent appenders never interleave within a line.
    fd = os.open(Path(run_dir) / EVENTS_FILE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode("utf-8"))
    finally:
        os.close(fd)
    return event


def read_events(run_dir: str | Path, offset: int = 0) -> tuple[list[dict[str, Any]], int]:
    """Read the complete event lines of ``events.jsonl`` from byte ``offset``; return them and the next offset.

    A half-written last line is left for the next call; an unreadable line is skipped.
    """
    try:
        with open(Path(run_dir) / EVENTS_FILE, "rb") as handle:
            handle.seek(offset)
            data = handle.read()
    except OSError:
        return [], offset
    end = data.rfind(b"\n") + 1
    events = []
    for raw in data[:end].splitlines():
        try:
            event = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            continue
        if isinstance(event, dict):
            events.append(event)
    return events, offset + end


def weight_changes(run_dir: str | Path) -> list[dict[str, Any]]:
    """Every live loss-weight change of a run (events of kind ``weight_change``), oldest first."""
    return [e for e in read_events(run_dir)[0] if e.get("kind") == "weight_change"]


def read_control(run_dir: str | Path) -> tuple[dict[str, Any] | None, str | None]:
    """Return ``control.json`` as (dict, None), or (None, why) when it is missing, unreadable or not an object."""
    data, err = _read_json(Path(run_dir) / CONTROL_FILE)
    if err:
        return None, err
    if not isinstance(data, dict):
        return None, f"{CONTROL_FILE} is not a JSON object"
    return data, None


def write_control(run_dir: str | Path, **changes: Any) -> dict[str, Any]:
    """Merge ``changes`` (``weights``, ``auto``, ``stop``) into ``control.json``, bump its ``seq``; return it."""
    run_dir = Path(run_dir)
    with _STATUS_LOCK:
        current, _ = read_control(run_dir)
        control = dict(current or {})
        control.update(changes)
        control["seq"] = int(control.get("seq") or 0) + 1
        control["updated"] = time.time()
        write_json_atomic(run_dir / CONTROL_FILE, control)
    return control


def can_control(job_or_run: Any, owner: str | None, admin: bool = False) -> bool:
    """Whether ``owner`` (an opaque token) may act on a job or run (stop it, change its weights, delete it).

    ``job_or_run`` is a dict (job spec, status or config) or an object with an ``owner`` attribute. Admins may
    act on everything; nobody may act on something without a recorded owner, except admins.
    """
    if admin:
        return True
    recorded = job_or_run.get("owner") if isinstance(job_or_run, dict) else getattr(job_or_run, "owner", None)
    if not owner or not recorded or not isinstance(owner, str) or not isinstance(recorded, str):
        return False
    return hmac.compare_digest(owner.encode(), recorded.encode())


def read_history(run_dir: str | Path) -> pd.DataFrame:
    """Return the per-epoch history of a run (empty DataFrame when there is none or it is unreadable)."""
    path = Path(run_dir) / HISTORY_FILE
    try:
        return pd.read_csv(path)
    except (FileNotFoundError, pd.errors.EmptyDataError, pd.errors.ParserError, OSError, UnicodeDecodeError):
        return pd.DataFrame()
