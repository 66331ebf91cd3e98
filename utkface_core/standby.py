"""Standby workers: a worker process started ahead of the Start click, with TensorFlow already imported.

A fresh worker spends 3-7 s importing TensorFlow and the training code before it can build a model (most of the
time to first batch of a later training). A standby pays that while nobody waits: ``ensure`` starts one (the Train
page calls it), and ``jobs.spawn_worker`` hands a new job to a live standby of the same environment (``offer``),
starting a fresh worker only when there is none or the standby does not take the job within ``CLAIM_TIMEOUT_S``.
A standby runs one job, starts its successor and exits, so each job still gets a process of its own. An idle
standby exits when the server process that started it is gone, or after ``IDLE_EXIT_S``.

Once its imports are done, a standby also decodes the data of the training it expects and traces that training's
model (``workflow.warm_training``): the Train page's default on the demo set for the first, the last training's
configuration and data for a successor (the next training is most often the same with other loss weights). A job
of that configuration then starts with its first batch; any other job ignores the traced model.

The pool folder (``jobs_root()/standby``) holds, per standby process ``<pid>``:

- ``<pid>.json``: ``{"pid", "fingerprint", "server_pid", "state": "starting" | "warming" | "ready", "started",
  "warm"}``, ``warm`` being the training it prepares for (``{"config", "data"}``; None: the Train page's default);
- ``<pid>.lock``: ``flock``-ed for the whole life of the process (taken by the spawner and inherited, so the lock
  is held from the first instant; a lock that can be taken means the process is gone);
- ``<pid>.job``: a handoff, the job folder as JSON, written by ``offer``;
- ``<pid>.taken``: the same handoff once claimed (a rename: exactly one of the standby and ``offer``'s time-out
  wins it).

``UTKFACE_STANDBY=0`` turns standbys off (every job then starts a fresh worker, as the tests do by default).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from utkface_core import jobs, runs
from utkface_core.worker import HEARTBEAT_S  # a claimed job's heartbeat until its worker beats itself

STANDBY_ENV = "UTKFACE_STANDBY"
CLAIM_TIMEOUT_S = 3.0  # offer: how long a handoff may wait for its standby (it claims within ~0.05 s, even mid-import)
POLL_S = 0.05
IDLE_EXIT_S = 3600.0
STARTUP_WAIT_S = 10.0
DEMO_WAIT_S = 600.0  # how long an idle standby waits for the demo faces before it stops waiting to decode them
FAILED_MARK = ".failed"
FAILURE_BACKOFF_S = 300.0  # after a standby died before it was ready, start none for this long (see last-failure.log)
MAX_IDLE = 4  # idle standbys of other servers (or settings) beyond which none is started
# The environment a job sees: a standby serves only servers whose values of these are the same.
_ENV_PREFIXES = ("UTKFACE_", "TF_", "KERAS_", "CUDA_", "XLA_", "OMP_", "ONEDNN_", "PYTHON")
_PACKAGE = Path(__file__).resolve().parent


def enabled() -> bool:
    """Whether standby workers are on (``UTKFACE_STANDBY`` unset or not "0")."""
    return os.environ.get(STANDBY_ENV, "1").strip() != "0"


def pool_dir() -> Path:
    """The folder of the standby processes' files, created."""
    path = jobs.jobs_root() / "standby"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _code_stamp() -> str:
    # A standby started before the code changed on disk must not run the new jobs with the old code.
    stamps = []
    for path in sorted(_PACKAGE.rglob("*.py")):
        try:
            stamps.append(f"{path.relative_to(_PACKAGE)}:{path.stat().st_mtime_ns}")
        except OSError:
            continue
    return hashlib.sha256("\n".join(stamps).encode()).hexdigest()[:16]


def fingerprint(environ: dict[str, str] | None = None) -> str:
    """What a standby must share with the server to run its jobs: interpreter, job-relevant environment, code."""
    environ = os.environ if environ is None else environ
    env = sorted((k, v) for k, v in environ.items() if k.startswith(_ENV_PREFIXES) and k != STANDBY_ENV)
    text = json.dumps([sys.executable, str(jobs.REPO_ROOT), env, _code_stamp()])
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def _paths(pid: int) -> dict[str, Path]:
    root = pool_dir()
    return {kind: root / f"{pid}.{kind}" for kind in ("json", "lock", "job", "taken", "log")}


