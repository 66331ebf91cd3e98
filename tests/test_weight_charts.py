"""Charts of live loss-weight changes: the weights-over-time table and the change markers."""

import pandas as pd

from utkface_core.training import charts

CHANGE = {
    "kind": "weight_change",
    "epoch": 1,
    "batch": 5,
    "steps": 10,
    "source": "manual",
    "auto": False,
    "old": {"age": 2.0, "gender": 1.0, "race": 1.5},
    "new": {"age": 2.0, "gender": 0.5, "race": 1.5},
}
HISTORY = pd.DataFrame(
    {
        "epoch": [1, 2, 3],
        "val_age_mae": [9.0, 8.0, 7.5],
        "w_age": [2.0, 2.0, 2.0],
        "w_gender": [1.0, 0.5, 0.5],
        "w_race": [1.5, 1.5, 1.5],
    }
)


def test_a_change_sits_inside_its_epoch_on_the_epoch_axis():
    assert charts.change_position(CHANGE) == 1.5
    assert charts.change_position({**CHANGE, "steps": None}) == 1.0


def test_the_weights_timeline_steps_at_the_change():
    timeline = charts.weights_timeline(HISTORY, [CHANGE])
    at_change = timeline[timeline["x"] == 1.5]
    assert list(at_change["gender"]) == [1.0, 0.5]  # old then new at the same moment
    assert list(timeline["x"]) == sorted(timeline["x"])


def test_curves_mark_the_changes():
    fig = charts.metric_curve(HISTORY, "age_mae", changes=[CHANGE])
    markers = [t for t in fig.data if t.name == "weight change"]
    assert len(markers) == 1 and list(markers[0].x) == [1.5] and "gender 1.00→0.50" in markers[0].hovertext[0]
    compare = charts.compare_curves({"a": HISTORY}, "age_mae", changes={"a": [CHANGE]})
    (marker,) = [t for t in compare.data if t.name == "a: weight change"]
    assert list(marker.y) == [8.5]  # on the curve, halfway between epochs 1 (9.0) and 2 (8.0)
    weights = charts.compare_weights({"a": HISTORY}, {"a": [CHANGE]})
    assert {t.name for t in weights.data} == {"a · age", "a · gender", "a · race"}
