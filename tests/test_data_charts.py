"""The Explore page's data charts (training.charts): boxes and bars computed here, not shipped as raw ages."""

from __future__ import annotations

import numpy as np
import pandas as pd

from utkface_core.labels import GENDERS, RACES
from utkface_core.training import charts


def _frame(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "age": rng.integers(10, 66, n),
            "gender_name": rng.choice(list(GENDERS), n),
            "race_name": rng.choice(list(RACES), n),
        }
    )


def test_box_statistics_are_the_quartiles_and_whiskers_plotly_would_draw():
    ages = np.array([1.0, 20, 21, 22, 23, 24, 25, 26, 90])
    stats = charts._box_stats(ages)
    q1, median, q3 = np.quantile(ages, [0.25, 0.5, 0.75])
    assert (stats["q1"], stats["median"], stats["q3"]) == (q1, median, q3)
    # 1.5 IQR = 6 around 21..25: 1 and 90 lie beyond, so the whiskers end at the furthest values within it.
    assert (stats["lowerfence"], stats["upperfence"]) == (20.0, 26.0)


def test_age_box_draws_one_box_per_category_with_its_median():
    frame = _frame(500)
    fig = charts.age_box(frame, "race_name")
    assert [trace.name for trace in fig.data] == [r for r in RACES if (frame["race_name"] == r).any()]
    for trace in fig.data:
        ages = frame.loc[frame["race_name"] == trace.name, "age"]
        assert list(trace.x) == [trace.name] and trace.median[0] == ages.median()


def test_age_box_by_race_and_gender_groups_one_trace_per_gender():
    fig = charts.age_box(_frame(500), "race_name", hue="gender_name")
    assert [trace.name for trace in fig.data] == list(GENDERS)
    assert fig.layout.boxmode == "group" and all(len(trace.x) == len(RACES) for trace in fig.data)


def test_chart_size_does_not_grow_with_the_number_of_images():
    small, large = _frame(200), _frame(20_000, seed=1)
    for draw in (lambda f: charts.age_box(f, "race_name", hue="gender_name"), charts.age_histogram):
        assert len(draw(large).to_json()) < 1.2 * len(draw(small).to_json())


def test_age_histogram_counts_every_year_between_the_youngest_and_the_oldest():
    frame = pd.DataFrame({"age": [12, 12, 15, 20, 20, 20]})
    (bars,) = charts.age_histogram(frame).data
    assert list(bars.x) == list(range(12, 21))
    assert list(bars.y) == [2, 0, 0, 1, 0, 0, 0, 0, 3]


def test_empty_frames_give_empty_charts_not_errors():
    empty = _frame(0)
    assert charts.age_histogram(empty).data == ()
    assert charts.age_box(empty, "gender_name").data == ()
