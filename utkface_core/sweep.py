"""Loss-weight sweeps: train one comparable run per weight setting and keep the Pareto-optimal trade-offs.

A sweep is a folder::

    SWEEP_DIR/sweep.json            the spec (what makes trials comparable) and the data fingerprint
    SWEEP_DIR/study.db              the Optuna study (SQLite by default; any RDB URL via ``storage``)
    SWEEP_DIR/trials/trial-NNN/     one ordinary run folder per trial (runs.py format) + sweep_trial.json
    SWEEP_DIR/results.json          trials, Pareto set and hypervolume, rewritten after every trial
    SWEEP_DIR/status.json           the sweep's own state (runs.py status format)

The run folders are the ledger: a trial counts as finished once its status says completed or failed, so a
resumed sweep never repeats a finished trial and re-runs only those that were interrupted or stopped.
Objectives (validation metrics of the best epoch): age MAE down, gender accuracy up, race accuracy up.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import math
import os
import shutil
import tarfile
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from utkface_core import runs
from utkface_core.config import HEADS, TUTORIAL_LOSS_WEIGHTS, ConfigError, TrainConfig
from utkface_core.data.splits import TRAINS_ON_VALID
from utkface_core.evaluation.pareto import hypervolume, pareto_front

Report = Callable[[dict], None]

SPEC_FILE = "sweep.json"
STUDY_FILE = "study.db"
TRIALS_DIR = "trials"
TRIAL_FILE = "sweep_trial.json"
RESULTS_FILE = "results.json"
LOCK_FILE = ".lock"

STRATEGIES: tuple[str, ...] = ("grid", "optuna", "auto")
BACKENDS: tuple[str, ...] = ("local", "ray")
SAMPLERS: tuple[str, ...] = ("tpe", "nsga2")
# Trained weights are the simplex fractions times 3, so equal weights train as 1/1/1 (the loss scale the
# presets were tuned for) and the tutorial's 2/1/1.5 sits at fractions 0.44/0.22/0.33.
WEIGHT_SCALE = 3.0
# The plan name of the ``with_tutorial`` baseline; charts mark its trial.
TUTORIAL_POINT = "tutorial"
OBJECTIVES: tuple[str, ...] = ("age_mae", "gender_accuracy", "race_accuracy")
DIRECTIONS: tuple[str, ...] = ("minimize", "maximize", "maximize")
FINISHED: tuple[str, ...] = ("completed", "failed")
# Changing these would make new trials incomparable with the finished ones.
_FIXED_FIELDS: tuple[str, ...] = (
    "data",
    "strategy",
    "trial_budget_s",
    "epochs",
    "min_age",
    "max_age",
    "preset",
    "image_size",
    "batch_size",
    "learning_rate",
    "seed",
    "split_method",
    "augment",
    "sampler",
    "tune_learning_rate",
    "min_weight",
    "storage",
)
_DEFAULT_EPOCHS_UNDER_BUDGET = 1000
_DEFAULT_EPOCHS = 10


class SweepError(ValueError):
    """A sweep request was invalid or its folder cannot be used; the message says what to do."""


def tutorial_fractions() -> list[float]:
    """The tutorial's fixed loss weights (2 / 1 / 1.5) as simplex fractions, in ``HEADS`` order."""
    total = sum(TUTORIAL_LOSS_WEIGHTS[h] for h in HEADS)
    return [TUTORIAL_LOSS_WEIGHTS[h] / total for h in HEADS]


