"""Plotly figures and tables of an :class:`~utkface_core.evaluation.evaluation.Evaluation` (UI-free)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from utkface_core.evaluation.evaluation import Evaluation
from utkface_core.labels import GENDERS, RACES

CLASS_HEADS: dict[str, tuple[str, ...]] = {"gender": GENDERS, "race": RACES}
# Above this many points the scatter plots draw a seeded sample: the browser stays responsive and the
# cloud's shape is unchanged.
MAX_SCATTER_POINTS = 4000
MARGIN = dict(t=50, b=10, l=10, r=10)
IDENTITY_COLOUR = "#888888"


class EvalChartError(ValueError):
    """A chart was asked for something the evaluation does not hold (unknown head, class or metric)."""


def _check_evaluation(ev: Any) -> Evaluation:
    if not isinstance(ev, Evaluation):
        raise EvalChartError(f"expected an Evaluation from evaluate_run/evaluate_arrays, got {type(ev).__name__}")
    return ev


def _check_head(head: str) -> tuple[str, ...]:
    if head not in CLASS_HEADS:
        raise EvalChartError(f"head must be one of {list(CLASS_HEADS)}, got {head!r}")
    return CLASS_HEADS[head]


def _sample(n: int) -> np.ndarray:
    limit = MAX_SCATTER_POINTS
    if n <= limit:
        return np.arange(n)
    return np.sort(np.random.default_rng(0).choice(n, size=limit, replace=False))


def _file_names(ev: Evaluation, rows: np.ndarray) -> list[str]:
    if ev.files is None:
        return [f"image {i}" for i in rows]
    return [Path(str(ev.files[i])).name for i in rows]


def _layout(fig: go.Figure, title: str, **kwargs: Any) -> go.Figure:
    fig.update_layout(title=title, margin=MARGIN, **kwargs)
    return fig


# --- age ----------------------------------------------------------------------------------------


def age_scatter(ev: Evaluation) -> go.Figure:
    """Predicted against true age, coloured by absolute error, with the identity line (perfect prediction)."""
    ev = _check_evaluation(ev)
    rows = _sample(ev.n)
    true, pred = ev.true_age[rows], ev.predictions.age[rows]
    fig = go.Figure(
        go.Scattergl(
            x=true,
            y=pred,
            mode="markers",
            name="images",
            marker=dict(
                size=5, color=np.abs(pred - true), colorscale="Viridis", opacity=0.6, colorbar=dict(title="|error|")
            ),
            text=_file_names(ev, rows),
            hovertemplate="%{text}<br>true %{x:.0f} · predicted %{y:.1f}<extra></extra>",
        )
    )
    low = float(min(ev.true_age.min(), ev.predictions.age.min()))
    high = float(max(ev.true_age.max(), ev.predictions.age.max()))
    fig.add_trace(
        go.Scatter(
            x=[low, high],
            y=[low, high],
            mode="lines",
            name="predicted = true",
            line=dict(color=IDENTITY_COLOUR, dash="dash"),
        )
    )
    sampled = f" ({len(rows):,} of {ev.n:,} shown)" if len(rows) < ev.n else ""
    return _layout(
        fig,
        f"Predicted vs true age · MAE {ev.age_mae:.2f} years{sampled}",
        xaxis_title="True age (years)",
        yaxis_title="Predicted age (years)",
        showlegend=False,
    )


def residual_histogram(ev: Evaluation) -> go.Figure:
    """Histogram of residuals (predicted - true age) with lines at zero and at the mean residual (the bias)."""
    ev = _check_evaluation(ev)
    bias = float(np.mean(ev.residuals))
    fig = go.Figure(
        go.Histogram(
            x=ev.residuals,
            nbinsx=min(60, max(10, ev.n // 5)),
            name="images",
            hovertemplate="residual %{x}<br>%{y} images<extra></extra>",
        )
    )
    fig.add_vline(x=0, line=dict(color=IDENTITY_COLOUR, dash="dash"))
    fig.add_vline(x=bias, line=dict(color="#d62728"), annotation_text=f"mean {bias:+.2f}")
    return _layout(
        fig,
        "Residuals (predicted − true age)",
        xaxis_title="Residual (years)",
        yaxis_title="Images",
        bargap=0.05,
        showlegend=False,
    )


def residuals_vs_true(ev: Evaluation, bin_width: int = 5) -> go.Figure:
    """Residual against true age, with the mean residual per ``bin_width``-year bin (over/under-estimation by age)."""
    ev = _check_evaluation(ev)
    if bin_width < 1:
        raise EvalChartError(f"bin_width must be a positive number of years, got {bin_width}")
    rows = _sample(ev.n)
    fig = go.Figure(
        go.Scattergl(
            x=ev.true_age[rows],
            y=ev.residuals[rows],
            mode="markers",
            name="images",
            marker=dict(size=4, opacity=0.4),
            text=_file_names(ev, rows),
            hovertemplate="%{text}<br>true %{x:.0f} · residual %{y:+.1f}<extra></extra>",
        )
    )
    bins = (ev.true_age // bin_width) * bin_width
    means = pd.Series(ev.residuals).groupby(bins).mean()
    fig.add_trace(
        go.Scatter(
            x=means.index + bin_width / 2,
            y=means.to_numpy(),
            mode="lines+markers",
            name=f"mean per {bin_width} years",
            line=dict(color="#d62728", width=3),
        )
    )
    fig.add_hline(y=0, line=dict(color=IDENTITY_COLOUR, dash="dash"))
    return _layout(
        fig,
        "Residual by true age (above 0: predicted too old)",
        xaxis_title="True age (years)",
        yaxis_title="Residual (years)",
        legend=dict(orientation="h", y=-0.2),
    )


def mae_by_age_bin(ev: Evaluation) -> go.Figure:
    """Bars of the age MAE per age bin, each labelled with its number of images."""
    ev = _check_evaluation(ev)
    table = ev.mae_by_age_bin
    fig = go.Figure(
        go.Bar(
            x=table["bin"].astype(str),
            y=table["mae"],
            text=[f"n={int(n)}" for n in table["n"]],
            textposition="outside",
            hovertemplate="ages %{x}<br>MAE %{y:.2f} years<br>%{text}<extra></extra>",
            marker_color="#4c78a8",
        )
    )
    fig.add_hline(
        y=ev.age_mae,
        line=dict(color=IDENTITY_COLOUR, dash="dash"),
        annotation_text=f"overall {ev.age_mae:.2f}",
        annotation_position="top left",
    )
    fig.update_yaxes(range=[0, float(table["mae"].max()) * 1.15 if len(table) else 1])
    return _layout(fig, "Age MAE by true age", xaxis_title="True age (years)", yaxis_title="MAE (years)")


# --- classification ------------------------------------------------------------------------------


def confusion_heatmap(ev: Evaluation, head: str, normalized: bool = False) -> go.Figure:
    """Confusion matrix heat map of a head (rows true, columns predicted), annotated with counts or row shares.

    An invisible marker sits on every cell carrying ``customdata`` [true, predicted], so
    ``st.plotly_chart(on_select="rerun", selection_mode="points")`` returns the clicked cell
    (see :func:`cell_from_selection`).
    """
    ev = _check_evaluation(ev)
    names = list(_check_head(head))
    counts = (ev.confusion_gender if head == "gender" else ev.confusion_race).reindex(index=names, columns=names)
    shares = (ev.confusion_gender_normalized if head == "gender" else ev.confusion_race_normalized).reindex(
        index=names, columns=names
    )
    z = shares.to_numpy(dtype=float) if normalized else counts.to_numpy(dtype=float)
    text = [[f"{v:.0%}" for v in row] for row in z] if normalized else [[f"{int(v)}" for v in row] for row in z]
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=names,
            y=names,
            text=text,
            texttemplate="%{text}",
            colorscale="Blues",
            hoverinfo="skip",
            zmin=0,
            zmax=1 if normalized else None,
            colorbar=dict(title="share" if normalized else "images"),
        )
    )
    xs = [p for _ in names for p in names]
    ys = [t for t in names for _ in names]
    hover = [
        f"true {t} · predicted {p}<br>{int(counts.loc[t, p])} images ({shares.loc[t, p]:.0%} of {t})"
        for t in names
        for p in names
    ]
    fig.add_trace(
        go.Scatter(
            x=xs,
            y=ys,
            mode="markers",
            customdata=[[t, p] for t, p in zip(ys, xs, strict=False)],
            hovertext=hover,
            hovertemplate="%{hovertext}<extra>click to see the images</extra>",
            marker=dict(symbol="square", size=max(30, 240 // len(names)), opacity=0),
            showlegend=False,
        )
    )
    kind = "row-normalised" if normalized else "counts"
    fig.update_yaxes(autorange="reversed", title="True")
    fig.update_xaxes(title="Predicted", side="bottom")
    return _layout(fig, f"{head.capitalize()} confusion ({kind})", clickmode="event+select")


def cell_from_selection(selection: Any) -> tuple[str, str] | None:
    """Return (true, predicted) of the confusion cell in a Plotly selection (``event.selection``), or None."""
    if selection is None:
        return None
    points = selection.get("points") if isinstance(selection, Mapping) else getattr(selection, "points", None)
    for point in points or []:
        data = point.get("customdata") if isinstance(point, Mapping) else None
        if isinstance(data, (list, tuple)) and len(data) == 2 and all(isinstance(v, str) for v in data):
            return data[0], data[1]
        if isinstance(point, Mapping) and isinstance(point.get("x"), str) and isinstance(point.get("y"), str):
            return point["y"], point["x"]
    return None


def confusion_cell_frame(ev: Evaluation, head: str, true_name: str, pred_name: str) -> pd.DataFrame:
    """The images of one confusion cell (true class ``true_name``, predicted ``pred_name``), most confident first.

    Columns: ``index``, ``file``, ``true_age``, ``pred_age``, ``true``, ``pred``, ``confidence``.
    """
    ev = _check_evaluation(ev)
    names = _check_head(head)
    for what, name in (("true_name", true_name), ("pred_name", pred_name)):
        if name not in names:
            raise EvalChartError(f"{what} must be one of {list(names)} for the {head} head, got {name!r}")
    true = ev.true_gender if head == "gender" else ev.true_race
    probs = ev.predictions.gender_probs if head == "gender" else ev.predictions.race_probs
    pred = probs.argmax(axis=1)
    rows = np.flatnonzero((true == names.index(true_name)) & (pred == names.index(pred_name)))
    conf = probs.max(axis=1)
    rows = rows[np.argsort(-conf[rows], kind="stable")]
    return pd.DataFrame(
        {
            "index": rows.astype(int),
            "file": [ev.files[i] if ev.files is not None else None for i in rows],
            "true_age": ev.true_age[rows],
            "pred_age": ev.predictions.age[rows],
            "true": true_name,
            "pred": pred_name,
            "confidence": conf[rows],
        },
        columns=["index", "file", "true_age", "pred_age", "true", "pred", "confidence"],
    )


def top_confusion(ev: Evaluation, head: str) -> tuple[str, str]:
    """The most frequent wrong (true, predicted) cell of a head, or its largest diagonal cell when none is wrong."""
    ev = _check_evaluation(ev)
    names = list(_check_head(head))
    counts = (ev.confusion_gender if head == "gender" else ev.confusion_race).reindex(index=names, columns=names)
    z = counts.to_numpy(dtype=float)
    off = z.copy()
    np.fill_diagonal(off, -1)
    i, j = np.unravel_index(int(np.argmax(off)), off.shape)
    if off[i, j] <= 0:
        i = j = int(np.argmax(np.diag(z)))
    return names[i], names[j]


def report_frame(report: Mapping[str, Any]) -> pd.DataFrame:
    """A scikit-learn classification report dict as a table: one row per class and per average.

    The overall accuracy (a single number) is left out: it is a headline metric of its own.
    """
    if not isinstance(report, Mapping):
        raise EvalChartError(
            f"report must be the dict of Evaluation.report_gender/report_race, got {type(report).__name__}"
        )
    rows = []
    for name, values in report.items():
        if isinstance(values, Mapping):
            rows.append(
                {
                    "class": name,
                    "precision": values.get("precision"),
                    "recall": values.get("recall"),
                    "f1": values.get("f1-score"),
                    "support": int(values.get("support") or 0),
                }
            )
    return pd.DataFrame(rows, columns=["class", "precision", "recall", "f1", "support"])


def _no_curve(fig: go.Figure, why: str) -> go.Figure:
    fig.add_annotation(text=why, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper")
    return fig


def roc_figure(ev: Evaluation) -> go.Figure:
    """ROC curve of the gender head (female = positive) with the chance diagonal and the AUC."""
    ev = _check_evaluation(ev)
    curve = ev.gender_roc
    reference = go.Scatter(
        x=[0, 1], y=[0, 1], mode="lines", name="chance", line=dict(color=IDENTITY_COLOUR, dash="dash")
    )
    title = "Gender ROC" if curve.score is None else f"Gender ROC · AUC {curve.score:.3f}"
    return _curve_figure(
        curve,
        reference,
        title,
        empty="Only one gender in this set: no ROC curve",
        hover="FPR %{x:.2f} · TPR %{y:.2f}<extra></extra>",
        axes=("False positive rate (male called female)", "True positive rate (female)"),
    )


def pr_figure(ev: Evaluation) -> go.Figure:
    """Precision-recall curve of the gender head (female = positive) with the base rate and average precision."""
    ev = _check_evaluation(ev)
    curve = ev.gender_pr
    base = float(np.mean(ev.true_gender == GENDERS.index("female"))) if ev.n else 0.0
    reference = go.Scatter(
        x=[0, 1], y=[base, base], mode="lines", name="base rate", line=dict(color=IDENTITY_COLOUR, dash="dash")
    )
    title = "Gender precision-recall" if curve.score is None else f"Gender PR · AP {curve.score:.3f}"
    return _curve_figure(
        curve,
        reference,
        title,
        empty="Only one gender in this set: no PR curve",
        hover="recall %{x:.2f} · precision %{y:.2f}<extra></extra>",
        axes=("Recall", "Precision"),
    )


def _curve_figure(curve, reference: go.Scatter, title: str, *, empty: str, hover: str, axes: tuple[str, str]):
    """A gender-head curve (ROC or PR) over its reference line, or the reference and ``empty`` without a curve."""
    fig = go.Figure()
    fig.add_trace(reference)
    if curve.score is None:
        _no_curve(fig, empty)
    else:
        fig.add_trace(
            go.Scatter(x=curve.x, y=curve.y, mode="lines", name="model", line=dict(width=3), hovertemplate=hover)
        )
    fig.update_xaxes(range=[0, 1], title=axes[0])
    fig.update_yaxes(range=[0, 1.02], title=axes[1])
    return _layout(fig, title, showlegend=False)


def reliability_figure(ev: Evaluation, head: str) -> go.Figure:
    """Reliability diagram: accuracy per confidence bin (bars, width = bin) against the diagonal, plus the ECE."""
    ev = _check_evaluation(ev)
    _check_head(head)
    rel = ev.reliability[head]
    table = rel.table
    filled = table[table["n"] > 0]
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.75, 0.25], vertical_spacing=0.06)
    fig.add_trace(
        go.Bar(
            x=(filled["bin_lower"] + filled["bin_upper"]) / 2,
            y=filled["accuracy"],
            width=(filled["bin_upper"] - filled["bin_lower"]) * 0.95,
            name="accuracy",
            marker_color="#4c78a8",
            customdata=np.stack([filled["confidence"], filled["n"]], axis=1) if len(filled) else None,
            hovertemplate=(
                "mean confidence %{customdata[0]:.2f}<br>accuracy %{y:.2f}<br>%{customdata[1]} images<extra></extra>"
            ),
        ),
        row=1,
        col=1,
    )
    fig.add_trace(
        go.Scatter(
            x=[0, 1], y=[0, 1], mode="lines", name="perfect calibration", line=dict(color=IDENTITY_COLOUR, dash="dash")
        ),
        row=1,
        col=1,
    )
    fig.add_trace(
        go.Bar(
            x=(table["bin_lower"] + table["bin_upper"]) / 2,
            y=table["n"],
            width=(table["bin_upper"] - table["bin_lower"]) * 0.95,
            name="images",
            marker_color="#9ecae1",
            hovertemplate="%{y} images<extra></extra>",
        ),
        row=2,
        col=1,
    )
    fig.update_yaxes(range=[0, 1.02], title="Accuracy", row=1, col=1)
    fig.update_yaxes(title="Images", row=2, col=1)
    fig.update_xaxes(range=[0, 1], title="Confidence (top probability)", row=2, col=1)
    ece = rel.ece
    ece_text = f"ECE {ece:.3f}" if ece is not None and math.isfinite(ece) else "ECE -"
    return _layout(fig, f"{head.capitalize()} reliability · {ece_text}", showlegend=False)


# --- subgroups -----------------------------------------------------------------------------------

SUBGROUP_METRICS: dict[str, str] = {
    "age_mae": "Age MAE (years)",
    "gender_accuracy": "Gender accuracy",
    "race_accuracy": "Race accuracy",
}


def subgroup_table(ev: Evaluation) -> pd.DataFrame:
    """The subgroup table (race x gender) with an ``enough`` column: True where n >= the gap threshold."""
    ev = _check_evaluation(ev)
    frame = ev.subgroups.copy()
    frame["enough"] = frame["n"] >= ev.min_group_n
    return frame


def gap_table(ev: Evaluation) -> pd.DataFrame:
    """Best-worst gaps per metric: columns metric, gap, best, worst (None where too few cells had enough images)."""
    ev = _check_evaluation(ev)
    rows = []
    for metric, label in SUBGROUP_METRICS.items():
        cells = ev.gap_cells.get(metric) or {}
        rows.append(
            {"metric": label, "gap": ev.gaps.get(metric), "best": cells.get("best"), "worst": cells.get("worst")}
        )
    return pd.DataFrame(rows, columns=["metric", "gap", "best", "worst"])


def subgroup_heatmap(ev: Evaluation, metric: str) -> go.Figure:
    """A race x gender grid of one subgroup metric, annotated with the value and the cell's image count."""
    ev = _check_evaluation(ev)
    if metric not in SUBGROUP_METRICS:
        raise EvalChartError(f"metric must be one of {list(SUBGROUP_METRICS)}, got {metric!r}")
    table = ev.subgroups.set_index(["race", "gender"])
    z, text = [], []
    for race in RACES:
        z_row, t_row = [], []
        for gender in GENDERS:
            value = table[metric].get((race, gender), np.nan) if len(table) else np.nan
            n = int(table["n"].get((race, gender), 0)) if len(table) else 0
            value = float(value) if value is not None else np.nan
            z_row.append(value)
            shown = "-" if not math.isfinite(value) else (f"{value:.1f}" if metric == "age_mae" else f"{value:.0%}")
            t_row.append(f"{shown}<br>n={n}")
        z.append(z_row)
        text.append(t_row)
    # Lower is better for MAE: reverse the palette so "good" is always the same colour.
    scale = "RdYlGn_r" if metric == "age_mae" else "RdYlGn"
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=list(GENDERS),
            y=list(RACES),
            text=text,
            texttemplate="%{text}",
            colorscale=scale,
            hovertemplate="%{y} %{x}<br>%{text}<extra></extra>",
            colorbar=dict(title=""),
        )
    )
    fig.update_yaxes(autorange="reversed")
    return _layout(fig, SUBGROUP_METRICS[metric])


