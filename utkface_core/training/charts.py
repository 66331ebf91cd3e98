"""Plotly figures for the data set (the tutorial's exploration charts), built from an index frame."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go

from utkface_core.labels import GENDERS, HEADS, RACES

ORDERS = {"gender_name": list(GENDERS), "race_name": list(RACES)}
LABELS = {"age": "Age (years)", "gender_name": "Gender", "race_name": "Race", "count": "Images"}
# Line styles of the heads in weight charts, in the order of HEADS.
_DASHES = ("solid", "dash", "dot", "dashdot")


def _box_stats(ages: np.ndarray) -> dict[str, float]:
    """Quartiles and whisker ends of one box, as Plotly draws them from raw values ("linear" quartiles, whiskers at
    the furthest values within 1.5 IQR)."""
    q1, median, q3 = np.quantile(ages, [0.25, 0.5, 0.75])
    reach = 1.5 * (q3 - q1)
    return {
        "q1": float(q1),
        "median": float(median),
        "q3": float(q3),
        "lowerfence": float(ages[ages >= q1 - reach].min()),
        "upperfence": float(ages[ages <= q3 + reach].max()),
    }


def age_box(frame: pd.DataFrame, by: str, hue: str | None = None) -> go.Figure:
    """Box plot of age by a label column (``gender_name`` or ``race_name``), optionally coloured by another.

    The boxes are computed here and sent as statistics: a figure of the raw ages of the full UTKFace set was
    ~200 KB per chart for the browser to parse and sort on every new session.
    """
    color = hue or by
    fig = go.Figure()
    palette = px.colors.qualitative.Plotly
    for i, group in enumerate(ORDERS[color]):
        rows = frame[frame[color] == group]
        xs, boxes = [], []
        for category in ORDERS[by]:
            ages = rows.loc[rows[by] == category, "age"].to_numpy(dtype="float64")
            if len(ages):
                xs.append(category)
                boxes.append(_box_stats(ages))
        if not xs:
            continue
        stats = {key: [box[key] for box in boxes] for key in boxes[0]}
        fig.add_trace(go.Box(x=xs, name=group, marker_color=palette[i % len(palette)], boxpoints=False, **stats))
    fig.update_layout(
        boxmode="group" if hue else "overlay",
        margin=dict(t=30, b=10),
        legend_title_text=LABELS[color],
        xaxis=dict(title=LABELS[by], categoryorder="array", categoryarray=ORDERS[by]),
        yaxis_title=LABELS["age"],
    )
    return fig


def age_histogram(frame: pd.DataFrame) -> go.Figure:
    """Histogram of ages, one bar per year (counted here: the browser gets one number per year, not every age)."""
    ages = frame["age"].to_numpy(dtype="int64")
    fig = go.Figure()
    if len(ages):
        low = int(ages.min())
        counts = np.bincount(ages - low)
        fig.add_trace(
            go.Bar(
                x=np.arange(low, low + len(counts)),
                y=counts,
                marker_color=px.colors.qualitative.Plotly[0],
                hovertemplate="Age %{x}: %{y} images<extra></extra>",
            )
        )
    fig.update_layout(
        margin=dict(t=30, b=10), xaxis_title=LABELS["age"], yaxis_title="Images", bargap=0.05, showlegend=False
    )
    return fig


def gender_race_counts(frame: pd.DataFrame) -> go.Figure:
    """Grouped bars of image counts per race, one bar per gender."""
    counts = (
        frame.groupby(["race_name", "gender_name"], observed=False)
        .size()
        .reindex(pd.MultiIndex.from_product([RACES, GENDERS], names=["race_name", "gender_name"]), fill_value=0)
        .rename("count")
        .reset_index()
    )
    fig = px.bar(
        counts,
        x="race_name",
        y="count",
        color="gender_name",
        barmode="group",
        category_orders=ORDERS,
        labels=LABELS,
        text="count",
    )
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


def change_position(change: dict) -> float:
    """Where a live weight change falls on an epoch axis whose points are epoch ends (1 = end of the first epoch)."""
    steps = change.get("steps")
    fraction = (change.get("batch", 0) / steps) if isinstance(steps, (int, float)) and steps > 0 else 0.0
    return float(change.get("epoch", 0)) + min(max(fraction, 0.0), 1.0)


def _change_text(change: dict) -> str:
    moved = [
        f"{h} {change['old'].get(h, 0):.2f}→{v:.2f}"
        for h, v in (change.get("new") or {}).items()
        if abs(v - (change.get("old") or {}).get(h, v)) > 1e-9
    ]
    what = ", ".join(moved) if moved else ("auto on" if change.get("auto") else "auto off")
    return f"{what} ({change.get('source', 'manual')})"


def add_change_markers(fig: go.Figure, changes: list[dict] | None) -> go.Figure:
    """Mark each live weight change with a dotted vertical line (hover: what changed)."""
    for change in changes or []:
        x = change_position(change)
        fig.add_vline(x=x, line=dict(dash="dot", width=1, color="gray"))
    if changes:
        xs = [change_position(c) for c in changes]
        fig.add_scatter(
            x=xs,
            y=[0] * len(xs),
            yaxis="y2",
            mode="markers",
            name="weight change",
            marker=dict(symbol="triangle-up", size=10, color="gray"),
            hovertext=[_change_text(c) for c in changes],
            hoverinfo="text+x",
        )
        fig.update_layout(yaxis2=dict(overlaying="y", range=[0, 1], visible=False))
    return fig


def metric_curve(history: pd.DataFrame, metric: str, changes: list[dict] | None = None) -> go.Figure:
    """Train vs validation curve of one metric (``age_mae``, ``gender_accuracy``, ``race_accuracy``) by epoch.

    ``changes`` (weight_change events) are marked where they happened.
    """
    title = CURVES[metric][0] if metric in CURVES else metric
    fig = go.Figure()
    for column, name, dash in ((metric, "train", "dot"), (f"val_{metric}", "validation", "solid")):
        if column in history:
            fig.add_scatter(
                x=history["epoch"], y=history[column], name=name, mode="lines+markers", line=dict(dash=dash)
            )
    add_change_markers(fig, changes)
    fig.update_layout(
        title=title, xaxis_title="Epoch", margin=dict(t=40, b=10), height=300, legend=dict(orientation="h", y=-0.3)
    )
    return fig


def losses_curve(history: pd.DataFrame) -> go.Figure:
    """Per-head training losses and the weighted total by epoch."""
    fig = go.Figure()
    for column in ("age_loss", "gender_loss", "race_loss", "loss"):
        if column in history:
            fig.add_scatter(
                x=history["epoch"],
                y=history[column],
                name=column.replace("_loss", "") if column != "loss" else "weighted total",
                mode="lines+markers",
            )
    fig.update_layout(
        title="Losses (train)",
        xaxis_title="Epoch",
        yaxis_type="log",
        margin=dict(t=40, b=10),
        height=300,
        legend=dict(orientation="h", y=-0.3),
    )
    return fig


def weights_timeline(history: pd.DataFrame, changes: list[dict] | None = None) -> pd.DataFrame:
    """The weights in force over the run: epoch ends (history ``w_*``) and each live change, ordered by position."""
    rows = []
    for change in changes or []:
        x = change_position(change)
        rows.append({"x": x, **{h: (change.get("old") or {}).get(h) for h in HEADS}})
        rows.append({"x": x, **{h: (change.get("new") or {}).get(h) for h in HEADS}})
    if not history.empty and "epoch" in history:
        for _, row in history.iterrows():
            rows.append({"x": float(row["epoch"]), **{h: row.get(f"w_{h}") for h in HEADS}})
    frame = pd.DataFrame(rows, columns=["x", *HEADS])
    return frame.sort_values("x", kind="stable").reset_index(drop=True)


def _epoch_layout(fig: go.Figure, title: str, height: int) -> go.Figure:
    """The layout of a chart over epochs with its legend below (the runs' and weights' charts)."""
    fig.update_layout(
        title=title, xaxis_title="Epoch", margin=dict(t=40, b=10), height=height, legend=dict(orientation="h", y=-0.3)
    )
    return fig


def weights_curve(history: pd.DataFrame, changes: list[dict] | None = None) -> go.Figure:
    """The loss weights in force over the run (steps at live changes; learned ones move in auto mode)."""
    fig = go.Figure()
    timeline = weights_timeline(history, changes)
    for head in HEADS:
        if timeline[head].notna().any():
            fig.add_scatter(x=timeline["x"], y=timeline[head], name=head, mode="lines+markers", line_shape="hv")
    add_change_markers(fig, changes)
    return _epoch_layout(fig, "Loss weights", height=300)


def compare_curves(
    histories: dict[str, pd.DataFrame], metric: str, changes: dict[str, list[dict]] | None = None
) -> go.Figure:
    """One validation curve per run, for side-by-side comparison; live weight changes marked on each curve."""
    fig = go.Figure()
    for name, history in histories.items():
        column = f"val_{metric}"
        if column in history:
            fig.add_scatter(x=history["epoch"], y=history[column], name=name, mode="lines+markers")
            run_changes = (changes or {}).get(name) or []
            if run_changes and len(history) > 0:
                xs = [change_position(c) for c in run_changes]
                ys = np.interp(xs, history["epoch"].to_numpy(float), history[column].to_numpy(float))
                fig.add_scatter(
                    x=xs,
                    y=ys,
                    mode="markers",
                    name=f"{name}: weight change",
                    marker=dict(symbol="triangle-up", size=11),
                    hovertext=[_change_text(c) for c in run_changes],
                    hoverinfo="text+x",
                )
    return _epoch_layout(fig, f"Validation {CURVES.get(metric, (metric,))[0].lower()}", height=320)


def compare_weights(histories: dict[str, pd.DataFrame], changes: dict[str, list[dict]]) -> go.Figure:
    """The loss weights in force over each run (one line per run and head), steps at the live changes."""
    fig = go.Figure()
    for name, history in histories.items():
        timeline = weights_timeline(history, changes.get(name))
        for i, head in enumerate(HEADS):
            dash = _DASHES[i % len(_DASHES)]
            if timeline[head].notna().any():
                fig.add_scatter(
                    x=timeline["x"],
                    y=timeline[head],
                    name=f"{name} · {head}",
                    mode="lines+markers",
                    line=dict(dash=dash),
                    line_shape="hv",
                )
    return _epoch_layout(fig, "Loss weights over the runs", height=320)
