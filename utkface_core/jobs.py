"""Background jobs, two kinds of them.

* Worker jobs (training, evaluation, sweeps): each runs in its own detached worker process
  (``python -m utkface_core worker JOB_DIR``, see ``utkface_core.worker``). The job folder is the contract: the
  app writes ``job.json`` and ``control.json``, the worker writes ``status.json`` (pid, heartbeat, progress) and
  appends to ``events.jsonl``. Nothing lives in the server's memory, so a job survives page reloads and server
  restarts: any process finds it again with ``list_jobs`` / ``latest_job``. Trainings run one at a time per
  server (a FIFO queue served through a lock file).
* Thread jobs (short in-server work such as decoding or batch prediction): ``registry()``, per process.
"""

from __future__ import annotations

import fcntl
import itertools
import os
import shutil
import subprocess
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from utkface_core import runs
from utkface_core.paths import app_data_dir, runs_dir

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

    def submit(
        self, kind: str, label: str, fn: Callable[[Job], Any], *, key: str | None = None, extra: dict | None = None
    ) -> Job:
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


# --- worker jobs: one process per job, the job folder is the contract -------------------------------------------

WORKER_KINDS: tuple[str, ...] = ("train", "evaluate", "sweep")
# Kinds that share one slot: one training (or sweep of trainings) at a time per server.
SERIAL_GROUPS: dict[str, str] = {"train": "train", "sweep": "train"}
REPO_ROOT = Path(__file__).resolve().parents[1]
_CHILDREN: list[subprocess.Popen] = []


class JobError(ValueError):
    """A worker job request was invalid (unknown kind, bad arguments)."""


@dataclass
class JobInfo:
    """A snapshot of one worker job folder, as read from its files (never the live process)."""

    id: str
    kind: str
    dir: Path
    label: str
    owner: str | None
    key: str | None
    created: float
    state: str  # preparing, queued, running, completed, stopped, failed, interrupted
    message: str = ""
    error: str | None = None
    status: dict = field(default_factory=dict)
    control: dict = field(default_factory=dict)
    spec: dict = field(default_factory=dict)

    @property
    def active(self) -> bool:
        """True while preparing, queued or running (and its worker is alive)."""
        return self.state in runs.ACTIVE_STATES

    @property
    def stop_requested(self) -> bool:
        """True once someone asked the job to stop."""
        return bool(self.control.get("stop"))

    @property
    def phase(self) -> str:
        """What the worker is doing: queued, preparing, building, training, validating, testing, or the end state."""
        if not self.active:
            return self.state
        if self.state == "queued":
            return "queued"
        return str(self.status.get("phase") or self.state)


def jobs_root() -> Path:
    """The folder of non-training job folders (evaluations, sweeps), created."""
    path = app_data_dir() / "jobs"
    path.mkdir(parents=True, exist_ok=True)
    return path