# --- comparison ----------------------------------------------------------------------------------

COMPARE_METRICS: dict[str, str] = {
    "age_mae": "Age MAE (years, lower is better)",
    "gender_accuracy": "Gender accuracy",
    "race_accuracy": "Race accuracy",
}


def compare_frame(evals: Mapping[str, Evaluation]) -> pd.DataFrame:
    """One row per run: n, age MAE and RMSE, accuracies, gender AUC and ECEs (for a side-by-side table)."""
    if not evals:
        raise EvalChartError("give at least one run's Evaluation to compare")
    rows = []
    for name, ev in evals.items():
        ev = _check_evaluation(ev)
        rows.append(
            {
                "run": name,
                "n": ev.n,
                "age_mae": ev.age_mae,
                "age_rmse": ev.age_rmse,
                "gender_accuracy": ev.gender_accuracy,
                "race_accuracy": ev.race_accuracy,
                "gender_auc": ev.gender_roc.score,
                "gender_ece": ev.ece.get("gender"),
                "race_ece": ev.ece.get("race"),
            }
        )
    return pd.DataFrame(rows)


def compare_metrics(evals: Mapping[str, Evaluation]) -> go.Figure:
    """Grouped bars of the main metrics (age MAE, gender and race accuracy), one colour per run."""
    frame = compare_frame(evals)
    fig = make_subplots(rows=1, cols=len(COMPARE_METRICS), subplot_titles=list(COMPARE_METRICS.values()))
    palette = ("#4c78a8", "#f58518", "#54a24b", "#e45756")
    for i, row in frame.iterrows():
        for j, metric in enumerate(COMPARE_METRICS, start=1):
            value = row[metric]
            label = f"{value:.2f}" if metric == "age_mae" else f"{value:.1%}"
            fig.add_trace(
                go.Bar(
                    x=[metric.split("_")[0]],
                    y=[value],
                    name=row["run"],
                    text=[label],
                    textposition="outside",
                    marker_color=palette[i % len(palette)],
                    legendgroup=row["run"],
                    showlegend=j == 1,
                    hovertemplate=f"{row['run']}<br>{COMPARE_METRICS[metric]}: {label}<extra></extra>",
                ),
                row=1,
                col=j,
            )
    for j, metric in enumerate(COMPARE_METRICS, start=1):
        if metric != "age_mae":
            fig.update_yaxes(range=[0, 1.1], tickformat=".0%", row=1, col=j)
    fig.update_xaxes(showticklabels=False)
    fig.update_layout(barmode="group", margin=dict(t=60, b=10, l=10, r=10), legend=dict(orientation="h", y=-0.1))
    return fig


