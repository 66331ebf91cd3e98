"""Pareto dominance, the Pareto front and the hypervolume of points to be minimised (pure, no training)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


class ParetoError(ValueError):
    """Points or a reference point were malformed (ragged, empty dimension, non-finite)."""


def _as_points(points: Sequence[Sequence[float]], name: str = "points") -> np.ndarray:
    array = np.asarray(points, dtype="float64")
    if array.size == 0:
        return array.reshape(0, 0)
    if array.ndim != 2 or array.shape[1] < 1:
        raise ParetoError(f"{name} must be a list of equally long numeric tuples, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ParetoError(f"{name} hold NaN or infinite values: drop the trials without metrics first")
    return array


def dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    """True when ``a`` is no worse than ``b`` in every objective and better in at least one (minimisation)."""
    a_arr, b_arr = np.asarray(a, dtype="float64"), np.asarray(b, dtype="float64")
    if a_arr.shape != b_arr.shape:
        raise ParetoError(f"cannot compare points of {a_arr.size} and {b_arr.size} objectives")
    return bool(np.all(a_arr <= b_arr) and np.any(a_arr < b_arr))


def pareto_front(points: Sequence[Sequence[float]]) -> list[int]:
    """Return the indices (ascending) of the points no other point dominates; equal points are all kept."""
    array = _as_points(points)
    keep = []
    for i in range(len(array)):
        others = np.delete(array, i, axis=0)
        dominated = np.any(np.all(others <= array[i], axis=1) & np.any(others < array[i], axis=1))
        if not dominated:
            keep.append(i)
    return keep


def _hv(points: np.ndarray, reference: np.ndarray) -> float:
    # Slicing along the first objective: between consecutive values the dominated region is the
    # (d-1)-dimensional hypervolume of the points already passed. Exact; fine for hundreds of points.
    if len(points) == 0:
        return 0.0
    if points.shape[1] == 1:
        return float(reference[0] - points[:, 0].min())
    points = points[np.argsort(points[:, 0], kind="stable")]
    total = 0.0
    for i in range(len(points)):
        upper = points[i + 1, 0] if i + 1 < len(points) else reference[0]
        width = upper - points[i, 0]
        if width > 0:
            total += width * _hv(points[: i + 1, 1:], reference[1:])
    return total


def hypervolume(points: Sequence[Sequence[float]], reference: Sequence[float]) -> float:
    """Volume of the region dominated by ``points`` and bounded by ``reference`` (minimisation).

    Points that do not beat the reference in every objective add nothing. Larger is better.
    """
    ref = np.asarray(reference, dtype="float64")
    if ref.ndim != 1 or ref.size < 1 or not np.isfinite(ref).all():
        raise ParetoError(f"reference must be a finite point, got {reference!r}")
    array = _as_points(points)
    if array.size == 0:
        return 0.0
    if array.shape[1] != ref.size:
        raise ParetoError(f"points have {array.shape[1]} objectives but the reference has {ref.size}")
    inside = array[np.all(array < ref, axis=1)]
    front = inside[pareto_front(inside)] if len(inside) else inside
    value = _hv(front, ref)
    return 0.0 if math.isclose(value, 0.0, abs_tol=1e-15) else value