def job_root(kind: str) -> Path:
    """Where job folders of ``kind`` live: trainings are run folders under the runs root."""
    if kind not in WORKER_KINDS:
        raise JobError(f"unknown job kind {kind!r}: use one of {list(WORKER_KINDS)}")
    if kind == "train":
        return runs_dir()
    path = jobs_root() / kind
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextmanager
def file_lock(path: Path, *, blocking: bool = True) -> Iterator[bool]:
    """Hold an exclusive ``fcntl`` lock on ``path`` (created) for the ``with`` block; yields False if not taken."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def load_job(job_dir: str | Path) -> JobInfo | None:
    """Read one job folder; None when it holds no readable ``job.json``."""
    path = Path(job_dir)
    spec = runs.read_json(path / runs.JOB_FILE)
    if not isinstance(spec, dict) or spec.get("kind") not in WORKER_KINDS:
        return None
    status = runs.read_status(path)
    control, _ = runs.read_control(path)
    state = status.get("state") if status.get("state") in runs.STATES else "preparing"
    error = None
    if state in runs.ACTIVE_STATES and not runs.worker_alive(status or {"heartbeat": spec.get("created", 0)}):
        state, error = "interrupted", "the worker process ended without finishing (crash, kill or restart)"
    elif state == "failed":
        error = status.get("message") or "the job failed"
    return JobInfo(
        id=path.name,
        kind=spec["kind"],
        dir=path,
        label=str(spec.get("label") or spec["kind"]),
        owner=spec.get("owner"),
        key=spec.get("key"),
        created=float(spec.get("created") or 0.0),
        state=state,
        message=str(status.get("message") or ""),
        error=error,
        status=status,
        control=control or {},
        spec=spec,
    )


def list_jobs(kind: str | None = None) -> list[JobInfo]:
    """All worker jobs (of a kind), oldest first."""
    _reap()
    kinds = [kind] if kind is not None else list(WORKER_KINDS)
    found = []
    for k in kinds:
        root = job_root(k)
        try:
            entries = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
        except OSError:
            continue
        for entry in entries:
            job = load_job(entry)
            if job is not None and job.kind == k:
                found.append(job)
    found.sort(key=lambda j: (j.created, j.id))
    return found


def find_job(job_id: str | None, kind: str | None = None) -> JobInfo | None:
    """The job with this id (its folder name), or None."""
    if not job_id or "/" in job_id or job_id.startswith("."):
        return None
    for k in [kind] if kind else list(WORKER_KINDS):
        job = load_job(job_root(k) / job_id)
        if job is not None:
            return job
    return None


def latest_job(kind: str, *, owner: str | None = None, active_only: bool = False) -> JobInfo | None:
    """The newest job of a kind (of ``owner`` when given; only active ones with ``active_only``)."""
    found = [j for j in list_jobs(kind) if (j.active or not active_only) and (owner is None or j.owner == owner)]
    return found[-1] if found else None


def queue_of(kind: str) -> list[JobInfo]:
    """The live jobs sharing ``kind``'s slot, in service order: the running one first, then the waiting ones."""
    group = SERIAL_GROUPS.get(kind)
    if group is None:
        return []
    members = [j for k, g in SERIAL_GROUPS.items() if g == group for j in list_jobs(k) if j.active]
    members.sort(key=lambda j: (j.state != "running", j.created, j.id))
    return members


def queue_position(job: JobInfo) -> int:
    """How many jobs are ahead of a waiting job in its slot's queue (0 when running or not queued)."""
    if job.state == "running":
        return 0
    ids = [j.id for j in queue_of(job.kind)]
    return ids.index(job.id) if job.id in ids else 0


def submit_job(
    kind: str,
    args: dict[str, Any],
    owner: str | None,
    *,
    label: str | None = None,
    key: str | None = None,
    name: str | None = None,
    files: dict[str, Any] | None = None,
    spawn: bool = True,
) -> JobInfo:
    """Create a job folder (job spec, "preparing" status, control) and start its worker process; return the job.

    An active job with the same ``key`` is returned instead of a new one (trainings default to one active job
    per owner), checked under a lock file: two requests a moment apart give one job, across processes too.
    ``files`` (name -> JSON data) are written into the folder before it appears, e.g. the run's config.json.
    """
    if kind not in WORKER_KINDS:
        raise JobError(f"unknown job kind {kind!r}: use one of {list(WORKER_KINDS)}")
    if not isinstance(args, dict):
        raise JobError(f"job args must be a dict, got {type(args).__name__}")
    if key is None and kind == "train" and owner:
        key = f"train:{owner}"
    root = job_root(kind)
    with file_lock(jobs_root() / ".submit.lock"):
        if key is not None:
            same = [j for j in list_jobs(kind) if j.key == key and j.active]
            if same:
                return same[-1]
        if kind in SERIAL_GROUPS:
            from utkface_core.limits import job_quota_problem

            # Public mode caps the queue per visitor and in all (utkface_core.limits); evaluations are shared.
            problem = job_quota_problem(owner, [j for k in SERIAL_GROUPS for j in list_jobs(k)])
            if problem:
                raise JobError(problem)
        now = time.time()
        spec = {"kind": kind, "args": args, "owner": owner, "label": label or kind, "key": key, "created": now}
        status = {
            "state": "preparing",
            "message": "starting a worker process",
            "pid": os.getpid(),
            "host": _hostname(),
            "heartbeat": now,
            "owner": owner,
            "kind": kind,
            "phase": "preparing",
        }
        control = {"seq": 1, "stop": False, "updated": now}
        if kind == "train" and isinstance(args.get("config"), dict):
            weights = args["config"].get("loss_weights")
            control.update(auto=weights == "auto", weights=weights if isinstance(weights, dict) else None)
        contents = {**(files or {}), runs.JOB_FILE: spec, runs.STATUS_FILE: status, runs.CONTROL_FILE: control}
        job_dir = runs.create_job_dir(root, name, contents)
    _housekeeping(root)
    if spawn:
        spawn_worker(job_dir)
    job = load_job(job_dir)
    assert job is not None
    return job


