"""Held-out evaluation of the multi-task model: metrics, confusion, calibration, subgroups, worst errors.

Pure numpy / pandas / scikit-learn on arrays; the Evaluate page turns the returned tables into figures.
TensorFlow is only imported (indirectly, through ``utkface_core.inference.prediction``) inside :func:`evaluate_run`.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import (
    auc,
    average_precision_score,
    classification_report,
    confusion_matrix,
    precision_recall_curve,
    roc_curve,
)

from utkface_core import runs
from utkface_core.files import write_atomic, write_text_atomic
from utkface_core.labels import DEFAULT_AGE_RANGE, GENDERS, HEADS, RACES

DEFAULT_AGE_BINS: tuple[float, ...] = (10, 20, 30, 40, 50, 65)
DEFAULT_MIN_GROUP_N = 20
DEFAULT_CALIBRATION_BINS = 10
DEFAULT_TOP_K = 12
# Bump when the cached prediction format or the cache key changes, so stale entries are ignored.
CACHE_VERSION = 1
# Softmax rows from float16/float32 models sum to 1 only approximately.
_PROB_SUM_TOLERANCE = 1e-2

# progress(done, total), the convention of utkface_core.data.dataset.
Progress = Callable[[int, int], None]
# The phases evaluate_run names through ``on_phase``, with what each does (for progress texts).
EVALUATION_PHASES: dict[str, str] = {
    "indexing": "indexing the folder",
    "decoding": "decoding the images",
    "predicting": "predicting",
    "cached": "read from the evaluation cache",
}


class EvaluationError(ValueError):
    """Raised when evaluation inputs are inconsistent or a run cannot be evaluated."""


def _as_float_array(values: Any, name: str) -> np.ndarray:
    try:
        return np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise EvaluationError(f"{name} must be numeric: {exc}") from exc


@dataclass
class Predictions:
    """Model outputs for N images: age in years (N,), gender probabilities (N, 2), race probabilities (N, 5)."""

    age: np.ndarray
    gender_probs: np.ndarray
    race_probs: np.ndarray

    def __post_init__(self) -> None:
        self.age = _as_float_array(self.age, "preds.age")
        if self.age.ndim == 2 and self.age.shape[1] == 1:
            self.age = self.age[:, 0]
        self.gender_probs = _as_float_array(self.gender_probs, "preds.gender_probs")
        self.race_probs = _as_float_array(self.race_probs, "preds.race_probs")

    def __len__(self) -> int:
        return int(self.age.shape[0]) if self.age.ndim >= 1 else 0

    @classmethod
    def from_output(cls, output: Mapping[str, Any]) -> Predictions:
        """Build from the dict returned by ``prediction.predict_arrays`` (keys age, gender, race)."""
        missing = [k for k in HEADS if k not in output]
        if missing:
            raise EvaluationError(
                f"model output lacks {missing}; a run's model must return a dict with keys age, gender and race"
            )
        return cls(age=output["age"], gender_probs=output["gender"], race_probs=output["race"])


@dataclass
class Curve:
    """A threshold curve of the gender head (female = positive). ``x``/``y`` are fpr/tpr or recall/precision."""

    x: np.ndarray
    y: np.ndarray
    thresholds: np.ndarray
    score: float | None  # ROC AUC or average precision; None when only one class is present


@dataclass
class Reliability:
    """Reliability diagram of one classification head: per confidence bin, mean confidence, accuracy, count."""

    table: pd.DataFrame  # columns bin_lower, bin_upper, n, confidence, accuracy (NaN where n == 0)
    ece: float


@dataclass
class Evaluation:
    """Every evaluation result of one model on one labelled image set."""

    n: int
    age_mae: float
    age_rmse: float
    mae_by_age_bin: pd.DataFrame  # columns bin, n, mae
    residuals: np.ndarray  # predicted - true age, years
    gender_accuracy: float
    race_accuracy: float
    confusion_gender: pd.DataFrame  # counts; index true class, columns predicted class
    confusion_race: pd.DataFrame
    confusion_gender_normalized: pd.DataFrame  # rows sum to 1, or are all 0 for absent classes
    confusion_race_normalized: pd.DataFrame
    report_gender: dict[str, Any]
    report_race: dict[str, Any]
    gender_roc: Curve  # x = fpr, y = tpr, score = AUC
    gender_pr: Curve  # x = recall, y = precision, score = average precision
    subgroups: pd.DataFrame  # columns race, gender, n, age_mae, gender_accuracy, race_accuracy
    gaps: dict[str, float | None]  # spread (always >= 0) between best and worst cell with n >= min_group_n
    gap_cells: dict[str, dict[str, str] | None]  # metric -> {"best": cell, "worst": cell}
    reliability: dict[str, Reliability]  # "gender", "race"
    worst: dict[str, pd.DataFrame]  # one table per head (labels.HEADS)
    true_age: np.ndarray
    true_gender: np.ndarray
    true_race: np.ndarray
    predictions: Predictions
    files: list[str] | None = None
    min_group_n: int = DEFAULT_MIN_GROUP_N
    excluded: list[dict[str, str]] = field(default_factory=list)
    cached: bool = False
    cache_key: str | None = None

    @property
    def ece(self) -> dict[str, float]:
        """Expected calibration error per classification head."""
        return {head: rel.ece for head, rel in self.reliability.items()}

    def to_json_dict(self) -> dict[str, Any]:
        """Return the JSON-serialisable summary (the ``evaluate`` CLI contract); NaN becomes null."""
        data: dict[str, Any] = {
            "n": self.n,
            "age_mae": self.age_mae,
            "age_rmse": self.age_rmse,
            "gender_accuracy": self.gender_accuracy,
            "race_accuracy": self.race_accuracy,
            "confusion": {
                "gender": self.confusion_gender.to_numpy().tolist(),
                "race": self.confusion_race.to_numpy().tolist(),
            },
            "report": {"gender": self.report_gender, "race": self.report_race},
            "subgroups": self.subgroups.to_dict(orient="records"),
            "gaps": self.gaps,
            "gap_cells": self.gap_cells,
            "min_group_n": self.min_group_n,
            "ece": self.ece,
            "gender_auc": self.gender_roc.score,
            "gender_average_precision": self.gender_pr.score,
            "mae_by_age_bin": self.mae_by_age_bin.to_dict(orient="records"),
            "excluded": self.excluded,
            "n_excluded": len(self.excluded),
        }
        return _jsonable(data)


def _jsonable(value: Any) -> Any:
    """Recursively convert numpy / pandas scalars and containers to plain Python; NaN/inf become None."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return [_jsonable(v) for v in value.tolist()]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        f = float(value)
        return f if math.isfinite(f) else None
    if value is None or isinstance(value, str):
        return value
    if value is pd.NA or value is pd.NaT:
        return None
    return str(value)