def compare_mae_by_age_bin(evals: Mapping[str, Evaluation]) -> go.Figure:
    """Grouped bars of the age MAE per age bin, one colour per run."""
    if not evals:
        raise EvalChartError("give at least one run's Evaluation to compare")
    fig = go.Figure()
    for name, ev in evals.items():
        table = _check_evaluation(ev).mae_by_age_bin
        fig.add_trace(
            go.Bar(
                x=table["bin"].astype(str),
                y=table["mae"],
                name=name,
                customdata=table["n"],
                hovertemplate="ages %{x}<br>MAE %{y:.2f}<br>n=%{customdata}<extra>" + name + "</extra>",
            )
        )
    return _layout(
        fig,
        "Age MAE by true age",
        barmode="group",
        xaxis_title="True age (years)",
        yaxis_title="MAE (years)",
        legend=dict(orientation="h", y=-0.2),
    )


def headline(ev: Evaluation) -> dict[str, str]:
    """The headline metrics as display strings: images, age MAE, age RMSE, gender and race accuracy, gender AUC."""
    ev = _check_evaluation(ev)
    auc = ev.gender_roc.score
    return {
        "Images": f"{ev.n:,}",
        "Age MAE": f"{ev.age_mae:.2f} y",
        "Age RMSE": f"{ev.age_rmse:.2f} y",
        "Gender accuracy": f"{ev.gender_accuracy:.1%}",
        "Race accuracy": f"{ev.race_accuracy:.1%}",
        "Gender AUC": "-" if auc is None else f"{auc:.3f}",
    }


def worst_captions(table: pd.DataFrame, head: str) -> list[str]:
    """Captions for a worst-error gallery (``Evaluation.worst[head]``): true and predicted labels per image."""
    if head == "age":
        return [f"true {r.true_age:.0f} · pred {r.pred_age:.1f} (±{r.abs_error:.1f})" for r in table.itertuples()]
    _check_head(head)
    return [f"true {r.true} · pred {r.pred} ({r.confidence:.0%})" for r in table.itertuples()]


def existing_files(files: Sequence[Any]) -> list[bool]:
    """Which of ``files`` exist on disk (a gallery skips images deleted since the evaluation)."""
    return [bool(f) and isinstance(f, str) and Path(f).is_file() for f in files]