def _hostname() -> str:
    import socket

    return socket.gethostname()


KEEP_FINISHED_JOBS = 50  # finished evaluation job folders kept (the results live in the run folders)


def _housekeeping(root: Path) -> None:
    try:
        runs.sweep_temp(root)
        runs.sweep_trash(root)
        if root == job_root("evaluate"):  # evaluations keep their results in the run folder; sweeps in theirs
            finished = [j for j in list_jobs("evaluate") if not j.active]
            for old in finished[: max(0, len(finished) - KEEP_FINISHED_JOBS)]:
                shutil.rmtree(old.dir, ignore_errors=True)
    except OSError:
        pass


def spawn_worker(job_dir: str | Path) -> int:
    """Start the job's worker: hand it to a standby (``standby.offer``) or start ``python -m utkface_core worker
    JOB_DIR`` detached (own session: it outlives the server); return the worker's pid."""
    from utkface_core import standby

    job_dir = Path(job_dir)
    pid = standby.offer(job_dir)
    if pid is not None:
        return pid
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), *filter(None, [env.get("PYTHONPATH")])])
    with open(job_dir / "worker.log", "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "utkface_core", "worker", str(job_dir)],
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
        )
    adopt_child(proc)
    return proc.pid


def adopt_child(proc: subprocess.Popen) -> None:
    """Remember a detached child process, so that ``list_jobs`` reaps it once it ends (no zombies)."""
    _CHILDREN.append(proc)


def _reap() -> None:
    # Collect the exit status of finished workers started here, so they do not linger as zombies.
    for proc in list(_CHILDREN):
        if proc.poll() is not None:
            _CHILDREN.remove(proc)


def request_stop(job: JobInfo, owner: str | None, *, admin: bool = False) -> bool:
    """Ask a job to stop (its worker reads it within a second); False when ``owner`` may not control it."""
    if not runs.can_control(job.spec, owner, admin) or not job.active:
        return False
    runs.write_control(job.dir, stop=True)
    return True


def set_live_weights(
    job: JobInfo,
    owner: str | None,
    *,
    weights: dict[str, float] | None = None,
    auto: bool | None = None,
    admin: bool = False,
) -> bool:
    """Request new loss weights (or auto on/off) for a training; applied before its next batch.

    Returns False when ``owner`` may not control the job or it is no longer active.
    """
    if not runs.can_control(job.spec, owner, admin) or not job.active:
        return False
    changes: dict[str, Any] = {}
    if weights is not None:
        from utkface_core.config import check_loss_weights

        changes["weights"] = check_loss_weights(dict(weights), complete=True)
    if auto is not None:
        changes["auto"] = bool(auto)
    if changes:
        runs.write_control(job.dir, **changes)
    return True


def requested_weights(job: JobInfo) -> tuple[dict[str, float] | None, bool]:
    """The weights last requested through ``control.json`` (what the job trains with from its next batch) and auto."""
    weights = job.control.get("weights")
    if not isinstance(weights, dict):
        weights = None
    return weights, bool(job.control.get("auto"))


def weights_in_force(job: JobInfo) -> dict[str, float] | None:
    """The loss weights the worker last reported as in force (None before training starts)."""
    weights = job.status.get("weights")
    return weights if isinstance(weights, dict) else None