@dataclass
class SweepSpec:
    """Everything that defines a sweep. Trials share data, split, seed and budget, so they are comparable."""

    data: str = "demo"
    strategy: str = "grid"
    trials: int = 9  # weight settings to try (the Auto baseline of ``with_auto`` comes on top)
    trial_budget_s: float | None = 60.0  # wall-clock seconds per trial; None: the epoch budget alone
    epochs: int | None = None  # epochs per trial (a cap under a time budget; default 10 without one)
    min_age: int = 10
    max_age: int = 65
    preset: str = "fast"
    image_size: int | None = None
    batch_size: int = 64
    learning_rate: float | None = None
    seed: int = 0
    split_method: str = "tutorial"
    augment: bool = True
    sampler: str = "tpe"  # optuna strategy: "tpe" (multi-objective TPE) or "nsga2"
    tune_learning_rate: bool = False  # optuna strategy: also search the learning rate (x0.2 .. x5, log scale)
    with_auto: bool = False  # add the learned-weights (Auto) baseline as one more trial
    with_tutorial: bool = False  # add the tutorial's fixed 2/1/1.5 weights as one more trial
    min_weight: float = 0.05  # floor of each head's fraction, so no head goes untrained
    storage: str | None = None  # Optuna storage URL; None: sqlite:///SWEEP_DIR/study.db
    backend: str = "local"
    ray_address: str | None = None  # "auto", "ray://host:10001", or None for a local cluster
    trial_cpus: float = 1.0
    trial_gpus: float = 0.0
    max_concurrent: int | None = None  # ray: trials in flight at once (default: what the cluster fits)

    def train_config(
        self, loss_weights: dict[str, float] | str = "auto", learning_rate: float | None = None, fingerprint: str = ""
    ) -> TrainConfig:
        """The TrainConfig of one trial with the given weights (and learning rate, when tuned)."""
        epochs = self.epochs or (_DEFAULT_EPOCHS_UNDER_BUDGET if self.trial_budget_s else _DEFAULT_EPOCHS)
        return TrainConfig(
            preset=self.preset,
            image_size=self.image_size,
            epochs=epochs,
            time_budget_s=self.trial_budget_s,
            batch_size=self.batch_size,
            learning_rate=learning_rate if learning_rate is not None else self.learning_rate,
            min_age=self.min_age,
            max_age=self.max_age,
            loss_weights=loss_weights,
            seed=self.seed,
            split_method=self.split_method,
            early_stopping_patience=None,  # every trial spends its whole budget
            augment=self.augment,
            data_source=str(self.data),
            data_fingerprint=fingerprint,
        )

    def validate(self) -> SweepSpec:
        """Raise SweepError naming the first bad field; return self."""

        def bad(name: str, why: str) -> SweepError:
            return SweepError(f"sweep {name} = {getattr(self, name)!r} is invalid: {why}")

        def is_int(value: Any) -> bool:
            return isinstance(value, int) and not isinstance(value, bool)

        def is_number(value: Any) -> bool:
            return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)

        if not isinstance(self.data, str) or not self.data.strip():
            raise bad("data", "give a folder of UTKFace images or 'demo'")
        if self.strategy not in STRATEGIES:
            raise bad("strategy", f"choose one of {list(STRATEGIES)}")
        if not is_int(self.trials) or not 1 <= self.trials <= 10_000:
            raise bad("trials", "use an integer between 1 and 10000")
        if self.trial_budget_s is not None and (not is_number(self.trial_budget_s) or self.trial_budget_s <= 0):
            raise bad("trial_budget_s", "use a positive number of seconds, or None for an epoch budget")
        if self.epochs is not None and (not is_int(self.epochs) or self.epochs < 1):
            raise bad("epochs", "use an integer >= 1, or None")
        if self.split_method in TRAINS_ON_VALID:
            raise bad(
                "split_method", "it trains on the validation rows, which pick the trials: use 'select' or 'tutorial'"
            )
        if self.sampler not in SAMPLERS:
            raise bad("sampler", f"choose one of {list(SAMPLERS)}")
        if not all(isinstance(v, bool) for v in (self.tune_learning_rate, self.with_auto, self.with_tutorial)):
            raise SweepError("sweep tune_learning_rate, with_auto and with_tutorial must be True or False")
        if not is_number(self.min_weight) or not 0 <= self.min_weight < 1 / 3:
            raise bad("min_weight", "use a number from 0 up to (not including) 1/3")
        if self.storage is not None and (not isinstance(self.storage, str) or "://" not in self.storage):
            raise bad("storage", "use a database URL such as sqlite:///path/study.db or postgresql://..., or None")
        if self.backend not in BACKENDS:
            raise bad("backend", f"choose one of {list(BACKENDS)}")
        if self.ray_address is not None and (not isinstance(self.ray_address, str) or not self.ray_address.strip()):
            raise bad("ray_address", "use 'auto', a ray:// URL, or None for a local cluster")
        if not is_number(self.trial_cpus) or self.trial_cpus <= 0:
            raise bad("trial_cpus", "use a positive number of CPUs per trial")
        if not is_number(self.trial_gpus) or self.trial_gpus < 0:
            raise bad("trial_gpus", "use a number of GPUs per trial >= 0")
        if self.max_concurrent is not None and (not is_int(self.max_concurrent) or self.max_concurrent < 1):
            raise bad("max_concurrent", "use an integer >= 1, or None")
        try:
            self.train_config(dict(TUTORIAL_LOSS_WEIGHTS)).validate()
        except ConfigError as exc:
            raise SweepError(f"the trial training settings are invalid: {exc}") from None
        return self

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict of all fields."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SweepSpec:
        """Build a spec from a dict; unknown keys raise SweepError (values are checked by ``validate``)."""
        if not isinstance(data, dict):
            raise SweepError(f"a sweep spec must be a dict, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise SweepError(f"unknown sweep spec keys {unknown}; known keys are {sorted(known)}")
        return cls(**data)


# --- weights -------------------------------------------------------------------------------------------------


def _lattice(k: int) -> list[tuple[float, float, float]]:
    return [(i / k, j / k, (k - i - j) / k) for i in range(k, -1, -1) for j in range(k - i, -1, -1)]


def simplex_grid(n: int) -> list[tuple[float, float, float]]:
    """``n`` (age, gender, race) fractions summing to 1 that cover the simplex evenly.

    The full lattice of step 1/k with the most points that fit (3, 6, 10, 15, ... points: vertices, edges,
    interior), topped up by farthest-point picks from a fine lattice, so more points never cover worse.
    Deterministic.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise SweepError(f"a simplex grid needs an integer number of points >= 1, got {n!r}")
    k = 0
    while (k + 2) * (k + 3) // 2 <= n:
        k += 1
    points = _lattice(k) if k >= 1 else [(1 / 3, 1 / 3, 1 / 3)]
    if len(points) < n:
        candidates = np.asarray(_lattice(24))
        chosen = np.asarray(points)
        nearest = np.min(np.linalg.norm(candidates[:, None, :] - chosen[None, :, :], axis=2), axis=1)
        while len(points) < n:
            best = int(np.argmax(nearest))  # ties go to the first candidate: deterministic
            points.append(tuple(float(v) for v in candidates[best]))
            nearest = np.minimum(nearest, np.linalg.norm(candidates - candidates[best], axis=1))
    return [tuple(round(v, 12) for v in p) for p in points]


def floored_fractions(fractions: tuple[float, ...] | list[float], min_weight: float) -> dict[str, float]:
    """Map simplex fractions to the fractions trained: each head gets at least ``min_weight``; sums to 1."""
    values = np.clip(np.asarray(fractions, dtype="float64"), 0.0, None)
    if values.shape != (3,) or values.sum() <= 0:
        raise SweepError(f"weight fractions must be three non-negative numbers, not all 0; got {fractions!r}")
    values = values / values.sum()
    return {h: float(min_weight + (1 - 3 * min_weight) * v) for h, v in zip(HEADS, values, strict=True)}


def trained_weights(fractions: dict[str, float]) -> dict[str, float]:
    """Loss weights given to the trainer for simplex fractions (scaled so equal weights are 1/1/1)."""
    return {h: WEIGHT_SCALE * float(fractions[h]) for h in HEADS}


def normalized(weights: dict[str, float]) -> dict[str, float]:
    """Weights scaled to sum to 1 (a point on the simplex), e.g. for distances between settings."""
    total = sum(float(weights[h]) for h in HEADS)
    if total <= 0:
        raise SweepError(f"weights {weights!r} sum to 0: nothing to normalise")
    return {h: float(weights[h]) / total for h in HEADS}


def weight_distance(a: dict[str, float], b: dict[str, float]) -> float:
    """Euclidean distance between two weight settings after normalising each to the simplex."""
    na, nb = normalized(a), normalized(b)
    return float(math.sqrt(sum((na[h] - nb[h]) ** 2 for h in HEADS)))


# --- results ------------------------------------------------------------------------------------------------


def objective_vector(trial: dict, min_age: int, max_age: int) -> tuple[float, float, float]:
    """A trial's validation objectives as three numbers to minimise, each 0 (perfect) .. 1 (useless-ish):
    age MAE over the age span, gender error, race error."""
    span = max(1.0, float(max_age - min_age))
    return (float(trial["age_mae"]) / span, 1.0 - float(trial["gender_accuracy"]), 1.0 - float(trial["race_accuracy"]))


def summarize(trials: list[dict], min_age: int, max_age: int) -> dict[str, Any]:
    """Pareto set (indices into ``trials``), hypervolume against (1, 1, 1) and the compromise trial.

    Only completed trials with all three validation metrics take part. The compromise ("best") is the Pareto
    trial nearest the ideal point (each objective's best value over all trials) after scaling each objective
    to the observed range.
    """
    usable = [
        i
        for i, t in enumerate(trials)
        if t.get("state") == "completed" and all(t.get(k) is not None for k in OBJECTIVES)
    ]
    vectors = [objective_vector(trials[i], min_age, max_age) for i in usable]
    front = [usable[j] for j in pareto_front(vectors)] if vectors else []
    volume = hypervolume(vectors, (1.0, 1.0, 1.0)) if vectors else 0.0
    best = None
    if front:
        array = np.asarray(vectors)
        low, span = array.min(axis=0), np.ptp(array, axis=0)
        span[span == 0] = 1.0
        scaled = {i: (np.asarray(objective_vector(trials[i], min_age, max_age)) - low) / span for i in front}
        best = min(front, key=lambda i: (float(np.linalg.norm(scaled[i])), i))
    return {"pareto": front, "hypervolume": float(volume), "best": best}


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _learned_fractions(run_dir: Path) -> dict[str, float] | None:
    history = runs.read_history(run_dir)
    columns = [f"w_{h}" for h in HEADS]
    if history.empty or not all(c in history.columns for c in columns):
        return None
    last = history[columns].iloc[-1]
    if not np.isfinite(last.to_numpy(dtype="float64")).all() or float(last.sum()) <= 0:
        return None
    return normalized({h: float(last[f"w_{h}"]) for h in HEADS})


def trial_record(run_dir: str | Path) -> dict[str, Any] | None:
    """Describe one trial run folder (None when it has no sweep_trial.json, i.e. is not a trial).

    ``state`` is the run's (completed, failed, stopped, running, interrupted); the metrics are the validation
    metrics of the best epoch, ``test`` holds the test metrics. ``weights`` are the fractions trained (for the
    Auto baseline: the learned weights at the end, normalised).
    """
    run_dir = Path(run_dir)
    plan = _read_json(run_dir / TRIAL_FILE)
    if not isinstance(plan, dict):
        return None
    info = runs.load_run(run_dir)
    state = info.state
    if state == "broken":
        status = _read_json(run_dir / runs.STATUS_FILE)
        state = "failed" if isinstance(status, dict) and status.get("state") == "failed" else "interrupted"
    metrics = info.metrics or {}
    auto = plan.get("mode") == "auto"
    weights = _learned_fractions(run_dir) if auto else plan.get("fractions")
    record: dict[str, Any] = {
        "name": run_dir.name,
        "run_dir": str(run_dir),
        "state": state,
        "mode": "auto" if auto else "fixed",
        "weights": weights,
        "trained_weights": "auto" if auto else plan.get("trained_weights"),
        "learning_rate": plan.get("learning_rate"),
        "age_mae": metrics.get("val_age_mae"),
        "gender_accuracy": metrics.get("val_gender_accuracy"),
        "race_accuracy": metrics.get("val_race_accuracy"),
        "test": {k: metrics.get(k) for k in OBJECTIVES} if metrics else None,
        "epochs_run": metrics.get("epochs_run"),
        "wall_time_s": metrics.get("wall_time_s"),
        "message": info.message or info.error,
        "point": plan.get("point"),
        "optuna_trial": plan.get("optuna_trial"),
    }
    if state == "completed" and any(record[k] is None for k in OBJECTIVES):
        record["state"] = "failed"
        record["message"] = "the trial ended without a validation result: give trials a larger budget"
    return record


def _trial_dirs(sweep_dir: Path) -> list[Path]:
    base = sweep_dir / TRIALS_DIR
    if not base.is_dir():
        return []
    trials = [p for p in base.iterdir() if p.is_dir() and p.name.startswith("trial-")]
    return sorted(trials, key=lambda p: (len(p.name), p.name))  # trial-999 before trial-1000


def load_sweep(sweep_dir: str | Path) -> dict[str, Any]:
    """Read a sweep folder: finished ``trials`` (completed and failed), ``pareto`` indices into them,
    ``hypervolume``, ``best``, plus ``running`` and ``interrupted`` trials, the ``spec`` and the sweep ``state``.

    Never trains and never raises for a damaged trial folder (it is listed as interrupted).
    """
    sweep_dir = Path(sweep_dir)
    stored = _read_json(sweep_dir / SPEC_FILE)
    if not isinstance(stored, dict) or not isinstance(stored.get("spec"), dict):
        raise SweepError(f"{sweep_dir} is not a sweep folder ({SPEC_FILE} is missing or unreadable)")
    spec = stored["spec"]
    trials, running, interrupted = [], [], []
    for path in _trial_dirs(sweep_dir):
        try:
            record = trial_record(path)
        except Exception as exc:  # noqa: BLE001 - one damaged trial folder must not hide the others
            record = {"name": path.name, "run_dir": str(path), "state": "interrupted", "message": str(exc)}
        if record is None:
            continue
        if record["state"] in FINISHED:
            trials.append(record)
        elif record["state"] == "running":
            running.append(record)
        else:
            interrupted.append(record)
    summary = summarize(trials, int(spec.get("min_age", 10)), int(spec.get("max_age", 65)))
    status = _read_json(sweep_dir / runs.STATUS_FILE) or {}
    return {
        "sweep_dir": str(sweep_dir),
        "state": status.get("state"),
        "message": status.get("message"),
        "spec": spec,
        "fingerprint": stored.get("fingerprint"),
        "trials": trials,
        **summary,
        "objectives": "validation metrics of each trial's best epoch; hypervolume of (age MAE / age span, "
        "1 - gender accuracy, 1 - race accuracy) against (1, 1, 1), larger is better",
        "running": running,
        "interrupted": interrupted,
    }


def sweeps_dir() -> Path:
    """Default folder for sweeps started from the app (``app_data_dir()/sweeps``), created."""
    from utkface_core.paths import data_subdir

    return data_subdir("sweeps")


def list_trial_runs(root: str | Path | None = None) -> list[runs.RunInfo]:
    """RunInfo of every trial run folder of every sweep under ``root`` (default ``sweeps_dir()``), newest first,
    so trials can be listed next to ordinary runs (Evaluate, Predict)."""
    base = Path(root) if root is not None else sweeps_dir()
    infos = []
    try:
        sweeps = [p for p in base.iterdir() if (p / SPEC_FILE).is_file()]
    except OSError:
        return []
    for sweep in sweeps:
        for path in _trial_dirs(sweep):
            if (path / TRIAL_FILE).is_file():
                info = runs.load_run(path)
                info.name = f"{sweep.name}/{path.name}"
                infos.append(info)
    infos.sort(key=lambda info: (info.created or "", info.name), reverse=True)
    return infos


# --- the sweep folder ---------------------------------------------------------------------------------------


@contextlib.contextmanager
def _sweep_lock(sweep_dir: Path) -> Iterator[None]:
    import fcntl

    handle = open(sweep_dir / LOCK_FILE, "a+", encoding="utf-8")
    try:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise SweepError(
                f"sweep {sweep_dir} is already running ({holder}): stop it first, or wait for it to end"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}")
        handle.flush()
        yield
    finally:
        handle.close()


def _settle_spec(sweep_dir: Path, spec: SweepSpec) -> dict[str, Any]:
    """Write the spec of a new sweep, or check a resumed one against it; return the stored record."""
    path = sweep_dir / SPEC_FILE
    if not path.exists():
        if any(p.name != LOCK_FILE for p in sweep_dir.iterdir()):
            raise SweepError(f"{sweep_dir} is not empty and not a sweep folder: give a new or empty --out folder")
        stored = {"id": uuid.uuid4().hex, "spec": spec.to_dict(), "fingerprint": None}
        runs.write_json_atomic(path, stored)
        return stored
    stored = _read_json(path)
    if not isinstance(stored, dict) or not isinstance(stored.get("spec"), dict):
        raise SweepError(f"{path} is unreadable: this folder's sweep cannot be resumed; start a new one elsewhere")
    old, new = stored["spec"], spec.to_dict()
    changed = [f for f in _FIXED_FIELDS if old.get(f) != new.get(f)]
    if changed and not any((p / TRIAL_FILE).is_file() for p in _trial_dirs(sweep_dir)):
        stored.update(spec=new, fingerprint=None)  # nothing trained yet (e.g. a wrong data path): start over
        runs.write_json_atomic(path, stored)
        return stored
    if changed:
        detail = ", ".join(f"{f}: {old.get(f)!r} -> {new.get(f)!r}" for f in changed)
        raise SweepError(
            f"{sweep_dir} holds a sweep with other settings ({detail}); trials would not be comparable. "
            "Resume it with the same settings (more --trials is fine) or use a new --out folder"
        )
    stored["spec"] = new  # trials, backend and resources may change between sessions
    runs.write_json_atomic(path, stored)
    return stored


def _storage_url(spec: SweepSpec, sweep_dir: Path) -> str:
    return spec.storage or f"sqlite:///{(sweep_dir / STUDY_FILE).resolve()}"


def _optuna_study(spec: SweepSpec, sweep_dir: Path, sweep_id: str) -> Any:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if spec.sampler == "nsga2":
        sampler = optuna.samplers.NSGAIISampler(seed=spec.seed, population_size=max(4, min(50, spec.trials // 2)))
    else:
        sampler = optuna.samplers.TPESampler(seed=spec.seed, n_startup_trials=min(10, max(2, spec.trials // 3)))
    return optuna.create_study(
        storage=_storage_url(spec, sweep_dir),
        study_name=f"utkface-sweep-{sweep_id}",
        directions=list(DIRECTIONS),
        sampler=sampler,
        load_if_exists=True,
    )


def _new_trial_dir(sweep_dir: Path) -> Path:
    base = sweep_dir / TRIALS_DIR
    base.mkdir(exist_ok=True)
    existing = [int(p.name.split("-")[1]) for p in base.iterdir() if p.name.split("-")[-1].isdigit()]
    number = max(existing, default=-1) + 1
    while True:
        path = base / f"trial-{number:03d}"
        try:
            path.mkdir()
            return path
        except FileExistsError:
            number += 1


# --- planning: which trial comes next ------------------------------------------------------------------------


class _Planner:
    """Hands out trial plans until the sweep's target is met, skipping settings already finished."""

    def __init__(self, spec: SweepSpec, sweep_dir: Path, sweep_id: str) -> None:
        self.spec = spec
        self.sweep_dir = sweep_dir
        self.sweep_id = sweep_id
        self.in_flight: dict[str, dict] = {}  # trial folder name -> plan
        self.live: dict[int, Any] = {}  # optuna trial number -> the Trial asked in this session
        finished = [r for r in (trial_record(p) for p in _trial_dirs(sweep_dir)) if r and r["state"] in FINISHED]
        self.done_points = {r["point"] for r in finished if r.get("point") is not None}
        self.points: list[tuple[str, dict]] = []
        if spec.with_auto or spec.strategy == "auto":
            self.points.append(("auto", {"mode": "auto"}))
        if spec.with_tutorial and spec.strategy != "auto":
            # Exactly the tutorial's mix: every fraction is above the floor, so it is not rescaled like a grid point.
            tutorial = dict(zip(HEADS, tutorial_fractions(), strict=True))
            self.points.append((TUTORIAL_POINT, {"mode": "fixed", "fractions": tutorial}))
        if spec.strategy == "grid":
            # Points are named by their coordinates, so a resumed sweep with more --trials keeps the ones done.
            for p in simplex_grid(spec.trials):
                self.points.append(("grid " + "/".join(f"{v:.4f}" for v in p), {"mode": "fixed", "grid": list(p)}))
        # A grid point also counts as done when a finished grid trial trained the same fractions.
        trained = [r["weights"] for r in finished if r["mode"] == "fixed" and r.get("optuna_trial") is None]
        for name, point in self.points:
            if point["mode"] == "fixed" and trained:
                fractions = self._fractions(point)
                if any(all(abs(w.get(h, -1) - fractions[h]) < 1e-6 for h in HEADS) for w in trained if w):
                    self.done_points.add(name)
        self.optuna_done = sum(1 for r in finished if r.get("optuna_trial") is not None)
        self.study = _optuna_study(spec, sweep_dir, sweep_id)
        self._sync_study(finished)

    def _sync_study(self, finished: list[dict]) -> None:
        """Bring the study in line with the run folders after a crash: tell what finished, fail the rest."""
        import optuna
        from optuna.trial import TrialState

        by_number = {}
        for path in _trial_dirs(self.sweep_dir):
            plan = _read_json(path / TRIAL_FILE)
            if isinstance(plan, dict) and plan.get("optuna_trial") is not None:
                by_number[int(plan["optuna_trial"])] = path
        recorded = set()
        for trial in self.study.get_trials(deepcopy=False):
            if trial.user_attrs.get("run_name"):
                recorded.add(trial.user_attrs["run_name"])
            if trial.state != TrialState.RUNNING:
                continue
            # We hold the sweep lock, so a RUNNING trial belongs to a process that is gone.
            path = by_number.get(trial.number)
            record = trial_record(path) if path is not None else None
            if record is not None and record["state"] in FINISHED:
                self._tell(trial.number, record)
            else:
                self.study.tell(trial.number, state=TrialState.FAIL)
        if self.spec.strategy != "optuna":  # the sampler must see only the trials it proposed
            for record in finished:
                if record["optuna_trial"] is None and record["name"] not in recorded:
                    self._add_fixed(record, optuna)

    def _add_fixed(self, record: dict, optuna: Any) -> None:
        # Grid and Auto trials enter a grid/auto sweep's study as finished trials, for one view of every trial.
        distributions = {h: optuna.distributions.FloatDistribution(0.0, 1.0) for h in HEADS}
        fractions = record.get("weights") if record["mode"] == "fixed" else None
        attrs = {"run_name": record["name"], "mode": record["mode"], "point": record.get("point")}
        if record["state"] == "completed":
            values = [record[k] for k in OBJECTIVES]
            trial = optuna.trial.create_trial(
                values=values,
                params=fractions or {},
                distributions=distributions if fractions else {},
                user_attrs=attrs,
            )
        else:
            trial = optuna.trial.create_trial(
                state=optuna.trial.TrialState.FAIL,
                params=fractions or {},
                distributions=distributions if fractions else {},
                user_attrs={**attrs, "outcome": "failed"},
            )
        self.study.add_trial(trial)

    def _tell(self, number: int, record: dict | None) -> None:
        """Tell the study a trial's values (completed), or FAIL (failed: ``record`` state; interrupted: None)."""
        from optuna.trial import TrialState

        live = self.live.pop(number, None)
        outcome = "interrupted" if record is None else record["state"]
        if live is not None:
            live.set_user_attr("outcome", outcome)
        if outcome == "completed":
            self.study.tell(number, [record[k] for k in OBJECTIVES], skip_if_finished=True)
        else:
            self.study.tell(number, state=TrialState.FAIL, skip_if_finished=True)

    def _fractions(self, point: dict) -> dict[str, float]:
        return point["fractions"] if "fractions" in point else floored_fractions(point["grid"], self.spec.min_weight)

    def remaining(self) -> int:
        """Trials still to start (not counting those in flight)."""
        busy = {p.get("point") for p in self.in_flight.values()}
        fixed = [name for name, _ in self.points if name not in self.done_points and name not in busy]
        n = len(fixed)
        if self.spec.strategy == "optuna":
            in_flight = sum(1 for p in self.in_flight.values() if p.get("optuna_trial") is not None)
            n += max(0, self.spec.trials - self.optuna_done - in_flight)
        return n

    def next_plan(self) -> dict | None:
        """Allocate the next trial's run folder and write its plan there; None when nothing is left."""
        busy = {p.get("point") for p in self.in_flight.values()}
        plan: dict[str, Any] | None = None
        for name, point in self.points:
            if name not in self.done_points and name not in busy:
                plan = {"point": name, "mode": point["mode"]}
                if point["mode"] == "fixed":
                    plan["fractions"] = self._fractions(point)
                break
        if plan is None and self.spec.strategy == "optuna":
            in_flight = sum(1 for p in self.in_flight.values() if p.get("optuna_trial") is not None)
            if self.optuna_done + in_flight < self.spec.trials:
                plan = self._ask()
        if plan is None:
            return None
        if plan["mode"] == "fixed":
            plan["trained_weights"] = trained_weights(plan["fractions"])
        plan.setdefault("learning_rate", None)
        plan["sweep_id"] = self.sweep_id
        run_dir = _new_trial_dir(self.sweep_dir)
        plan["name"] = run_dir.name
        runs.write_json_atomic(run_dir / TRIAL_FILE, plan)
        if plan.get("optuna_trial") is not None:
            self.live[plan["optuna_trial"]].set_user_attr("run_name", run_dir.name)
        self.in_flight[run_dir.name] = plan
        return plan

    def _ask(self) -> dict:
        trial = self.study.ask()
        self.live[trial.number] = trial
        raw = [trial.suggest_float(h, 0.0, 1.0) for h in HEADS]
        fractions = floored_fractions(raw if sum(raw) > 0 else [1.0, 1.0, 1.0], self.spec.min_weight)
        plan: dict[str, Any] = {"point": None, "mode": "fixed", "fractions": fractions, "optuna_trial": trial.number}
        if self.spec.tune_learning_rate:
            base = self.spec.train_config().resolved_learning_rate()
            plan["learning_rate"] = trial.suggest_float("learning_rate", base / 5, min(1.0, base * 5), log=True)
        return plan

    def finish(self, name: str, record: dict) -> None:
        """Record a trial's end: finished trials go into the study; interrupted ones will be planned again."""
        import optuna

        plan = self.in_flight.pop(name)
        finished = record["state"] in FINISHED
        if plan.get("optuna_trial") is not None:
            self._tell(plan["optuna_trial"], record if finished else None)
            self.optuna_done += int(finished)
        elif finished:
            self.done_points.add(plan["point"])
            if self.spec.strategy != "optuna":
                self._add_fixed(record, optuna)


# --- running trials -----------------------------------------------------------------------------------------


_PREPARED: dict[tuple, Any] = {}


def _prepare(
    spec: SweepSpec, stop_event: threading.Event | None = None, report: Report | None = None, expect: str | None = None
) -> Any:
    """Decode the data once (cached on disk across processes) and split it like every trial.

    The prepared data is kept per process while its fingerprint is ``expect`` (Ray workers run many trials).
    """
    from utkface_core.workflow import prepare_training_data

    config = spec.train_config()
    key = (spec.data, config.resolved_image_size(), spec.min_age, spec.max_age, spec.seed, spec.split_method)
    cached = _PREPARED.get(key)
    if cached is None or expect is None or cached.fingerprint != expect:
        emit = report or (lambda event: None)
        _PREPARED.clear()  # one data set per process is enough; keep memory bounded
        _PREPARED[key] = prepare_training_data(
            spec.data,
            image_size=config.resolved_image_size(),
            min_age=spec.min_age,
            max_age=spec.max_age,
            seed=spec.seed,
            split_method=spec.split_method,
            progress=lambda done, total: emit({"kind": "decode", "done": done, "total": total}),
            stop=stop_event,
        )
    return _PREPARED[key]


def train_trial(
    spec: SweepSpec,
    prepared: Any,
    plan: dict,
    run_dir: Path,
    *,
    report: Report | None = None,
    stop_event: threading.Event | None = None,
) -> str:
    """Train one trial into ``run_dir`` (its plan already there); return the run's final state."""
    from utkface_core.training.trainer import train

    weights = "auto" if plan["mode"] == "auto" else dict(plan["trained_weights"])
    config = spec.train_config(weights, plan.get("learning_rate"), prepared.fingerprint)
    try:
        result = train(
            config, prepared.images, prepared.frame, prepared.split, run_dir, report=report, stop_event=stop_event
        )
    except ValueError as exc:  # bad inputs raise before the run starts; the trial still ends as failed
        runs.write_status(run_dir, "failed", f"{type(exc).__name__}: {exc}")
        return "failed"
    return result.state


def _trial_start(plan: dict) -> dict:
    """The event that announces a planned trial."""
    return {
        "kind": "trial_start",
        "trial": plan["name"],
        "mode": plan["mode"],
        "weights": plan.get("fractions"),
        "learning_rate": plan.get("learning_rate"),
    }


def _run_local(
    spec: SweepSpec,
    sweep_dir: Path,
    planner: _Planner,
    prepared: Any,
    emit: Report,
    stop_event: threading.Event,
    progress: Callable[[dict], None],
) -> None:
    while not stop_event.is_set():
        plan = planner.next_plan()
        if plan is None:
            return
        run_dir = sweep_dir / TRIALS_DIR / plan["name"]
        emit(_trial_start(plan))

        def forward(event: dict, name: str = plan["name"]) -> None:
            if event.get("kind") in ("epoch", "status"):
                emit({**event, "kind": f"trial_{event['kind']}", "trial": name})

        state = train_trial(spec, prepared, plan, run_dir, report=forward, stop_event=stop_event)
        if state == "stopped" and not stop_event.is_set():
            # Only a stop request may leave a trial unfinished, or the same setting would be retried forever.
            runs.write_status(run_dir, "failed", "the trial stopped without a stop request")
        record = trial_record(run_dir) or {"state": "failed", "name": plan["name"]}
        planner.finish(plan["name"], record)
        progress(record)


# --- Ray backend --------------------------------------------------------------------------------------------


def _ray_trial(spec_dict: dict, plan: dict, run_dir: str, fingerprint: str, threads: int) -> dict:
    """Ray task: train one trial. Writes straight into ``run_dir`` when this node sees the sweep folder
    (shared storage); otherwise trains into a temporary folder and returns it as a tar archive."""
    try:
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(max(1, min(2, threads)))
    except RuntimeError:
        pass  # this worker already ran a trial: TensorFlow keeps its first setting
    spec = SweepSpec.from_dict(spec_dict)
    prepared = _prepare(spec, expect=fingerprint)
    if prepared.fingerprint != fingerprint:
        raise SweepError(
            f"the data {spec.data!r} on this node (fingerprint {prepared.fingerprint}) differs from the driver's "
            f"({fingerprint}): every node needs the same data set at that path"
        )
    target = Path(run_dir)
    shared = (_read_json(target / TRIAL_FILE) or {}).get("sweep_id") == plan["sweep_id"]
    if shared:
        state = train_trial(spec, prepared, plan, target)
        return {"state": state, "archive": None}
    with tempfile.TemporaryDirectory(prefix="utkface-trial-") as tmp:
        local = Path(tmp) / plan["name"]
        local.mkdir()
        runs.write_json_atomic(local / TRIAL_FILE, plan)
        state = train_trial(spec, prepared, plan, local)
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
            for path in sorted(local.iterdir()):
                archive.add(path, arcname=path.name)
        return {"state": state, "archive": buffer.getvalue()}


def _unpack(archive: bytes, run_dir: Path) -> None:
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        tar.extractall(run_dir, filter="data")


def _ray_env_vars(spec: SweepSpec) -> dict[str, str]:
    env = {"TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")}
    if spec.ray_address is None:
        # A local cluster shares this machine's app folder, so the decoded-image cache is reused.
        for name in ("UTKFACE_APP_DIR", "UTKFACE_RUNS_DIR"):
            if os.environ.get(name):
                env[name] = os.environ[name]
    return env


def _ray_connect(spec: SweepSpec) -> tuple[Any, bool]:
    """Connect to the cluster at ``ray_address`` (or reuse this process's connection); True when we connected.

    This package is shipped to the workers (``py_modules``), so cluster nodes need only the dependencies.
    A connection made before (e.g. ``ray.init(num_cpus=2)``) is reused as it is: its workers must be able to
    import ``utkface_core`` already (a local cluster's workers get the driver's ``sys.path``).
    """
    try:
        import ray
    except ImportError:
        raise SweepError(
            "the Ray backend needs the ray package (pip install ray==2.60.0), or use --backend local"
        ) from None

    if ray.is_initialized():
        return ray, False
    package = Path(__file__).resolve().parent
    runtime_env = {"py_modules": [str(package)], "excludes": ["__pycache__"], "env_vars": _ray_env_vars(spec)}
    if spec.ray_address is None:
        ray.init(include_dashboard=False, log_to_driver=False, runtime_env=runtime_env)
    else:
        ray.init(address=spec.ray_address, log_to_driver=False, runtime_env=runtime_env)
    return ray, True


def _run_ray(
    spec: SweepSpec,
    sweep_dir: Path,
    planner: _Planner,
    prepared: Any,
    emit: Report,
    stop_event: threading.Event,
    progress: Callable[[dict], None],
) -> None:
    ray, started = _ray_connect(spec)
    try:
        task = ray.remote(_ray_trial).options(
            num_cpus=spec.trial_cpus,
            num_gpus=spec.trial_gpus,
            max_retries=0,
            runtime_env={"env_vars": _ray_env_vars(spec)},
        )
        resources = ray.cluster_resources()
        fits = int(resources.get("CPU", 1) // spec.trial_cpus)
        if spec.trial_gpus:
            fits = min(fits, int(resources.get("GPU", 0) // spec.trial_gpus))
        if fits < 1:
            raise SweepError(
                f"the Ray cluster ({resources.get('CPU', 0):g} CPUs, {resources.get('GPU', 0):g} GPUs) cannot fit "
                f"one trial of {spec.trial_cpus:g} CPUs and {spec.trial_gpus:g} GPUs: ask for fewer per trial"
            )
        capacity = min(fits, spec.max_concurrent or fits)
        threads = max(1, int(spec.trial_cpus))
        spec_dict = spec.to_dict()
        pending: dict[Any, dict] = {}
        while True:
            while not stop_event.is_set() and len(pending) < capacity:
                plan = planner.next_plan()
                if plan is None:
                    break
                run_dir = sweep_dir / TRIALS_DIR / plan["name"]
                emit(_trial_start(plan))
                ref = task.remote(spec_dict, plan, str(run_dir.resolve()), prepared.fingerprint, threads)
                pending[ref] = plan
            if not pending:
                return
            if stop_event.is_set():
                for ref, plan in pending.items():
                    ray.cancel(ref, force=True)
                    run_dir = sweep_dir / TRIALS_DIR / plan["name"]
                    runs.write_status(run_dir, "stopped", "the sweep was stopped before this trial finished")
                    planner.finish(plan["name"], trial_record(run_dir) or {"state": "stopped"})
                return
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=0.5)
            for ref in ready:
                plan = pending.pop(ref)
                run_dir = sweep_dir / TRIALS_DIR / plan["name"]
                try:
                    payload = ray.get(ref)
                    if payload.get("archive"):
                        _unpack(payload["archive"], run_dir)
                except Exception as exc:  # noqa: BLE001 - a lost task must end its trial as failed, not hang
                    cause = getattr(exc, "cause", None) or exc
                    runs.write_status(run_dir, "failed", f"the Ray task failed: {type(cause).__name__}: {cause}")
                record = trial_record(run_dir) or {"state": "failed", "name": plan["name"]}
                planner.finish(plan["name"], record)
                progress(record)
    finally:
        if started:
            ray.shutdown()


# --- entry points -------------------------------------------------------------------------------------------


def run_sweep(
    spec: SweepSpec, sweep_dir: str | Path, *, report: Report | None = None, stop_event: threading.Event | None = None
) -> dict[str, Any]:
    """Run (or resume) the sweep ``spec`` in ``sweep_dir`` until its trials are done or ``stop_event`` is set.

    Returns ``load_sweep(sweep_dir)``. Events passed to ``report``: ``decode``, ``sweep`` (progress),
    ``trial_start``, ``trial_epoch``/``trial_status`` (local backend), ``trial`` (a finished or interrupted
    trial's record) and a final ``sweep_end``.
    """
    spec = spec.validate()
    sweep_dir = Path(sweep_dir).expanduser()
    if sweep_dir.exists() and not sweep_dir.is_dir():
        raise SweepError(f"{sweep_dir} is a file: give a folder for the sweep")
    sweep_dir.mkdir(parents=True, exist_ok=True)
    emit = report or (lambda event: None)
    stop_event = stop_event if stop_event is not None else threading.Event()
    with _sweep_lock(sweep_dir):
        stored = _settle_spec(sweep_dir, spec)
        runs.write_status(sweep_dir, "running", "preparing the data")
        emit({"kind": "sweep", "state": "running", "message": "preparing the data"})
        left: int | None = None
        total = 0
        try:
            prepared = _prepare(spec, stop_event, emit)
            if stored.get("fingerprint") and stored["fingerprint"] != prepared.fingerprint:
                raise SweepError(
                    f"the data in {spec.data!r} changed since this sweep started (fingerprint {stored['fingerprint']} "
                    f"-> {prepared.fingerprint}): new trials would not be comparable; start a new sweep"
                )
            if not stored.get("fingerprint"):
                stored["fingerprint"] = prepared.fingerprint
                runs.write_json_atomic(sweep_dir / SPEC_FILE, stored)
            planner = _Planner(spec, sweep_dir, stored["id"])
            total = planner.remaining() + len(load_sweep(sweep_dir)["trials"])

            def progress(record: dict) -> None:
                result = load_sweep(sweep_dir)
                runs.write_json_atomic(sweep_dir / RESULTS_FILE, result)
                done = len(result["trials"])
                message = f"{done}/{total} trials finished"
                runs.write_status(sweep_dir, "running", message, done=done, total=total)
                emit({"kind": "trial", **record})
                emit(
                    {
                        "kind": "sweep",
                        "state": "running",
                        "message": message,
                        "done": done,
                        "total": total,
                        "pareto": result["pareto"],
                        "hypervolume": result["hypervolume"],
                    }
                )
                emit({"kind": "progress", "progress": done / max(1, total), "message": message})

            message = f"{total - planner.remaining()}/{total} trials finished before this session"
            runs.write_status(sweep_dir, "running", message, done=total - planner.remaining(), total=total)
            emit({"kind": "phase", "phase": "sweeping"})
            emit({"kind": "progress", "progress": (total - planner.remaining()) / max(1, total), "message": message})
            backend = _run_ray if spec.backend == "ray" else _run_local
            backend(spec, sweep_dir, planner, prepared, emit, stop_event, progress)
            left = planner.remaining()
        except KeyboardInterrupt:
            runs.write_status(sweep_dir, "stopped", "interrupted: run the sweep again to resume")
            emit({"kind": "sweep_end", "state": "stopped", "message": "interrupted"})
            raise
        except Exception as exc:
            if not stop_event.is_set():  # a stop request may cut the data preparation short: that is no failure
                message = f"{type(exc).__name__}: {exc}"
                runs.write_status(sweep_dir, "failed", message)
                emit({"kind": "sweep_end", "state": "failed", "message": message})
                raise
        result = load_sweep(sweep_dir)
        if stop_event.is_set() and left != 0:
            to_go = "before its trials started" if left is None else f"with {left} trials to go"
            state, message = "stopped", f"stopped {to_go}: run the sweep again to resume"
        else:
            state = "completed"
            failed = sum(1 for t in result["trials"] if t["state"] == "failed")
            message = f"{len(result['trials'])} trials finished" + (f" ({failed} failed)" if failed else "")
        runs.write_status(sweep_dir, state, message, done=len(result["trials"]), total=total)
        result.update(state=state, message=message)
        runs.write_json_atomic(sweep_dir / RESULTS_FILE, result)
        emit({"kind": "sweep_end", "state": state, "message": message})
        return result


def run_sweep_job(spec: dict, sweep_dir: Path, report: Callable[[dict], None], stop_event: threading.Event) -> dict:
    """Worker entry point for job kind ``sweep``; returns the sweep result (``load_sweep`` plus state, message).

    ``spec`` is ``SweepSpec.to_dict()``-shaped, or a worker job spec ``{"kind": "sweep", "args": {...}}`` whose
    args are. ``args["sweep_dir"]`` names the sweep folder, which must be directly inside ``sweeps_dir()`` (app
    visitors never choose server paths); without it the sweep goes into ``sweep_dir`` itself, or into
    ``sweep_dir/sweep`` when that is a worker job folder (its status.json belongs to the worker).
    """
    args = dict(spec.get("args") or {}) if spec.get("kind") == "sweep" and "args" in spec else dict(spec)
    target = args.pop("sweep_dir", None)
    folder = Path(sweep_dir)
    if target is not None:
        root = sweeps_dir().resolve()
        folder = Path(target).expanduser()
        if folder.is_symlink() or folder.resolve().parent != root:
            raise SweepError(f"sweep folder {folder} is not directly inside {root}: app sweeps live there")
    elif (folder / runs.JOB_FILE).is_file():
        folder = folder / "sweep"
    return run_sweep(SweepSpec.from_dict(args), folder, report=report, stop_event=stop_event)


def new_sweep_dir(label: str = "sweep") -> Path:
    """A new, unique, not yet created sweep folder path inside ``sweeps_dir()`` (``<stamp>-<label>-<id>``)."""
    import re
    from datetime import datetime

    slug = re.sub(r"[^A-Za-z0-9_-]+", "-", label).strip("-")[:40] or "sweep"
    return sweeps_dir() / f"{datetime.now().strftime('%Y%m%d-%H%M%S')}-{slug}-{uuid.uuid4().hex[:6]}"


def clamp_sweep_spec(spec: SweepSpec, mode: str | None = None) -> tuple[SweepSpec, list[str]]:
    """Return ``(clamped copy of spec, notes)``: the server's training limits applied to a sweep.

    Each trial gets the caps of one training (``limits.clamp_train_config``: time budget, epochs, image size,
    batch size). In public mode a whole sweep may take no longer than one training: the trials are cut so that
    trials x per-trial budget stays within ``limits.max_train_minutes`` (at least one trial; the Auto baseline
    counts as a trial). ``notes`` holds one sentence per change, for the page to show.
    """
    from utkface_core import limits
    from utkface_core.access import PUBLIC, check_mode, server_mode

    if not isinstance(spec, SweepSpec):
        raise TypeError(f"clamp_sweep_spec needs a SweepSpec, got {type(spec).__name__}")
    mode = check_mode(mode) if mode is not None else server_mode()
    trial = dataclasses.replace(
        spec.train_config(dict(TUTORIAL_LOSS_WEIGHTS)),
        epochs=spec.epochs or 1,  # the default epoch cap is internal
    )
    clamped, trial_notes = limits.clamp_train_config(trial, mode)
    notes = [f"Each trial: {note}" for note in trial_notes]
    changes: dict[str, Any] = {
        "trial_budget_s": clamped.time_budget_s,
        "image_size": clamped.image_size,
        "batch_size": clamped.batch_size,
    }
    if spec.epochs is not None:
        changes["epochs"] = clamped.epochs
    if mode == PUBLIC:
        most = max(1, int(limits.max_train_minutes(mode) * 60 // float(clamped.time_budget_s)))
        extra = (int(spec.with_auto) + int(spec.with_tutorial)) if spec.strategy != "auto" else 0
        planned = 1 if spec.strategy == "auto" else spec.trials + extra
        if planned > most:
            # The baselines go first (tutorial, then Auto) when fewer than one fixed mix would be left.
            for flag in ("with_tutorial", "with_auto"):
                if extra and getattr(spec, flag) and most - extra < 1:
                    changes[flag], extra = False, extra - 1
            changes["trials"] = max(1, most - extra)
            notes.append(
                f"A sweep on this shared server takes at most {limits.max_train_minutes(mode):g} minutes: "
                f"{changes['trials'] + extra} trial(s) of {float(clamped.time_budget_s):g} s (asked {planned})."
            )
    return dataclasses.replace(spec, **changes), notes


def start_sweep_job(
    spec: SweepSpec, owner: str | None, *, sweep_dir: str | Path | None = None, label: str | None = None
) -> Any:
    """Validate ``spec``, clamp it to the server's limits (``clamp_sweep_spec``) and queue it as a worker job
    (kind ``sweep``) into a new folder of ``sweeps_dir()`` (or the existing ``sweep_dir`` there, to resume);
    returns the ``jobs.JobInfo``. The job records ``owner``: only they (or an operator) may stop it."""
    from utkface_core import jobs

    spec.validate()
    spec, _ = clamp_sweep_spec(spec)
    if spec.trial_budget_s is None and spec.epochs is None:
        raise SweepError("give each trial a budget: seconds of training and/or epochs")
    folder = Path(sweep_dir) if sweep_dir is not None else new_sweep_dir(spec.strategy)
    args = {**spec.to_dict(), "sweep_dir": str(folder)}
    text = label or f"{spec.strategy} sweep of {spec.trials} trials on {spec.data}"
    return jobs.submit_job("sweep", args, owner, label=text, key=f"sweep:{folder.name}")


def pareto_table(result: dict[str, Any]) -> str:
    """The Pareto-optimal trials of a sweep result as a plain-text table (validation and test metrics)."""
    trials = result["trials"]
    lines = [
        f"{'trial':<10} {'mode':<5} {'w_age':>6} {'w_gender':>8} {'w_race':>6} {'lr':>8}  "
        f"{'val MAE':>7} {'val gen':>7} {'val race':>8}  {'test MAE':>8} {'test gen':>8} {'test race':>9}",
    ]
    for i in result["pareto"]:
        t = trials[i]
        w = t.get("weights") or {}
        test = t.get("test") or {}

        def num(value: Any, fmt: str) -> str:
            return "-" if value is None else format(value, fmt)

        mark = "*" if i == result.get("best") else " "
        lines.append(
            f"{t['name'] + mark:<10} {t['mode']:<5} {num(w.get('age'), '.3f'):>6} {num(w.get('gender'), '.3f'):>8} "
            f"{num(w.get('race'), '.3f'):>6} {num(t.get('learning_rate'), '.1e'):>8}  "
            f"{num(t['age_mae'], '.2f'):>7} {num(t['gender_accuracy'], '.3f'):>7} {num(t['race_accuracy'], '.3f'):>8}  "
            f"{num(test.get('age_mae'), '.2f'):>8} {num(test.get('gender_accuracy'), '.3f'):>8} "
            f"{num(test.get('race_accuracy'), '.3f'):>9}"
        )
    return "\n".join(lines)


def remove_sweep(sweep_dir: str | Path, root: str | Path | None = None) -> None:
    """Delete a sweep folder directly inside ``root`` (default ``sweeps_dir()``); refuse anything else."""
    base = (Path(root) if root is not None else sweeps_dir()).resolve()
    path = Path(sweep_dir).expanduser()
    if path.is_symlink() or path.resolve().parent != base or not (path / SPEC_FILE).is_file():
        raise SweepError(f"refusing to delete {path}: it is not a sweep folder directly inside {base}")
    shutil.rmtree(path)
