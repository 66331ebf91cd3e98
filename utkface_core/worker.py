"""The worker process of one job: ``python -m utkface_core worker JOB_DIR``.

It reads the job spec (``job.json``: kind, args, owner), waits for its turn when its kind runs one at a time,
dispatches by kind (train, evaluate, sweep) and reports through the job folder only: ``status.json`` (pid,
heartbeat, phase, progress) about twice a second, ``events.jsonl`` (epochs, phases, weight changes, warnings,
the end). Between batches it reads ``control.json`` (loss weights, auto on/off, stop). It never needs the app:
it trains at the CLI's speed whether or not anyone watches, and outlives the server that started it.
"""

from __future__ import annotations

import math
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from utkface_core import jobs, runs

HEARTBEAT_S = 0.5
QUEUE_POLL_S = 0.5

Report = Callable[[dict], None]


class ControlReader:
    """Reads ``control.json`` when it changed; a damaged file is ignored with one warning, keeping the last good one.

    ``poll()`` returns a new weight request ``{"weights", "auto"}`` (as ``LiveControl`` wants) or None.
    """

    def __init__(self, job_dir: str | Path, warn: Callable[[str], None] | None = None) -> None:
        self.path = Path(job_dir) / runs.CONTROL_FILE
        self.warn = warn or (lambda message: None)
        self.last_good: dict[str, Any] | None = None
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._applied_seq: Any = None

    def read(self) -> dict[str, Any] | None:
        """The latest valid control data (re-read only when the file changed)."""
        with self._lock:
            try:
                info = self.path.stat()
            except OSError:
                return self.last_good
            # Every write replaces the file (new inode): two writes within one clock tick still differ.
            stamp = (info.st_ino, info.st_mtime_ns, info.st_size)
            if stamp == self._stamp:
                return self.last_good
            self._stamp = stamp
            data, error = runs.read_control(self.path.parent)
            if error is None:
                error = self._problem(data)
            if error is not None:
                self.warn(f"ignored a damaged control file ({error}); keeping the last good settings")
                return self.last_good
            self.last_good = data
            return data

    @staticmethod
    def _problem(data: dict[str, Any]) -> str | None:
        from utkface_core.config import LossWeightsError, check_loss_weights

        weights = data.get("weights")
        if weights is not None:
            try:
                check_loss_weights(weights, complete=True)
            except LossWeightsError as exc:
                return str(exc)
        if "auto" in data and not isinstance(data["auto"], bool):
            return f"auto must be true or false, got {data['auto']!r}"
        return None

    def poll(self) -> dict[str, Any] | None:
        """A weight request not handed out before, or None."""
        data = self.read()
        if data is None:
            return None
        with self._lock:
            seq = (data.get("seq"), data.get("updated"))
            if seq == self._applied_seq:
                return None
            self._applied_seq = seq
        return {"weights": data.get("weights"), "auto": data.get("auto")}

    def stop_requested(self) -> bool:
        """True once ``stop`` is set in the control file."""
        data = self.read()
        return bool(data and data.get("stop") is True)


