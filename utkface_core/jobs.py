"""Background jobs: long work (decoding, training) off the UI thread, with progress, stop and a queue.

The registry is per process, so a job outlives page switches and browser reloads: a page finds it
again with ``registry().latest(kind)``.
"""

from __future__ import annotations

import itertools
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

ACTIVE = ("queued", "running")


class JobStopped(Exception):
    """Raised inside a job function to end it early as 'stopped'."""


@dataclass
class Job:
    """One unit of background work and everything a page needs to show it."""

    id: str
    kind: str
    label: str
    key: str | None = None
    state: str = "queued"
    progress: float = 0.0
    message: str = ""
    result: Any = None
    error: str | None = None
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    stop_event: threading.Event = field(default_factory=threading.Event)
    events: deque = field(default_factory=lambda: deque(maxlen=5000))
    extra: dict = field(default_factory=dict)

    def report(self, progress: float | None = None, message: str | None = None, event: dict | None = None) -> None:
        """Record progress (0..1), a status message and/or an event dict; called from the job thread."""
        if progress is not None:
            self.progress = min(1.0, max(0.0, float(progress)))
        if message is not None:
            self.message = message
        if event is not None:
            self.events.append(event)

    def stop(self) -> None:
        """Ask the job to stop; a queued job never starts."""
        self.stop_event.set()

    @property
    def active(self) -> bool:
        """True while queued or running."""
        return self.state in ACTIVE

    @property
    def elapsed(self) -> float:
        """Seconds since the job started (0 while queued)."""
        if self.started is None:
            return 0.0
        return (self.finished or time.time()) - self.started


class JobRegistry:
    """Runs jobs in daemon threads; at most ``limits[kind]`` of a kind run at once, the rest queue."""

    def __init__(self, limits: dict[str, int] | None = None, keep_finished: int = 50) -> None:
        self.limits = {"train": 1, **(limits or {})}
        self.keep_finished = keep_finished
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()
        self._slots: dict[str, threading.Semaphore] = {}
        self._ids = itertools.count(1)

    def _slot(self, kind: str) -> threading.Semaphore | None:
        limit = self.limits.get(kind)
        if limit is None:
            return None
        with self._lock:
            return self._slots.setdefault(kind, threading.Semaphore(limit))

    def submit(self, kind: str, label: str, fn: Callable[[Job], Any], *, key: str | None = None, extra: dict | None = None) -> Job:
        """Start ``fn(job)`` in the background; an active job with the same key is returned instead of a new one."""
        with self._lock:
            if key is not None:
                for job in self._jobs.values():
                    if job.key == key and job.active:
                        return job
            job = Job(id=f"{kind}-{next(self._ids)}", kind=kind, label=label, key=key, extra=dict(extra or {}))
            self._jobs[job.id] = job
            # Finished jobs hold results (models' evaluations, caches): keep only the newest ones.
            finished = [j.id for j in self._jobs.values() if not j.active]
            for old in finished[: max(0, len(finished) - self.keep_finished)]:
                del self._jobs[old]
        thread = threading.Thread(target=self._run, args=(job, fn), name=job.id, daemon=True)
        thread.start()
        return job

    def _run(self, job: Job, fn: Callable[[Job], Any]) -> None:
        slot = self._slot(job.kind)
        if slot is not None:
            while not slot.acquire(timeout=0.2):
                if job.stop_event.is_set():
                    job.state, job.message, job.finished = "stopped", "Stopped before it started.", time.time()
                    return
        try:
            job.state, job.started = "running", time.time()
            job.result = fn(job)
            if job.state == "running":
                job.state = "stopped" if job.stop_event.is_set() else "completed"
                job.progress = 1.0 if job.state == "completed" else job.progress
        except JobStopped as exc:
            job.state, job.message = "stopped", str(exc) or "Stopped."
        except Exception as exc:  # noqa: BLE001 - a failing job must be reported, never kill the server
            job.state = "failed"
            job.error = f"{type(exc).__name__}: {exc}"
            job.message = job.error
            job.extra["traceback"] = traceback.format_exc()
        finally:
            job.finished = time.time()
            if slot is not None:
                slot.release()

    def get(self, job_id: str | None) -> Job | None:
        """Return the job with this id, or None."""
        return self._jobs.get(job_id) if job_id else None

    def jobs(self, kind: str | None = None) -> list[Job]:
        """All jobs (of a kind), oldest first."""
        with self._lock:
            snapshot = list(self._jobs.values())
        return [j for j in snapshot if kind is None or j.kind == kind]

    def latest(self, kind: str, *, active_only: bool = False) -> Job | None:
        """The newest job of a kind (only queued or running ones with ``active_only``)."""
        found = [j for j in self.jobs(kind) if j.active or not active_only]
        return found[-1] if found else None

    def queue_position(self, job: Job) -> int:
        """How many jobs of the same kind are ahead of a queued job (0 when running)."""
        if job.state != "queued":
            return 0
        return sum(1 for j in self.jobs(job.kind) if j.active and j.created < job.created)


_REGISTRY = JobRegistry()


def registry() -> JobRegistry:
    """The process-wide job registry."""
    return _REGISTRY
