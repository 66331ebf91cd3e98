"""Plotly figures for the data set (the tutorial's exploration charts), built from an index frame."""

from __future__ import annotations

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go

from .labels import GENDERS, RACES

ORDERS = {"gender_name": list(GENDERS), "race_name": list(RACES)}
LABELS = {"age": "Age (years)", "gender_name": "Gender", "race_name": "Race", "count": "Images"}


def age_box(frame: pd.DataFrame, by: str, hue: str | None = None) -> go.Figure:
    """Box plot of age by a label column (``gender_name`` or ``race_name``), optionally coloured by another."""
    fig = px.box(frame, x=by, y="age", color=hue or by, category_orders=ORDERS, labels=LABELS, points=False)
    fig.update_layout(margin=dict(t=30, b=10), legend_title_text=LABELS[hue or by])
    return fig


def age_histogram(frame: pd.DataFrame) -> go.Figure:
    """Histogram of ages, one bar per year."""
    fig = px.histogram(frame, x="age", nbins=max(1, int(frame["age"].max() - frame["age"].min() + 1)) if len(frame) else 10, labels=LABELS)
    fig.update_layout(margin=dict(t=30, b=10), yaxis_title="Images", bargap=0.05)
    return fig


def gender_race_counts(frame: pd.DataFrame) -> go.Figure:
    """Grouped bars of image counts per race, one bar per gender."""
    counts = (
        frame.groupby(["race_name", "gender_name"], observed=False).size().reindex(
            pd.MultiIndex.from_product([RACES, GENDERS], names=["race_name", "gender_name"]), fill_value=0
        ).rename("count").reset_index()
    )
    fig = px.bar(counts, x="race_name", y="count", color="gender_name", barmode="group", category_orders=ORDERS, labels=LABELS, text="count")
    fig.update_layout(margin=dict(t=30, b=10), legend_title_text="Gender")
    return fig


CURVES = {
    "age_mae": ("Age MAE (years)", "age_mae"),
    "gender_accuracy": ("Gender accuracy", "gender_accuracy"),
    "race_accuracy": ("Race accuracy", "race_accuracy"),
}


def history_frame(epoch_events: list[dict]) -> pd.DataFrame:
    """Turn live epoch events (0-based ``epoch``, ``logs``, ``weights``) into a history table like history.csv."""
    rows = []
    for event in epoch_events:
        row = {"epoch": event["epoch"] + 1, **event.get("logs", {})}
        row.update({f"w_{k}": v for k, v in (event.get("weights") or {}).items()})
        rows.append(row)
    return pd.DataFrame(rows)


def metric_curve(history: pd.DataFrame, metric: str) -> go.Figure:
    """Train vs validation curve of one metric (``age_mae``, ``gender_accuracy``, ``race_accuracy``) by epoch."""
    title = CURVES[metric][0] if metric in CURVES else metric
    fig = go.Figure()
    for column, name, dash in ((metric, "train", "dot"), (f"val_{metric}", "validation", "solid")):
        if column in history:
            fig.add_scatter(x=history["epoch"], y=history[column], name=name, mode="lines+markers", line=dict(dash=dash))
    fig.update_layout(title=title, xaxis_title="Epoch", margin=dict(t=40, b=10), height=300, legend=dict(orientation="h", y=-0.3))
    return fig


def losses_curve(history: pd.DataFrame) -> go.Figure:
    """Per-head training losses and the weighted total by epoch."""
    fig = go.Figure()
    for column in ("age_loss", "gender_loss", "race_loss", "loss"):
        if column in history:
            fig.add_scatter(x=history["epoch"], y=history[column], name=column.replace("_loss", "") if column != "loss" else "weighted total", mode="lines+markers")
    fig.update_layout(title="Losses (train)", xaxis_title="Epoch", yaxis_type="log", margin=dict(t=40, b=10), height=300, legend=dict(orientation="h", y=-0.3))
    return fig


def weights_curve(history: pd.DataFrame) -> go.Figure:
    """The loss weights in force at each epoch (learned ones move in auto mode)."""
    fig = go.Figure()
    for head in ("age", "gender", "race"):
        if f"w_{head}" in history:
            fig.add_scatter(x=history["epoch"], y=history[f"w_{head}"], name=head, mode="lines+markers")
    fig.update_layout(title="Loss weights", xaxis_title="Epoch", margin=dict(t=40, b=10), height=300, legend=dict(orientation="h", y=-0.3))
    return fig


def compare_curves(histories: dict[str, pd.DataFrame], metric: str) -> go.Figure:
    """One validation curve per run, for side-by-side comparison."""
    fig = go.Figure()
    for name, history in histories.items():
        column = f"val_{metric}"
        if column in history:
            fig.add_scatter(x=history["epoch"], y=history[column], name=name, mode="lines+markers")
    fig.update_layout(title=f"Validation {CURVES.get(metric, (metric,))[0].lower()}", xaxis_title="Epoch", margin=dict(t=40, b=10), height=320, legend=dict(orientation="h", y=-0.3))
    return fig