def _alive(pid: int) -> bool:
    """Whether standby ``pid`` still lives: its lock is held (the process holds it until it ends)."""
    try:
        fd = os.open(_paths(pid)["lock"], os.O_RDWR)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops the lock if this check took it
    return False


def _forget(pid: int) -> None:
    for path in _paths(pid).values():
        try:
            path.unlink()
        except OSError:
            pass


def standbys(*, any_fingerprint: bool = False, of: str | None = None) -> list[dict[str, Any]]:
    """The live standby processes of this environment (of fingerprint ``of``; all with ``any_fingerprint``).

    Oldest first. Files of dead standbys are removed on the way.
    """
    found = []
    mine = fingerprint() if of is None else of
    for path in pool_dir().glob("*.json"):
        try:
            pid = int(path.stem)
        except ValueError:
            continue
        info = runs.read_json(path)
        if not isinstance(info, dict):
            continue
        if not _alive(pid):
            if info.get("state") != "ready" or info.get("tracing"):
                _note_failure(pid)  # died before it could serve (while importing, decoding or tracing)
            _forget(pid)
            continue
        if any_fingerprint or info.get("fingerprint") == mine:
            info["busy"] = _paths(pid)["job"].exists() or _paths(pid)["taken"].exists()
            found.append(info)
    found.sort(key=lambda info: float(info.get("started") or 0.0))
    return found


def _note_failure(pid: int) -> None:
    # A standby that died before it was ready (a broken install, out of memory) would die again: back off, and
    # keep its log for the operator.
    root = pool_dir()
    try:
        os.replace(_paths(pid)["log"], root / "last-failure.log")
    except OSError:
        pass
    (root / FAILED_MARK).touch()


def _backing_off() -> bool:
    try:
        return time.time() - (pool_dir() / FAILED_MARK).stat().st_mtime < FAILURE_BACKOFF_S
    except OSError:
        return False


def ensure() -> int | None:
    """Start a standby unless an idle one of this environment lives, a training runs, or standbys are off.

    Return the new standby's pid, or None.
    """
    if not enabled():
        return None
    try:
        with jobs.file_lock(pool_dir() / ".pool.lock"):
            mine = fingerprint()
            idle = [info for info in standbys(any_fingerprint=True) if not info["busy"]]
            if any(info.get("fingerprint") == mine for info in idle) or _backing_off():
                return None  # an idle one waits already, or the last one died before it was ready
            if jobs.queue_of("train"):
                # A training runs: importing TensorFlow now would take CPU from it (app/CLI images/s fell to 0.84).
                # A standby that runs it starts its successor at its end; otherwise the page asks again later.
                return None
            for info in idle:
                if info.get("server_pid") == os.getpid():
                    _end(int(info["pid"]))  # this server's standby of older code or settings: it can never serve
            if len([info for info in idle if info.get("server_pid") != os.getpid()]) >= MAX_IDLE:
                return None  # other servers' idle standbys fill the pool: do not pile up processes
            return _spawn(os.getpid(), mine)
    except OSError as exc:  # a standby only saves time: without one, jobs start a fresh worker as before
        print(f"warning: could not start a standby worker ({exc})", file=sys.stderr, flush=True)
        return None


def _end(pid: int) -> None:
    """Stop an idle standby (SIGTERM) and forget it."""
    try:
        os.kill(pid, signal.SIGTERM)
    except OSError:
        pass
    _forget(pid)


def _spawn(server_pid: int, serves: str, warm: dict[str, Any] | None = None) -> int:
    """Start ``python -m utkface_core standby`` holding its pool lock from the first instant; return its pid.

    ``warm``: the training it prepares for, ``{"config": TrainConfig dict, "data": source}`` (None: the default).
    """
    root = pool_dir()
    token = f".spawn-{os.getpid()}-{time.monotonic_ns()}"
    lock_path = root / f"{token}.lock"
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        env = dict(os.environ)
        paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p != str(jobs.REPO_ROOT)]
        env["PYTHONPATH"] = os.pathsep.join([str(jobs.REPO_ROOT), *paths])
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        with open(root / f"{token}.log", "ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "utkface_core", "standby", "--lock-fd", str(fd), "--server", str(server_pid)],
                cwd=jobs.REPO_ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                pass_fds=(fd,),
            )
        files = _paths(proc.pid)
        # The names carry the pid, known only now; the child holds the same lock through the inherited descriptor.
        os.replace(lock_path, files["lock"])
        os.replace(root / f"{token}.log", files["log"])
        runs.write_json_atomic(
            files["json"],
            {
                "pid": proc.pid,
                "fingerprint": serves,  # the server's environment (this process's own differs: PYTHONPATH)
                "server_pid": server_pid,
                "state": "starting",
                "started": time.time(),
                "warm": warm,
            },
        )
        jobs.adopt_child(proc)
        return proc.pid
    finally:
        os.close(fd)


