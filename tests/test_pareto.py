"""Pareto dominance, front extraction and hypervolume against hand-computed cases."""

import numpy as np
import pytest

from utkface_core.evaluation.pareto import ParetoError, dominates, hypervolume, pareto_front


def test_dominates_needs_no_worse_everywhere_and_better_somewhere():
    assert dominates((1, 2, 3), (1, 2, 4))
    assert not dominates((1, 2, 3), (1, 2, 3))  # equal points do not dominate each other
    assert not dominates((1, 2, 5), (2, 1, 5))  # a trade-off
    assert not dominates((2, 2, 2), (1, 2, 2))
    with pytest.raises(ParetoError, match="3 and 2 objectives"):
        dominates((1, 2, 3), (1, 2))


def test_pareto_front_of_hand_cases():
    points = [
        (10.0, 0.2, 0.3),  # 0: on the front
        (9.0, 0.3, 0.3),  # 1: on the front (better age, worse gender)
        (10.0, 0.25, 0.3),  # 2: dominated by 0
        (12.0, 0.3, 0.4),  # 3: dominated by 0 and 1
        (10.0, 0.2, 0.3),  # 4: duplicate of 0, kept like it
        (11.0, 0.1, 0.5),  # 5: on the front (best gender)
    ]
    assert pareto_front(points) == [0, 1, 4, 5]
    assert pareto_front([]) == []
    assert pareto_front([(1.0, 1.0)]) == [0]


def test_no_front_member_is_dominated_and_every_other_point_is():
    rng = np.random.default_rng(0)
    points = rng.random((60, 3))
    front = pareto_front(points)
    assert front
    for i in range(len(points)):
        dominated = any(dominates(points[j], points[i]) for j in range(len(points)) if j != i)
        assert (i in front) == (not dominated), i


def test_pareto_front_rejects_non_finite_points():
    with pytest.raises(ParetoError, match="NaN or infinite"):
        pareto_front([(1.0, float("nan"))])


def test_hypervolume_of_hand_cases():
    assert hypervolume([(0.5, 0.5, 0.5)], (1, 1, 1)) == pytest.approx(0.125)
    # Two boxes of 0.25 overlapping in 0.125 (inclusion-exclusion).
    assert hypervolume([(0.0, 0.5, 0.5), (0.5, 0.0, 0.5)], (1, 1, 1)) == pytest.approx(0.375)
    # A staircase in 2-D: 1 + 2 + 3 unit cells.
    assert hypervolume([(1, 3), (2, 2), (3, 1)], (4, 4)) == pytest.approx(6.0)
    assert hypervolume([(0.2,), (0.5,)], (1,)) == pytest.approx(0.8)


def test_dominated_and_outside_points_add_no_hypervolume():
    base = [(0.0, 0.5, 0.5), (0.5, 0.0, 0.5)]
    assert hypervolume(base + [(0.6, 0.6, 0.6)], (1, 1, 1)) == pytest.approx(0.375)
    assert hypervolume(base + [(0.1, 0.1, 1.5)], (1, 1, 1)) == pytest.approx(0.375)
    assert hypervolume([(1.0, 0.0, 0.0)], (1, 1, 1)) == 0.0  # on the reference: nothing dominated
    assert hypervolume([], (1, 1, 1)) == 0.0


def test_hypervolume_matches_monte_carlo_on_random_points():
    rng = np.random.default_rng(1)
    points = rng.random((8, 3)) * 0.9
    samples = rng.random((200_000, 3))
    covered = np.zeros(len(samples), dtype=bool)
    for p in points:
        covered |= np.all(samples >= p, axis=1)
    assert hypervolume(points, (1, 1, 1)) == pytest.approx(covered.mean(), abs=0.005)


def test_hypervolume_rejects_a_mismatched_reference():
    with pytest.raises(ParetoError, match="3 objectives but the reference has 2"):
        hypervolume([(0.1, 0.2, 0.3)], (1, 1))
    with pytest.raises(ParetoError, match="finite point"):
        hypervolume([(0.1,)], (float("inf"),))
