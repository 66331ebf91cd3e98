"""Plotly figures and tables for a loss-weight sweep result (``utkface_core.sweep.load_sweep``)."""

from __future__ import annotations

from typing import Any

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go

# The trial of a sweep's ``with_tutorial`` baseline carries this plan name (``utkface_core.sweep.TUTORIAL_POINT``;
# evaluation may not import the orchestration layer, so the name is repeated here and a test ties the two).
TUTORIAL_POINT = "tutorial"
TUTORIAL_LABEL = "Tutorial 2 / 1 / 1.5"
AUTO_LABEL = "Auto (learned weights)"
# The tutorial's 2 / 1 / 1.5 as simplex fractions (age, gender, race), for the reference mark on the weight triangle.
TUTORIAL_FRACTIONS = (2 / 4.5, 1 / 4.5, 1.5 / 4.5)
SYMBOLS = {"Pareto-optimal": "diamond", "dominated": "circle", AUTO_LABEL: "star", TUTORIAL_LABEL: "square"}
_LEGEND = dict(orientation="h", yanchor="bottom", y=1.02, xanchor="left", x=0, title_text="")

METRIC_LABELS = {
    "age_mae": "Val age MAE (years)",
    "gender_accuracy": "Val gender accuracy",
    "race_accuracy": "Val race accuracy",
}


def trials_frame(result: dict[str, Any]) -> pd.DataFrame:
    """One row per finished trial: weights, validation and test metrics, Pareto flag, run folder."""
    pareto = set(result.get("pareto") or [])
    rows = []
    for i, t in enumerate(result.get("trials") or []):
        weights = t.get("weights") or {}
        test = t.get("test") or {}
        rows.append(
            {
                "trial": t.get("name"),
                "pareto": i in pareto,
                "best": i == result.get("best"),
                "mode": t.get("mode"),
                "point": t.get("point"),
                "w_age": weights.get("age"),
                "w_gender": weights.get("gender"),
                "w_race": weights.get("race"),
                "learning_rate": t.get("learning_rate"),
                "age_mae": t.get("age_mae"),
                "gender_accuracy": t.get("gender_accuracy"),
                "race_accuracy": t.get("race_accuracy"),
                "test_age_mae": test.get("age_mae"),
                "test_gender_accuracy": test.get("gender_accuracy"),
                "test_race_accuracy": test.get("race_accuracy"),
                "state": t.get("state"),
                "run_dir": t.get("run_dir"),
            }
        )
    columns = [
        "trial",
        "pareto",
        "best",
        "mode",
        "point",
        "w_age",
        "w_gender",
        "w_race",
        "learning_rate",
        "age_mae",
        "gender_accuracy",
        "race_accuracy",
        "test_age_mae",
        "test_gender_accuracy",
        "test_race_accuracy",
        "state",
        "run_dir",
    ]
    return pd.DataFrame(rows, columns=columns)


def _completed(frame: pd.DataFrame) -> pd.DataFrame:
    done = frame[(frame["state"] == "completed") & frame["age_mae"].notna()].copy()
    done["set"] = done["pareto"].map({True: "Pareto-optimal", False: "dominated"})
    # The two baselines keep their own marks whether or not they are on the front (hover says which).
    done.loc[done["mode"] == "auto", "set"] = AUTO_LABEL
    done.loc[(done["mode"] == "fixed") & (done["point"] == TUTORIAL_POINT), "set"] = TUTORIAL_LABEL
    return done


def pareto_scatter(
    result: dict[str, Any], x: str = "age_mae", y: str = "gender_accuracy", color: str = "race_accuracy"
) -> go.Figure:
    """Trials in two objectives, coloured by the third; Pareto-optimal trials are diamonds."""
    for name in (x, y, color):
        if name not in METRIC_LABELS:
            raise ValueError(f"unknown metric {name!r}: choose from {list(METRIC_LABELS)}")
    done = _completed(trials_frame(result))
    fig = px.scatter(
        done,
        x=x,
        y=y,
        color=color,
        symbol="set",
        hover_name="trial",
        hover_data={"w_age": ":.3f", "w_gender": ":.3f", "w_race": ":.3f", "pareto": True, "set": False},
        symbol_map=SYMBOLS,
        labels=METRIC_LABELS,
        color_continuous_scale="Viridis",
    )
    fig.update_traces(marker=dict(size=13, line=dict(width=1, color="black")))
    fig.update_layout(margin=dict(t=50, b=10), legend=_LEGEND)
    return fig


def weights_ternary(result: dict[str, Any], metric: str = "age_mae") -> go.Figure:
    """Where each trial sits on the weight simplex (age, gender, race fractions), coloured by ``metric``."""
    if metric not in METRIC_LABELS:
        raise ValueError(f"unknown metric {metric!r}: choose from {list(METRIC_LABELS)}")
    done = _completed(trials_frame(result))
    done = done[done["w_age"].notna()]
    fig = px.scatter_ternary(
        done,
        a="w_age",
        b="w_gender",
        c="w_race",
        color=metric,
        symbol="set",
        hover_name="trial",
        symbol_map=SYMBOLS,
        labels={**METRIC_LABELS, "w_age": "age", "w_gender": "gender", "w_race": "race"},
        color_continuous_scale="Viridis_r" if metric == "age_mae" else "Viridis",
    )
    fig.update_traces(marker=dict(size=13, line=dict(width=1, color="black")))
    # Where the tutorial's weights sit, whether or not the sweep ran them.
    a, b, c = TUTORIAL_FRACTIONS
    fig.add_trace(
        go.Scatterternary(
            a=[a],
            b=[b],
            c=[c],
            mode="markers",
            name="tutorial's 2 / 1 / 1.5 (weights)",
            marker=dict(symbol="x-thin-open", size=16, line=dict(width=3, color="crimson")),
            hovertemplate="tutorial's weights 2 / 1 / 1.5<br>fractions %{a:.3f} / %{b:.3f} / %{c:.3f}<extra></extra>",
        )
    )
    fig.update_layout(margin=dict(t=50, b=10), legend=_LEGEND)
    return fig