def offer(job_dir: str | Path) -> int | None:
    """Hand ``job_dir`` to an idle standby of this environment; return its pid, or None if none took it in time."""
    if not enabled():
        return None
    with jobs.file_lock(pool_dir() / ".pool.lock"):
        idle = [info for info in standbys() if not info["busy"]]
        if not idle:
            return None
        pid = int(idle[0]["pid"])
        paths = _paths(pid)
        runs.write_json_atomic(paths["job"], {"job_dir": str(Path(job_dir).resolve())})
    deadline = time.monotonic() + CLAIM_TIMEOUT_S
    while time.monotonic() < deadline:
        if not paths["job"].exists():
            return pid if paths["taken"].exists() or runs.read_status(job_dir).get("pid") == pid else None
        time.sleep(POLL_S / 2)
    # Not claimed (a stuck or dying standby): take the handoff back, unless it was claimed at this very moment
    # (the standby's rename and this unlink cannot both succeed).
    try:
        os.unlink(paths["job"])
    except FileNotFoundError:
        return pid
    return None


# --- the standby process --------------------------------------------------------------------------------------


class _Standby:
    """The process side: claim a handoff (on a thread, so it works while the imports run), then run the worker."""

    def __init__(self, server_pid: int) -> None:
        self.pid = os.getpid()
        self.paths = _paths(self.pid)
        self.server_pid = server_pid
        self.job_dir: Path | None = None
        self.serves: str | None = None
        self.expects: dict[str, Any] | None = None  # the training to prepare for (None: the Train page's default)
        self.warm: Any = None  # its model, traced ahead (trainer.WarmModel)
        self.claimed = threading.Event()
        self.started = threading.Event()  # the worker's own heartbeat runs from here on
        self.born = time.monotonic()

    def _update(self, **fields: Any) -> None:
        info = runs.read_json(self.paths["json"])
        info = info if isinstance(info, dict) else {"pid": self.pid, "server_pid": self.server_pid}
        info.update(fields)
        runs.write_json_atomic(self.paths["json"], info)

    def watch(self) -> None:
        while not self.claimed.is_set():
            if self.paths["job"].exists():
                try:
                    os.replace(self.paths["job"], self.paths["taken"])
                except FileNotFoundError:
                    pass  # offer took it back
                else:
                    handoff = runs.read_json(self.paths["taken"])
                    if isinstance(handoff, dict) and handoff.get("job_dir"):
                        self.job_dir = Path(handoff["job_dir"])
                        # From now on the job's liveness is this process: its pid and a fresh heartbeat.
                        runs.update_status(self.job_dir, pid=self.pid, message="starting the worker (standby)")
                        self.claimed.set()
                        break
            if not runs.process_alive(self.server_pid) or time.monotonic() - self.born > IDLE_EXIT_S:
                _forget(self.pid)  # a clean end, not a failure to note
                os._exit(0)  # an idle standby never outlives its server
            time.sleep(POLL_S)
        while not self.started.wait(HEARTBEAT_S):
            if self.job_dir is not None:
                runs.update_status(self.job_dir)

    def run(self) -> int:
        # The spawner writes this process's file just after starting it; wait for it, so as not to write first.
        deadline = time.monotonic() + STARTUP_WAIT_S
        while not self.paths["json"].exists() and time.monotonic() < deadline:
            time.sleep(POLL_S / 5)
        # The fingerprint stays the spawner's: the server environment this process (and its successor) serves.
        info = runs.read_json(self.paths["json"]) or {}
        self.serves = info.get("fingerprint")
        self.expects = info.get("warm") if isinstance(info.get("warm"), dict) else None
        self._update(state="warming")
        threading.Thread(target=self.watch, name="standby-watch", daemon=True).start()
        _import_job_code()
        self._update(state="ready", ready_at=time.time())
        config, data = _expected_training(self.expects)
        if data != "demo" or _demo_drawn(self.claimed):
            # "tracing": busy preparing; a standby that dies now could not serve (see standbys).
            self._update(tracing=True)
            self.warm = _prepare_ahead(config, data, self.claimed)
        self._update(tracing=False)
        self.claimed.wait()
        assert self.job_dir is not None
        _redirect_output(self.job_dir / "worker.log")
        from utkface_core import worker

        self.started.set()
        try:
            code = worker.main(self.job_dir, warm=self.warm)
        finally:
            _forget(self.pid)
            serves = self.serves
            if enabled() and runs.process_alive(self.server_pid) and serves:
                try:
                    with jobs.file_lock(pool_dir() / ".pool.lock"):
                        if not any(not info["busy"] for info in standbys(of=serves)):
                            _spawn(self.server_pid, serves, _next_training(self.job_dir, self.expects))
                except OSError as exc:
                    print(f"warning: could not start the next standby ({exc})", file=sys.stderr, flush=True)
        return code