class Worker:
    """Runs one job folder; see the module docstring."""

    def __init__(self, job_dir: str | Path, warm: Any = None) -> None:
        self.dir = Path(job_dir)
        self.warm = warm  # a model traced ahead by a standby (trainer.WarmModel); used if the job's config fits
        spec = runs.read_json(self.dir / runs.JOB_FILE)
        if not isinstance(spec, dict) or spec.get("kind") not in jobs.WORKER_KINDS:
            raise jobs.JobError(f"{self.dir} holds no valid {runs.JOB_FILE}: not a job folder")
        self.spec = spec
        self.kind: str = spec["kind"]
        self.stop_event = threading.Event()
        self.control = ControlReader(self.dir, warn=self._warn)
        self.live: dict[str, Any] = {}
        self._live_lock = threading.Lock()
        self._done = threading.Event()
        self._warned: set[str] = set()
        self._ended = False
        self._born = time.time()

    # --- reporting ---------------------------------------------------------------------------------------

    def _warn(self, message: str) -> None:
        if message not in self._warned:
            self._warned.add(message)
            runs.append_event(self.dir, {"kind": "warning", "message": message})
        print(f"warning: {message}", file=sys.stderr, flush=True)

    def _set(self, **fields: Any) -> None:
        with self._live_lock:
            self.live.update(fields)

    def report(self, event: dict) -> None:
        """Turn an engine event into status fields (latest wins) and/or an appended event line."""
        kind = event.get("kind")
        if kind == "decode":
            self._set(phase="preparing", decode_done=event.get("done"), decode_total=event.get("total"))
        elif kind == "batch":
            if "first_batch_s" not in self.live:
                self._first_batch()
            elapsed = float(event.get("elapsed_s") or 0.0)
            self._set(
                phase="training",
                epoch=event["epoch"],
                batch=event["batch"],
                steps=event["steps"],
                images_per_s=round(float(event.get("images_per_s") or 0.0), 1),
                eta_s=event.get("eta_s"),
                train_started=self.live.get("train_started") or time.time() - elapsed,
            )
        elif kind == "phase":
            self._set(phase=event.get("phase"))
            runs.append_event(self.dir, event)
        elif kind == "status":
            fields: dict[str, Any] = {"message": event.get("message", "")}
            if event.get("phase"):
                fields["phase"] = event["phase"]
            elif event.get("message") == "building the model":
                fields["phase"] = "building"
            self._set(**fields)
            runs.append_event(self.dir, event)
        elif kind == "epoch":
            self._set(weights=event.get("weights"), epochs_done=event["epoch"] + 1)
            runs.append_event(self.dir, _finite(event))
        elif kind == "weight_change":
            self._set(weights=event.get("new"), auto=event.get("auto"))
            runs.append_event(self.dir, {**event, "steps": self.live.get("steps")})
        elif kind == "end":
            self._ended = True
            runs.append_event(self.dir, _finite(event))
        elif kind == "progress":
            self._set(progress=event.get("progress"), message=event.get("message", ""))
        elif kind in ("sweep", "trial_start", "trial_epoch"):
            # A sweep's progress for describe_progress: trials finished, the trial in training and its epochs.
            if kind == "sweep" and event.get("total"):
                self._set(trials_done=event.get("done"), trials_total=event.get("total"))
            elif kind == "trial_start":
                self._set(trial=event.get("trial"), trial_started=time.time(), trial_epochs_done=0)
            elif kind == "trial_epoch" and isinstance(event.get("epoch"), int):
                self._set(trial_epochs_done=event["epoch"] + 1)
            runs.append_event(self.dir, _finite(event))
        else:
            runs.append_event(self.dir, _finite(event))

    def _first_batch(self) -> None:
        # Time to first batch (issue 7's budgets: Start -> training): from the job's submission (the Start click) and
        # from this process's start. The engine's first batch report comes after its first step or two.
        now = time.time()
        since_submit = round(now - float(self.spec.get("created") or now), 3)
        self._set(first_batch_s=since_submit)
        runs.append_event(
            self.dir,
            {
                "kind": "first_batch",
                "since_submit_s": since_submit,
                "since_worker_start_s": round(now - self._born, 3),
            },
        )

    def _beat(self) -> None:
        # Heartbeat + progress for the app, and the stop request, on their own thread: they keep working
        # while a long batch, a validation pass or a model save blocks the training thread.
        while not self._done.wait(HEARTBEAT_S):
            if not self.stop_event.is_set() and self.control.stop_requested():
                self.stop_event.set()
                self._set(message="stopping: finishing the current batch")
            with self._live_lock:
                fields = dict(self.live)
            try:
                written = runs.update_status(self.dir, **fields)
            except OSError as exc:
                written = None
                print(f"warning: could not write the heartbeat ({exc})", file=sys.stderr, flush=True)
            if written is None and not self.dir.is_dir():
                # The job folder was deleted under us: nobody can see or use this job any more.
                self.stop_event.set()

    # --- life cycle --------------------------------------------------------------------------------------

    def _status(self, state: str, message: str = "", **extra: Any) -> None:
        runs.write_status(self.dir, state, message, owner=self.spec.get("owner"), kind=self.kind, **extra)

    def _wait_for_turn(self) -> Any:
        """Wait in the FIFO queue of this kind's slot; return the held lock context, or None if stopped first."""
        group = jobs.SERIAL_GROUPS.get(self.kind)
        if group is None:
            return _NoLock()
        me = (float(self.spec.get("created") or 0.0), self.dir.name)
        announced = None
        while True:
            if self.control.stop_requested():
                return None
            ahead = [j for j in jobs.queue_of(self.kind) if j.id != self.dir.name and (j.created, j.id) < me]
            if not ahead:
                lock = jobs.file_lock(jobs.jobs_root() / f".{group}.lock", blocking=False)
                if lock.__enter__():
                    return lock
                lock.__exit__(None, None, None)
            position = len(ahead)
            if announced != position:
                self._status("queued", f"waiting for {position} job(s) ahead", phase="queued", queue_ahead=position)
                announced = position
            else:
                runs.update_status(self.dir)
            time.sleep(QUEUE_POLL_S)

    def run(self) -> int:
        """Run the job to its end; return the process exit code (0 unless it failed)."""
        self._status("preparing", "waiting for a free slot", phase="preparing")
        slot = self._wait_for_turn()
        if slot is None:
            self._status("stopped", "stopped before it started", phase="stopped")
            runs.append_event(self.dir, {"kind": "end", "state": "stopped", "message": "stopped before it started"})
            return 0
        beat = threading.Thread(target=self._beat, name="heartbeat", daemon=True)
        try:
            self._status("running", "starting", phase="preparing", started_at=time.time())
            beat.start()
            handler = DISPATCH[self.kind]
            state, message, result = handler(self)
        except Exception as exc:  # noqa: BLE001 - a failing job must end as "failed" with the reason
            state, message, result = "failed", f"{type(exc).__name__}: {exc}", None
            runs.write_error(self.dir, traceback.format_exc())
        finally:
            self._done.set()
            if beat.is_alive():
                beat.join(timeout=5)
            slot.__exit__(None, None, None)
        if result is not None:
            runs.write_json_atomic(self.dir / "result.json", result)
        with self._live_lock:
            live = dict(self.live)
        live.pop("message", None)
        live.pop("phase", None)
        self._status(state, message, phase=state, **live)
        if not self._ended or state == "failed":
            runs.append_event(self.dir, {"kind": "end", "state": state, "message": message})
        _tidy_app_data()
        return 1 if state == "failed" else 0


