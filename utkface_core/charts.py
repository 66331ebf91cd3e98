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