# ---------------------------------------------------------------------------------------------------------------
# Input validation


def _as_labels(values: Any, name: str, n_classes: int, class_names: Sequence[str]) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise EvaluationError(f"{name} must be a 1-D array of class codes, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.number):
        raise EvaluationError(f"{name} must hold integer class codes 0..{n_classes - 1}, got dtype {arr.dtype}")
    as_float = arr.astype(np.float64)
    if not np.all(np.isfinite(as_float)) or not np.all(as_float == np.round(as_float)):
        raise EvaluationError(f"{name} must hold whole-number class codes 0..{n_classes - 1}")
    out = as_float.astype(np.int64)
    bad = (out < 0) | (out >= n_classes)
    if bad.any():
        raise EvaluationError(
            f"{name} has {int(bad.sum())} value(s) outside 0..{n_classes - 1} "
            f"({', '.join(f'{i} {c}' for i, c in enumerate(class_names))}), e.g. {int(out[bad][0])}"
        )
    return out


def _check_probs(probs: np.ndarray, name: str, n: int, n_classes: int) -> None:
    if probs.shape != (n, n_classes):
        raise EvaluationError(
            f"{name} must have shape (N, {n_classes}) = ({n}, {n_classes}) softmax probabilities, got {probs.shape}"
        )
    if not np.all(np.isfinite(probs)):
        raise EvaluationError(f"{name} contains NaN or infinite values; the model output is broken")
    if probs.min() < -1e-6 or probs.max() > 1 + 1e-6:
        raise EvaluationError(f"{name} must be probabilities in [0, 1] (softmax output), not logits")
    sums = probs.sum(axis=1)
    if np.any(np.abs(sums - 1.0) > _PROB_SUM_TOLERANCE):
        raise EvaluationError(
            f"rows of {name} must sum to 1 (softmax output); found a row summing to "
            f"{float(sums[np.argmax(np.abs(sums - 1.0))]):.4f}"
        )


def _check_bins(age_bins: Sequence[float]) -> np.ndarray:
    edges = np.asarray(list(age_bins), dtype=np.float64)
    if edges.ndim != 1 or edges.size < 1:
        raise EvaluationError("age_bins must be a non-empty sequence of increasing bin edges, e.g. (10, 20, 30)")
    if not np.all(np.isfinite(edges)) or np.any(np.diff(edges) <= 0):
        raise EvaluationError(f"age_bins must be finite and strictly increasing, got {list(age_bins)}")
    return edges


# ---------------------------------------------------------------------------------------------------------------
# Metric pieces


def _fmt_edge(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def _mae_by_bin(true_age: np.ndarray, abs_err: np.ndarray, edges: np.ndarray) -> pd.DataFrame:
    """MAE per age bin [lo, hi); open-ended outer bins appear only when they hold samples."""
    rows = []
    lower = np.concatenate([[-np.inf], edges])
    upper = np.concatenate([edges, [np.inf]])
    for lo, hi in zip(lower, upper, strict=True):
        mask = (true_age >= lo) & (true_age < hi)
        count = int(mask.sum())
        outer = not (np.isfinite(lo) and np.isfinite(hi))
        if outer and count == 0:
            continue
        if not np.isfinite(lo):
            label = f"<{_fmt_edge(hi)}"
        elif not np.isfinite(hi):
            label = f"{_fmt_edge(lo)}+"
        elif float(lo).is_integer() and float(hi).is_integer():
            label = f"{int(lo)}-{int(hi) - 1}"
        else:
            label = f"{_fmt_edge(lo)}-<{_fmt_edge(hi)}"
        mae = float(abs_err[mask].mean()) if count else float("nan")
        rows.append({"bin": label, "lower": float(lo), "upper": float(hi), "n": count, "mae": mae})
    return pd.DataFrame(rows, columns=["bin", "lower", "upper", "n", "mae"])


def _confusions(true: np.ndarray, pred: np.ndarray, names: Sequence[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    labels = list(range(len(names)))
    counts = confusion_matrix(true, pred, labels=labels).astype(np.int64)
    row_sums = counts.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        normalized = np.where(row_sums > 0, counts / np.maximum(row_sums, 1), 0.0)
    index = pd.Index(list(names), name="true")
    columns = pd.Index(list(names), name="predicted")
    return (pd.DataFrame(counts, index=index, columns=columns), pd.DataFrame(normalized, index=index, columns=columns))


def _report(true: np.ndarray, pred: np.ndarray, names: Sequence[str]) -> dict[str, Any]:
    report = classification_report(
        true, pred, labels=list(range(len(names))), target_names=list(names), output_dict=True, zero_division=0
    )
    return _jsonable(report)


def _gender_curves(true_gender: np.ndarray, gender_probs: np.ndarray) -> tuple[Curve, Curve]:
    """ROC and PR curves with female (code 1) as the positive class; scores None when a class is absent."""
    positive = (true_gender == 1).astype(int)
    score = gender_probs[:, 1]
    empty = np.zeros(0)
    if positive.min() == positive.max():
        roc = Curve(empty, empty, empty, None)
    else:
        fpr, tpr, thr = roc_curve(positive, score)
        roc = Curve(fpr, tpr, thr, float(auc(fpr, tpr)))
    if positive.sum() == 0:
        pr = Curve(empty, empty, empty, None)
    else:
        precision, recall, thr = precision_recall_curve(positive, score)
        pr = Curve(recall, precision, thr, float(average_precision_score(positive, score)))
    return roc, pr


def reliability_table(probs: np.ndarray, true: np.ndarray, n_bins: int = DEFAULT_CALIBRATION_BINS) -> Reliability:
    """Bin predictions by confidence (max probability) into ``n_bins`` equal bins over [0, 1]; compute ECE.

    ECE = sum over bins of (bin count / N) * |accuracy - mean confidence|.
    """
    if n_bins < 1:
        raise EvaluationError(f"n_bins must be >= 1, got {n_bins}")
    confidence = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == true).astype(np.float64)
    # Confidence 1.0 belongs to the last bin, not a bin of its own.
    idx = np.minimum((confidence * n_bins).astype(np.int64), n_bins - 1)
    n_total = len(confidence)
    rows = []
    ece = 0.0
    for b in range(n_bins):
        mask = idx == b
        count = int(mask.sum())
        if count:
            conf_b = float(confidence[mask].mean())
            acc_b = float(correct[mask].mean())
            ece += count / n_total * abs(acc_b - conf_b)
        else:
            conf_b = acc_b = float("nan")
        rows.append(
            {
                "bin_lower": b / n_bins,
                "bin_upper": (b + 1) / n_bins,
                "n": count,
                "confidence": conf_b,
                "accuracy": acc_b,
            }
        )
    return Reliability(pd.DataFrame(rows), float(ece))


def _subgroups(
    true_race: np.ndarray,
    true_gender: np.ndarray,
    abs_err: np.ndarray,
    gender_ok: np.ndarray,
    race_ok: np.ndarray,
    min_group_n: int,
) -> tuple[pd.DataFrame, dict[str, float | None], dict[str, dict[str, str] | None]]:
    rows = []
    for r, race in enumerate(RACES):
        for g, gender in enumerate(GENDERS):
            mask = (true_race == r) & (true_gender == g)
            count = int(mask.sum())
            nan = float("nan")
            rows.append(
                {
                    "race": race,
                    "gender": gender,
                    "n": count,
                    "age_mae": float(abs_err[mask].mean()) if count else nan,
                    "gender_accuracy": float(gender_ok[mask].mean()) if count else nan,
                    "race_accuracy": float(race_ok[mask].mean()) if count else nan,
                }
            )
    table = pd.DataFrame(rows, columns=["race", "gender", "n", "age_mae", "gender_accuracy", "race_accuracy"])
    eligible = table[table["n"] >= min_group_n]
    gaps: dict[str, float | None] = {}
    cells: dict[str, dict[str, str] | None] = {}
    # Lower MAE is better; higher accuracy is better. Gaps are reported as non-negative spreads.
    for metric, lower_is_better in (("age_mae", True), ("gender_accuracy", False), ("race_accuracy", False)):
        if len(eligible) < 2:
            gaps[metric] = None
            cells[metric] = None
            continue
        values = eligible[metric]
        best_i = values.idxmin() if lower_is_better else values.idxmax()
        worst_i = values.idxmax() if lower_is_better else values.idxmin()
        gaps[metric] = float(abs(values[best_i] - values[worst_i]))
        cells[metric] = {
            "best": f"{table.at[best_i, 'race']} {table.at[best_i, 'gender']}",
            "worst": f"{table.at[worst_i, 'race']} {table.at[worst_i, 'gender']}",
        }
    return table, gaps, cells


def _worst_errors(
    true_age: np.ndarray,
    true_gender: np.ndarray,
    true_race: np.ndarray,
    preds: Predictions,
    files: list[str] | None,
    top_k: int,
) -> dict[str, pd.DataFrame]:
    def file_of(i: int) -> str | None:
        return files[i] if files is not None else None

    abs_err = np.abs(preds.age - true_age)
    # Stable sort keeps ties in input order, so results are deterministic.
    order = np.argsort(-abs_err, kind="stable")[:top_k]
    age = pd.DataFrame(
        [
            {
                "index": int(i),
                "file": file_of(i),
                "true_age": float(true_age[i]),
                "pred_age": float(preds.age[i]),
                "abs_error": float(abs_err[i]),
            }
            for i in order
        ],
        columns=["index", "file", "true_age", "pred_age", "abs_error"],
    )
    out = {"age": age}
    for head, probs, true, names in (
        ("gender", preds.gender_probs, true_gender, GENDERS),
        ("race", preds.race_probs, true_race, RACES),
    ):
        pred = probs.argmax(axis=1)
        conf = probs.max(axis=1)
        wrong = np.flatnonzero(pred != true)
        wrong = wrong[np.argsort(-conf[wrong], kind="stable")][:top_k]
        out[head] = pd.DataFrame(
            [
                {
                    "index": int(i),
                    "file": file_of(i),
                    "true": names[true[i]],
                    "pred": names[pred[i]],
                    "confidence": float(conf[i]),
                    "p_true": float(probs[i, true[i]]),
                }
                for i in wrong
            ],
            columns=["index", "file", "true", "pred", "confidence", "p_true"],
        )
    return out


# ---------------------------------------------------------------------------------------------------------------
# Public: arrays


def evaluate_arrays(
    true_age: Sequence[float] | np.ndarray,
    true_gender: Sequence[int] | np.ndarray,
    true_race: Sequence[int] | np.ndarray,
    preds: Predictions,
    *,
    age_bins: Sequence[float] = DEFAULT_AGE_BINS,
    files: Sequence[str] | None = None,
    min_group_n: int = DEFAULT_MIN_GROUP_N,
    calibration_bins: int = DEFAULT_CALIBRATION_BINS,
    top_k: int = DEFAULT_TOP_K,
) -> Evaluation:
    """Evaluate predictions against true labels (age in years, gender 0/1, race 0..4).

    Raises EvaluationError (a ValueError) on empty input, mismatched lengths, labels out of range or
    probability arrays of the wrong shape.
    """
    if not isinstance(preds, Predictions):
        raise EvaluationError(f"preds must be a Predictions instance, got {type(preds).__name__}")
    age = _as_float_array(true_age, "true_age")
    if age.ndim != 1:
        raise EvaluationError(f"true_age must be a 1-D array of ages in years, got shape {age.shape}")
    n = int(age.shape[0])
    if n == 0:
        raise EvaluationError("nothing to evaluate: the label arrays are empty (no test images?)")
    gender = _as_labels(true_gender, "true_gender", len(GENDERS), GENDERS)
    race = _as_labels(true_race, "true_race", len(RACES), RACES)
    lengths = {"true_age": n, "true_gender": len(gender), "true_race": len(race), "preds.age": len(preds)}
    if preds.age.ndim != 1:
        raise EvaluationError(f"preds.age must have shape (N,) or (N, 1) in years, got {preds.age.shape}")
    if files is not None:
        files = [str(f) for f in files]
        lengths["files"] = len(files)
    if len(set(lengths.values())) != 1:
        raise EvaluationError(f"arrays must all have the same length, got {lengths}")
    if not np.all(np.isfinite(age)):
        raise EvaluationError("true_age contains NaN or infinite values")
    if not np.all(np.isfinite(preds.age)):
        raise EvaluationError("preds.age contains NaN or infinite values; the model output is broken")
    _check_probs(preds.gender_probs, "preds.gender_probs", n, len(GENDERS))
    _check_probs(preds.race_probs, "preds.race_probs", n, len(RACES))
    edges = _check_bins(age_bins)
    if int(min_group_n) < 1:
        raise EvaluationError(f"min_group_n must be >= 1, got {min_group_n}")
    if int(top_k) < 0:
        raise EvaluationError(f"top_k must be >= 0, got {top_k}")

    residuals = preds.age - age
    abs_err = np.abs(residuals)
    gender_pred = preds.gender_probs.argmax(axis=1)
    race_pred = preds.race_probs.argmax(axis=1)
    gender_ok = gender_pred == gender
    race_ok = race_pred == race

    cg, cg_norm = _confusions(gender, gender_pred, GENDERS)
    cr, cr_norm = _confusions(race, race_pred, RACES)
    roc, pr = _gender_curves(gender, preds.gender_probs)
    subgroups, gaps, gap_cells = _subgroups(race, gender, abs_err, gender_ok, race_ok, int(min_group_n))
    return Evaluation(
        n=n,
        age_mae=float(abs_err.mean()),
        age_rmse=float(np.sqrt(np.mean(residuals**2))),
        mae_by_age_bin=_mae_by_bin(age, abs_err, edges),
        residuals=residuals,
        gender_accuracy=float(gender_ok.mean()),
        race_accuracy=float(race_ok.mean()),
        confusion_gender=cg,
        confusion_race=cr,
        confusion_gender_normalized=cg_norm,
        confusion_race_normalized=cr_norm,
        report_gender=_report(gender, gender_pred, GENDERS),
        report_race=_report(race, race_pred, RACES),
        gender_roc=roc,
        gender_pr=pr,
        subgroups=subgroups,
        gaps=gaps,
        gap_cells=gap_cells,
        reliability={
            "gender": reliability_table(preds.gender_probs, gender, calibration_bins),
            "race": reliability_table(preds.race_probs, race, calibration_bins),
        },
        worst=_worst_errors(age, gender, race, preds, files, int(top_k)),
        true_age=age,
        true_gender=gender,
        true_race=race,
        predictions=preds,
        files=files,
        min_group_n=int(min_group_n),
    )


# ---------------------------------------------------------------------------------------------------------------
# Public: a saved run


def _read_config(run_dir: Path) -> dict[str, Any]:
    try:
        return runs.read_config(run_dir, require=("image_size",))
    except runs.RunError as exc:
        raise EvaluationError(str(exc)) from None


def _read_test_rows(run_dir: Path) -> pd.DataFrame:
    try:
        frame = runs.read_split(run_dir, columns=("path", *HEADS, "split"))
    except runs.RunError as exc:
        raise EvaluationError(f"{exc}; evaluate against a data folder (data_dir) instead") from None
    return frame[frame["split"].astype(str) == "test"].reset_index(drop=True)


def _fingerprint(frame: pd.DataFrame) -> str:
    """Hash of the evaluated rows: path, labels, content hash if known, and file size/mtime."""
    digest = hashlib.sha256()
    hashes = frame["hash"] if "hash" in frame.columns else pd.Series([None] * len(frame), index=frame.index)
    for path, age, gender, race, content in zip(
        frame["path"], frame["age"], frame["gender"], frame["race"], hashes, strict=True
    ):
        try:
            st = os.stat(path)
            stamp = f"{st.st_size}:{st.st_mtime_ns}"
        except OSError:
            stamp = "missing"
        content = "" if content is None or (isinstance(content, float) and math.isnan(content)) else str(content)
        digest.update(f"{path}|{age}|{gender}|{race}|{content}|{stamp}\n".encode())
    return digest.hexdigest()


def _load_cache(folder: Path, key: str, key_fields: dict[str, Any]) -> tuple[dict[str, np.ndarray], dict] | None:
    meta_path, npz_path = folder / f"{key}.json", folder / f"{key}.npz"
    if not (meta_path.is_file() and npz_path.is_file()):
        return None
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if meta.get("key") != _jsonable(key_fields):
            return None
        with np.load(npz_path, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except (OSError, ValueError, KeyError, json.JSONDecodeError):
        # A damaged cache entry is only a lost speed-up: recompute and overwrite it.
        return None
    return arrays, meta


def evaluate_run(
    run_dir: Path,
    *,
    data_dir: Path | None = None,
    min_age: int | None = None,
    max_age: int | None = None,
    progress: Progress | None = None,
    batch_size: int = 256,
    use_cache: bool = True,
    on_phase: Callable[[str], None] | None = None,
) -> Evaluation:
    """Evaluate a saved run's ``model.keras`` on its test split (or on every image of ``data_dir``).

    The age range defaults to the run's own (config min_age/max_age). Images that fail to decode are excluded
    and listed in ``Evaluation.excluded``. Predictions are cached in ``run_dir/evaluation/`` keyed by the model
    file (mtime, size), the evaluated rows and the age range, so a repeated call skips decoding and inference.
    ``progress(done, total)`` is passed to the folder indexer and the image decoder, then counts images
    predicted (each phase restarts from 0); a cache hit reports (n, n) once. ``on_phase(name)`` is called as
    each phase starts, with a name from ``EVALUATION_PHASES``.
    """
    run_dir = Path(run_dir)

    def phase(name: str) -> None:
        if on_phase is not None:
            on_phase(name)

    def report(done: int, total: int) -> None:
        if progress is not None:
            progress(done, total)

    config = _read_config(run_dir)
    model_path = runs.model_path(run_dir)
    if not model_path.is_file():
        raise EvaluationError(f"{run_dir} has no {runs.MODEL_FILE} yet; wait for training to save a model, or retrain")
    image_size = int(config["image_size"])
    lo = min_age if min_age is not None else config.get("min_age", DEFAULT_AGE_RANGE[0])
    hi = max_age if max_age is not None else config.get("max_age", DEFAULT_AGE_RANGE[1])
    lo, hi = int(lo), int(hi)
    if lo > hi:
        raise EvaluationError(f"min_age ({lo}) must not exceed max_age ({hi})")

    from utkface_core.data.splits import filter_frame

    if data_dir is not None:
        from utkface_core.data.dataset import index_folder

        data_dir = Path(data_dir)
        if not data_dir.is_dir():
            raise EvaluationError(f"data folder {data_dir} does not exist; choose an existing image folder")
        phase("indexing")
        frame = index_folder(data_dir, progress=progress).frame
        frame = filter_frame(frame, lo, hi)
        source = str(data_dir.resolve())
    else:
        frame = _read_test_rows(run_dir)
        if min_age is not None or max_age is not None:
            frame = filter_frame(frame, lo, hi)
        source = f"{runs.SPLIT_FILE}:test"
    frame = frame.reset_index(drop=True)
    if len(frame) == 0:
        raise EvaluationError(
            f"no images to evaluate in {source} for ages {lo}-{hi}; widen the age range or choose another folder"
        )

    st = model_path.stat()
    key_fields = {
        "version": CACHE_VERSION,
        "model": {"mtime_ns": st.st_mtime_ns, "size": st.st_size},
        "data": {"source": source, "fingerprint": _fingerprint(frame)},
        "age_range": [lo, hi],
        "image_size": image_size,
    }
    key = hashlib.sha256(json.dumps(key_fields, sort_keys=True).encode()).hexdigest()[:20]
    cache_dir = run_dir / "evaluation"

    if use_cache:
        hit = _load_cache(cache_dir, key, key_fields)
        if hit is not None:
            arrays, meta = hit
            evaluation = evaluate_arrays(
                arrays["true_age"],
                arrays["true_gender"],
                arrays["true_race"],
                Predictions(arrays["pred_age"], arrays["gender_probs"], arrays["race_probs"]),
                files=[str(f) for f in arrays["files"]],
            )
            evaluation.excluded = list(meta.get("excluded", []))
            evaluation.cached = True
            evaluation.cache_key = key
            phase("cached")
            report(evaluation.n, evaluation.n)
            return evaluation

    from utkface_core.data.imagecache import build_image_cache
    from utkface_core.inference.prediction import load_model, predict_arrays

    paths = [str(p) for p in frame["path"]]
    phase("decoding")
    cache = build_image_cache(paths, image_size, progress=progress)
    ok = np.asarray(cache.ok, dtype=bool)
    if ok.shape != (len(paths),):
        raise EvaluationError(f"image cache returned {ok.shape} ok-flags for {len(paths)} images")
    excluded = [{"file": str(e.get("file", "")), "reason": str(e.get("reason", ""))} for e in cache.errors]
    failed_files = {Path(e["file"]).name for e in excluded}
    for i in np.flatnonzero(~ok):
        # Every excluded image is listed, even if the cache reported no reason for it.
        if Path(paths[i]).name not in failed_files:
            excluded.append({"file": paths[i], "reason": "could not be decoded"})
    keep = np.flatnonzero(ok)
    if keep.size == 0:
        raise EvaluationError(
            f"none of the {len(paths)} images could be decoded; see the excluded list: {excluded[:3]}"
        )

    phase("predicting")
    model = load_model(model_path)
    outputs: dict[str, list[np.ndarray]] = {head: [] for head in HEADS}
    chunk = max(int(batch_size), 1) * 4
    # Chunking keeps memory bounded for large folders: only one chunk of decoded images is materialised.
    for start in range(0, keep.size, chunk):
        idx = keep[start : start + chunk]
        out = predict_arrays(model, np.asarray(cache.images[idx]), batch_size=batch_size)
        part = Predictions.from_output(out)
        outputs["age"].append(part.age)
        outputs["gender"].append(part.gender_probs)
        outputs["race"].append(part.race_probs)
        report(min(start + chunk, keep.size), keep.size)
    preds = Predictions(
        np.concatenate(outputs["age"]), np.concatenate(outputs["gender"]), np.concatenate(outputs["race"])
    )
    kept = frame.iloc[keep]
    files = [paths[i] for i in keep]
    evaluation = evaluate_arrays(
        kept["age"].to_numpy(), kept["gender"].to_numpy(), kept["race"].to_numpy(), preds, files=files
    )
    evaluation.excluded = excluded
    evaluation.cache_key = key

    cache_dir.mkdir(parents=True, exist_ok=True)
    arrays = {
        "true_age": evaluation.true_age,
        "true_gender": evaluation.true_gender,
        "true_race": evaluation.true_race,
        "pred_age": preds.age,
        "gender_probs": preds.gender_probs,
        "race_probs": preds.race_probs,
        "files": np.asarray(files, dtype=str),
    }

    def save_arrays(tmp: Path) -> None:
        with open(tmp, "wb") as handle:  # np.savez would append ".npz" to the temp name
            np.savez(handle, **arrays)

    # The npz goes first and the json last: a json present means its npz is complete.
    write_atomic(cache_dir / f"{key}.npz", save_arrays)
    meta = {"key": key_fields, "excluded": excluded, "summary": evaluation.to_json_dict()}
    write_text_atomic(cache_dir / f"{key}.json", json.dumps(_jsonable(meta), indent=2))
    return evaluation
