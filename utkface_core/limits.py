"""One set of documented resource limits, each overridable by an environment variable.

Every limit has a name, the variable that overrides it, a default, and a sentence saying what it
bounds; docs/SECURITY.md lists them all (``describe()`` prints the same table). Values are read
from the environment on every call, so an operator's override (or a test's monkeypatch) applies
without a restart of the Python process that reads it.

The training limits are enforced here, in the core (``clamp_train_config``, ``job_quota_problem``),
not only by widget bounds: a crafted request that skips the widgets gets the same caps.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

MIB = 1024 * 1024


@dataclass(frozen=True)
class Limit:
    """A bound on one resource: its environment variable, default, smallest allowed value and meaning."""

    name: str
    env: str
    default: float
    minimum: float
    unit: str
    doc: str
    integer: bool = True


_LIMITS: tuple[Limit, ...] = (
    # Images
    Limit(
        "max_image_pixels",
        "UTKFACE_MAX_IMAGE_PIXELS",
        40_000_000,
        1,
        "pixels",
        "Largest image accepted, width x height read from the header before any pixel is decoded.",
    ),
    Limit(
        "max_photo_side",
        "UTKFACE_MAX_PHOTO_SIDE",
        1600,
        64,
        "pixels",
        "Photos for prediction are downscaled to this longest side right after decoding (JPEG: during it).",
    ),
    Limit(
        "max_photo_upload_mb",
        "UTKFACE_MAX_PHOTO_UPLOAD_MB",
        25,
        1,
        "MB",
        "Largest single photo upload on the Predict page.",
    ),
    Limit(
        "predict_cache_mb",
        "UTKFACE_PREDICT_CACHE_MB",
        256,
        1,
        "MB",
        "Byte budget of the prediction cache (face crops and thumbnails, never full photos); LRU eviction.",
    ),
    Limit(
        "predict_cache_ttl_s",
        "UTKFACE_PREDICT_CACHE_TTL_S",
        1800,
        1,
        "seconds",
        "A cached prediction not used for this long is dropped.",
    ),
    # Archives
    Limit(
        "max_archive_bytes",
        "UTKFACE_MAX_ARCHIVE_BYTES",
        2 * 1024**3,
        1,
        "bytes",
        "Total uncompressed bytes one archive may expand to (counted while writing, not trusted from headers).",
    ),
    Limit(
        "max_member_bytes",
        "UTKFACE_MAX_MEMBER_BYTES",
        64 * MIB,
        1,
        "bytes",
        "Uncompressed bytes of one image inside an archive.",
    ),
    Limit("max_archive_members", "UTKFACE_MAX_ARCHIVE_MEMBERS", 100_000, 1, "members", "Entries in one archive."),
    Limit(
        "max_compression_ratio",
        "UTKFACE_MAX_COMPRESSION_RATIO",
        100,
        1,
        "x",
        "Uncompressed / compressed size of an archive member (and of the whole archive).",
        integer=False,
    ),
    Limit(
        "disk_reserve_mb",
        "UTKFACE_DISK_RESERVE_MB",
        1024,
        0,
        "MB",
        "Free disk space that must remain after an extraction; checked before anything is written.",
    ),
    Limit(
        "upload_ttl_s",
        "UTKFACE_UPLOAD_TTL_S",
        2 * 3600,
        60,
        "seconds",
        "An extracted upload not used for this long is deleted by the janitor (also when its session ends).",
    ),
    # App data
    Limit(
        "app_data_budget_mb",
        "UTKFACE_APP_DATA_BUDGET_MB",
        5 * 1024,
        1,
        "MB",
        "Byte budget of the janitor for decode caches, uploads and index caches (runs are never deleted).",
    ),
    Limit(
        "janitor_interval_s",
        "UTKFACE_JANITOR_INTERVAL_S",
        600,
        10,
        "seconds",
        "How often the server's background janitor sweeps (besides at start, after uploads and after jobs).",
    ),
    # Training
    Limit(
        "max_train_min_public",
        "UTKFACE_MAX_TRAIN_MIN",
        5,
        0.25,
        "minutes",
        "Longest training run in public mode (every run gets a time budget of at most this).",
        integer=False,
    ),
    Limit(
        "max_train_min_private",
        "UTKFACE_MAX_TRAIN_MIN_PRIVATE",
        24 * 60,
        0.25,
        "minutes",
        "Longest training time budget in private mode.",
        integer=False,
    ),
    Limit("max_epochs", "UTKFACE_MAX_EPOCHS", 500, 1, "epochs", "Most epochs of one run."),
    Limit("max_train_image_size", "UTKFACE_MAX_TRAIN_IMAGE_SIZE", 256, 16, "pixels", "Largest training image side."),
    Limit("max_batch_size", "UTKFACE_MAX_BATCH_SIZE", 512, 1, "images", "Largest training batch."),
    Limit(
        "max_jobs_per_owner",
        "UTKFACE_MAX_JOBS_PER_OWNER",
        1,
        1,
        "jobs",
        "Queued or running jobs one visitor (owner token) may have in public mode.",
    ),
    Limit(
        "max_active_jobs",
        "UTKFACE_MAX_ACTIVE_JOBS",
        3,
        1,
        "jobs",
        "Queued or running jobs of all visitors together in public mode.",
    ),
)
LIMITS: dict[str, Limit] = {limit.name: limit for limit in _LIMITS}

MIN_TRAIN_IMAGE_SIZE = 16


class LimitError(ValueError):
    """An environment override of a limit is not usable; the message names the variable."""


def get(name: str) -> float | int:
    """Return the value of limit ``name``: the environment override if set, else the default.

    Raises KeyError for an unknown name and LimitError for an override that is not a number, or
    below the limit's minimum.
    """
    limit = LIMITS[name]
    raw = os.environ.get(limit.env, "").strip()
    if not raw:
        return int(limit.default) if limit.integer else float(limit.default)
    try:
        value = float(raw.replace("_", ""))
    except ValueError:
        raise LimitError(f"{limit.env}={raw!r} is not a number; unset it or give {limit.unit}") from None
    if not math.isfinite(value) or value < limit.minimum:
        raise LimitError(f"{limit.env}={raw!r} is invalid: use a number >= {limit.minimum:g} ({limit.unit})")
    return int(value) if limit.integer else value


def describe() -> list[dict[str, Any]]:
    """Every limit with its variable, default, current value and meaning (for docs and the UI)."""
    rows = []
    for limit in _LIMITS:
        try:
            current: Any = get(limit.name)
        except LimitError as exc:
            current = f"invalid ({exc})"
        rows.append(
            {
                "name": limit.name,
                "env": limit.env,
                "default": limit.default,
                "current": current,
                "unit": limit.unit,
                "doc": limit.doc,
            }
        )
    return rows


def fmt_bytes(n: float) -> str:
    """A byte count for messages: 1.5 GiB, 63.0 MiB, 512 bytes."""
    size = float(n)
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{int(size)} bytes" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} bytes"


# --- training ------------------------------------------------------------------------------------


def max_train_minutes(mode: str | None = None) -> float:
    """The longest training time budget in ``mode`` (default: the server's mode)."""
    from utkface_core.access import PUBLIC, server_mode

    mode = mode or server_mode()
    return float(get("max_train_min_public" if mode == PUBLIC else "max_train_min_private"))


def clamp_train_config(config, mode: str | None = None):
    """Return ``(clamped TrainConfig, notes)``: a copy of ``config`` within the server's limits.

    Clamps ``time_budget_s`` to the mode's most minutes (public mode: every run gets a budget),
    ``epochs``, ``image_size`` and ``batch_size``. ``notes`` holds one sentence per changed value,
    for the page to show. Raises TypeError when ``config`` is not a TrainConfig.
    """
    from utkface_core.access import PUBLIC, check_mode, server_mode
    from utkface_core.config import TrainConfig

    if not isinstance(config, TrainConfig):
        raise TypeError(f"clamp_train_config needs a TrainConfig, got {type(config).__name__}")
    mode = check_mode(mode) if mode is not None else server_mode()
    notes: list[str] = []
    changes: dict[str, Any] = {}
    max_s = max_train_minutes(mode) * 60.0
    budget = config.time_budget_s
    if budget is None and mode == PUBLIC:
        changes["time_budget_s"] = max_s
        notes.append(f"Every run on this shared server stops after {max_s / 60:g} minutes.")
    elif (
        isinstance(budget, (int, float))
        and not isinstance(budget, bool)
        and (not math.isfinite(budget) or budget > max_s)
    ):
        changes["time_budget_s"] = max_s
        notes.append(f"Training time limited to {max_s / 60:g} minutes (the server's limit; asked {_minutes(budget)}).")
    max_epochs = int(get("max_epochs"))
    if isinstance(config.epochs, int) and not isinstance(config.epochs, bool) and config.epochs > max_epochs:
        changes["epochs"] = max_epochs
        notes.append(f"Epochs limited to {max_epochs} (asked {config.epochs}).")
    max_size = int(get("max_train_image_size"))
    size = config.image_size
    if isinstance(size, int) and not isinstance(size, bool):
        clamped = min(max(size, MIN_TRAIN_IMAGE_SIZE), max_size)
        if clamped != size:
            changes["image_size"] = clamped
            notes.append(f"Image size set to {clamped} px (allowed {MIN_TRAIN_IMAGE_SIZE}-{max_size}; asked {size}).")
    max_batch = int(get("max_batch_size"))
    batch = config.batch_size
    if isinstance(batch, int) and not isinstance(batch, bool):
        clamped = min(max(batch, 1), max_batch)
        if clamped != batch:
            changes["batch_size"] = clamped
            notes.append(f"Batch size set to {clamped} (allowed 1-{max_batch}; asked {batch}).")
    return dataclasses.replace(config, **changes), notes


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:g} minutes" if math.isfinite(seconds) else "no limit"


def job_quota_problem(owner: str | None, jobs: Iterable[Any], mode: str | None = None) -> str | None:
    """Why ``owner`` may not queue another job now, or None.

    Public mode only: at most ``max_jobs_per_owner`` active (queued or running) jobs per owner and
    ``max_active_jobs`` for everyone. ``jobs`` are objects with ``active`` and ``owner`` attributes
    (``utkface_core.jobs.Job``); a job without an owner counts for the global cap only.
    """
    from utkface_core.access import PUBLIC, check_mode, server_mode

    mode = check_mode(mode) if mode is not None else server_mode()
    if mode != PUBLIC:
        return None
    active = [job for job in jobs if getattr(job, "active", False)]
    mine = [job for job in active if owner is not None and getattr(job, "owner", None) == owner]
    per_owner = int(get("max_jobs_per_owner"))
    if len(mine) >= per_owner:
        return (
            f"You already have {len(mine)} job(s) queued or running (the limit per visitor is {per_owner}): "
            "wait for it to finish or stop it first."
        )
    total = int(get("max_active_jobs"))
    if len(active) >= total:
        return (
            f"This shared server already has {len(active)} jobs queued or running (its limit is {total}): "
            "try again in a few minutes."
        )
    return None