def _clock(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    minutes, secs = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def describe_progress(job: JobInfo, now: float | None = None) -> tuple[float, str]:
    """An honest progress fraction and line for a job.

    A time-budget training reads elapsed / budget with the time left (never "epoch 1/200"); an epoch-limited one
    reads epochs and batches. Validation and the final test are named as phases. The fraction stays below 1
    until the job has ended.
    """
    now = time.time() if now is None else now
    st = job.status
    if not job.active:
        return (1.0 if job.state == "completed" else float(st.get("progress") or 0.0)), job.message or job.state
    if job.state == "queued":
        return 0.0, "waiting in the queue"
    phase = job.phase
    if job.stop_requested:
        return min(0.99, float(st.get("progress") or 0.0)), "stopping: finishing the current batch, then saving"
    if phase == "preparing":
        total = st.get("decode_total")
        if total:
            done = int(st.get("decode_done") or 0)
            return 0.0, f"preparing the data: decoding images {done:,}/{int(total):,} (once; cached for later runs)"
        return 0.0, job.message or "preparing"
    if phase == "building":
        return 0.0, "building the model"
    if phase == "testing":
        return 0.99, job.message or "evaluating the best model on the test split"
    if phase == "evaluating":
        return min(0.99, float(st.get("progress") or 0.0)), job.message or "evaluating"
    if phase == "sweeping":
        return _sweep_progress(job, now)
    budget = st.get("time_budget_s")
    started = st.get("train_started")
    epoch = int(st.get("epoch") or 0)
    steps = max(1, int(st.get("steps") or 1))
    batch = int(st.get("batch") or 0)
    speed = st.get("images_per_s") or 0.0
    where = "validating" if phase == "validating" else "training"
    speed_text = f" · {speed:,.0f} images/s" if speed else ""
    if budget and started:
        elapsed = max(0.0, now - float(started))
        fraction = min(0.99, elapsed / float(budget))
        left = max(0.0, float(budget) - elapsed)
        return fraction, (
            f"{where} · {_clock(elapsed)} / {_clock(float(budget))} of the time budget · "
            f"about {_clock(left)} left · epoch {epoch + 1}{speed_text}"
        )
    epochs = max(1, int(st.get("epochs") or 1))
    done = (epoch * steps + min(batch + 1, steps)) / (epochs * steps)
    eta = st.get("eta_s")
    eta_text = f" · ETA {_clock(eta)}" if isinstance(eta, (int, float)) else ""
    if phase == "validating":
        return min(0.99, done), f"validating after epoch {epoch + 1}/{epochs}{speed_text}{eta_text}"
    return min(0.99, done), f"training · epoch {epoch + 1}/{epochs} · batch {batch + 1}/{steps}{speed_text}{eta_text}"


def _sweep_progress(job: JobInfo, now: float) -> tuple[float, str]:
    """A sweep's line: trials finished of all, the trial in training (time into its budget, or its epochs)."""
    st = job.status
    done, total = st.get("trials_done"), st.get("trials_total")
    if not isinstance(total, int) or total < 1:
        return min(0.99, float(st.get("progress") or 0.0)), f"sweeping · {job.message or 'starting the trials'}"
    done = min(int(done or 0), total)
    args = job.spec.get("args") or {}
    budget, started = args.get("trial_budget_s"), st.get("trial_started")
    trial, within, detail = st.get("trial"), 0.0, ""
    if trial and done < total:
        epochs = int(st.get("trial_epochs_done") or 0)
        if budget and started:
            elapsed = max(0.0, now - float(started))
            within = min(1.0, elapsed / float(budget))
            detail = f" · {trial}: {_clock(elapsed)} / {_clock(float(budget))}"
        else:
            limit = args.get("epochs")
            within = min(1.0, epochs / int(limit)) if limit else 0.0
            detail = f" · {trial}: epoch {epochs}/{limit}" if limit else f" · {trial}: {epochs} epoch(s) done"
    fraction = min(0.99, (done + within) / total)
    return fraction, f"sweeping · {done}/{total} trials finished{detail}"