def _import_job_code() -> None:
    """Import what every job imports first: TensorFlow, Keras, the training and evaluation code."""
    import utkface_core.evaluation.evaluation  # noqa: F401
    import utkface_core.training.trainer  # noqa: F401
    import utkface_core.worker  # noqa: F401
    import utkface_core.workflow  # noqa: F401


def _next_training(job_dir: Path, expected: dict[str, Any] | None) -> dict[str, Any] | None:
    """What a successor prepares for: the training just run (its config and data), else what this one expected."""
    spec = runs.read_json(Path(job_dir) / runs.JOB_FILE)
    if isinstance(spec, dict) and spec.get("kind") == "train":
        args = spec.get("args") or {}
        if isinstance(args.get("config"), dict) and isinstance(args.get("data"), str):
            return {"config": args["config"], "data": args["data"]}
    return expected


def _expected_training(expects: dict[str, Any] | None) -> tuple[Any, str]:
    """The configuration and data source a standby prepares for (the Train page's default on the demo set if None)."""
    from utkface_core.config import ConfigError, TrainConfig

    if expects:
        try:
            return TrainConfig.from_dict(expects["config"]).validate(), str(expects["data"])
        except (ConfigError, KeyError, TypeError) as exc:  # written by this package; a damaged file is no reason to die
            print(f"warning: ignored the expected training ({type(exc).__name__}: {exc})", flush=True)
    return TrainConfig(), "demo"


def _demo_drawn(claimed: threading.Event) -> bool:
    """Wait until the demo faces are drawn (a fresh server draws them in the background); False if a job came first."""
    from utkface_core.data.demo import DemoBuild
    from utkface_core.data.sources import DEMO_N, DEMO_SEED

    deadline = time.monotonic() + DEMO_WAIT_S
    while not DemoBuild(DEMO_N, DEMO_SEED).ready:
        if claimed.wait(1.0) or time.monotonic() > deadline:
            return False
    return not claimed.is_set()


def _prepare_ahead(config: Any, data: str, claimed: threading.Event) -> Any:
    """Decode the expected training's data and trace its model, unless a job comes first; the warm model or None."""
    from utkface_core.workflow import warm_training

    try:
        # The cache is the one prepare_training_data fills: the job then finds its images decoded.
        return warm_training(config, data, stop=claimed)
    except Exception as exc:  # noqa: BLE001 - only a head start: the job decodes and builds what it needs itself
        if not claimed.is_set():  # else the job's claim cancelled the decoding: nothing went wrong
            print(f"warning: the standby could not prepare a training ahead ({type(exc).__name__}: {exc})", flush=True)
        return None


def _redirect_output(log_path: Path) -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


def main(lock_fd: int, server_pid: int) -> int:
    """Entry point of ``python -m utkface_core standby --lock-fd N --server PID`` (started by ``ensure``)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    del lock_fd  # held open (never closed) for the life of the process: that is the liveness lock
    return _Standby(server_pid).run()