def _tidy_app_data() -> None:
    """After a job: bring the app data caches back within their budget (``janitor.sweep``).

    Runs after the job's end state is written, and never changes it: a janitor error is only printed.
    """
    try:
        from utkface_core import janitor

        janitor.sweep()
    except Exception as exc:  # noqa: BLE001 - tidying up must never fail a finished job
        print(
            f"warning: the app data janitor failed after the job ({type(exc).__name__}: {exc})",
            file=sys.stderr,
            flush=True,
        )


class _NoLock:
    def __exit__(self, *exc: Any) -> None:
        return None


def _finite(event: dict) -> dict:
    def clean(value: Any) -> Any:
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, list):
            return [clean(v) for v in value]
        return value

    return clean(event)


# --- the kinds ---------------------------------------------------------------------------------------------


def _run_train(worker: Worker) -> tuple[str, str, dict | None]:
    from utkface_core.config import TrainConfig
    from utkface_core.training.lossweights import LossWeights
    from utkface_core.workflow import run_training

    args = worker.spec.get("args") or {}
    config = TrainConfig.from_dict(dict(args.get("config") or {}))
    config.validate()
    weights = LossWeights(config.loss_weights)
    worker._set(time_budget_s=config.time_budget_s, epochs=config.epochs, weights=weights.get(), auto=weights.auto)
    result = run_training(
        config,
        args.get("data", "demo"),
        worker.dir,
        report=worker.report,
        stop_event=worker.stop_event,
        loss_weights=weights,
        control=worker.control.poll,
        extra_config={"owner": worker.spec.get("owner"), "job": worker.dir.name},
        warm=worker.warm,
    )
    worker._set(weights=weights.get(), auto=weights.auto)
    return result.state, result.message, {"state": result.state, "metrics": result.metrics}


def _run_evaluate(worker: Worker) -> tuple[str, str, dict | None]:
    from utkface_core.evaluation.evaluation import EVALUATION_PHASES, evaluate_run

    args = worker.spec.get("args") or {}
    current = {"phase": "preparing"}

    def on_phase(name: str) -> None:
        current["phase"] = name

    def progress(done: int, total: int) -> None:
        if worker.stop_event.is_set():
            raise jobs.JobStopped("stopped on request")
        what = EVALUATION_PHASES.get(current["phase"], current["phase"])
        worker.report(
            {
                "kind": "progress",
                "progress": min(0.99, done / max(total, 1)),
                "message": f"{what}: {done:,}/{total:,} images",
            }
        )

    worker._set(phase="evaluating")
    data_dir = args.get("data_dir")
    try:
        evaluation = evaluate_run(
            Path(args["run_dir"]), data_dir=Path(data_dir) if data_dir else None, progress=progress, on_phase=on_phase
        )
    except jobs.JobStopped as exc:
        return "stopped", str(exc), None
    return "completed", f"evaluated {evaluation.n:,} images", {"cache_key": evaluation.cache_key, "n": evaluation.n}


def _run_sweep(worker: Worker) -> tuple[str, str, dict | None]:
    from utkface_core.sweep import run_sweep_job  # provided by the sweep module; imported only when needed

    result = run_sweep_job(worker.spec, worker.dir, worker.report, worker.stop_event)
    state = "stopped" if worker.stop_event.is_set() else "completed"
    if isinstance(result, dict) and result.get("state") in runs.STATES:
        state = result["state"]
    message = result.get("message", "") if isinstance(result, dict) else ""
    return state, message or f"sweep {state}", result if isinstance(result, dict) else None


DISPATCH: dict[str, Callable[[Worker], tuple[str, str, dict | None]]] = {
    "train": _run_train,
    "evaluate": _run_evaluate,
    "sweep": _run_sweep,
}


def main(job_dir: str | Path, warm: Any = None) -> int:
    """Entry point of ``python -m utkface_core worker JOB_DIR`` (``warm``: a standby's model traced ahead)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return Worker(job_dir, warm=warm).run()
