"""Model card: a Markdown summary of a training run, its held-out metrics, subgroup gaps and limitations."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from utkface_core import runs
from utkface_core.evaluation.evaluation import Evaluation
from utkface_core.labels import SPLITS

# Config keys rendered in their own sections rather than in the generic hyper-parameter table.
_SECTION_KEYS = {
    "data",
    "loss_weights",
    "seed",
    "preset",
    "min_age",
    "max_age",
    "split_method",
    "split",
    "split_counts",
    "n_per_split",
}


class ModelCardError(ValueError):
    """Raised when the run or config given to the model card cannot be read."""


def _cell(value: Any) -> str:
    """Render a value for a Markdown table cell (pipes escaped, floats shortened)."""
    if value is None:
        return "-"
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        return f"{value:.4g}"
    if isinstance(value, (dict, list, tuple)):
        value = json.dumps(value, default=str)
    return str(value).replace("|", "\\|").replace("\n", " ")


def _pct(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{100 * float(value):.1f}%"


def _years(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{float(value):.2f} years"


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return lines


def _flatten(prefix: str, value: Any, out: dict[str, Any]) -> None:
    if isinstance(value, Mapping):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    else:
        out[prefix] = value


def _load_run(run_dir: Path) -> tuple[dict[str, Any], dict[str, int] | None, dict[str, Any] | None]:
    try:
        config = runs.read_config(run_dir)
    except runs.RunError as exc:
        raise ModelCardError(str(exc)) from None
    try:
        column = runs.read_split(run_dir, columns=("split",))["split"].astype(str)
        counts = {name: int((column == name).sum()) for name in SPLITS}
    except runs.RunError:
        counts = None  # a missing or damaged split file only costs the card its split counts
    return config, counts, runs.read_metrics(run_dir)


def _split_counts_from_config(config: Mapping[str, Any]) -> dict[str, int] | None:
    for holder in (config, config.get("data") if isinstance(config.get("data"), Mapping) else {}):
        for key in ("split_counts", "n_per_split"):
            value = holder.get(key)
            if isinstance(value, Mapping):
                return {str(k): int(v) for k, v in value.items()}
    return None


def _split_method(config: Mapping[str, Any]) -> str:
    if "split_method" in config:
        return str(config["split_method"])
    split = config.get("split")
    if isinstance(split, Mapping) and "method" in split:
        return str(split["method"])
    if isinstance(split, str):
        return split
    return "not recorded"


def _metrics_table(metrics: Mapping[str, Any], evaluation: Evaluation | None) -> list[str]:
    """Recorded metrics and the evaluation side by side: they may come from different image sets."""
    recorded = [
        ("Test images", metrics.get("n")),
        ("Age MAE", _years(metrics["age_mae"]) if "age_mae" in metrics else None),
        ("Age RMSE", _years(metrics["age_rmse"]) if "age_rmse" in metrics else None),
        ("Gender accuracy", _pct(metrics["gender_accuracy"]) if "gender_accuracy" in metrics else None),
        ("Race accuracy", _pct(metrics["race_accuracy"]) if "race_accuracy" in metrics else None),
    ]
    has_recorded = any(v is not None for _, v in recorded)
    if evaluation is None:
        if not has_recorded:
            return ["No held-out metrics recorded yet (the run may not have finished)."]
        return _table(["Metric", "Value"], [[k, v] for k, v in recorded if v is not None])
    evaluated = {
        "Test images": evaluation.n,
        "Age MAE": _years(evaluation.age_mae),
        "Age RMSE": _years(evaluation.age_rmse),
        "Gender accuracy": _pct(evaluation.gender_accuracy),
        "Race accuracy": _pct(evaluation.race_accuracy),
        "Gender ROC AUC (female positive)": evaluation.gender_roc.score,
        "Gender calibration error (ECE)": evaluation.ece.get("gender"),
        "Race calibration error (ECE)": evaluation.ece.get("race"),
        "Images excluded (undecodable)": len(evaluation.excluded),
    }
    if not has_recorded:
        return _table(["Metric", "Value"], [[k, v] for k, v in evaluated.items()])
    recorded_map = dict(recorded)
    return _table(
        ["Metric", "Recorded by training", "This evaluation"],
        [[k, recorded_map.get(k), v] for k, v in evaluated.items()],
    )


def render_model_card(
    run_dir_or_config: Path | str | Mapping[str, Any],
    metrics: Mapping[str, Any] | None = None,
    evaluation: Evaluation | None = None,
    *,
    split_counts: Mapping[str, int] | None = None,
    title: str | None = None,
) -> str:
    """Render a Markdown model card.

    ``run_dir_or_config`` is a run folder (config.json, split.csv and metrics.json are read from it) or the run's
    config dict. ``metrics`` (held-out test metrics: age_mae, gender_accuracy, race_accuracy, n) overrides the
    run's metrics.json; ``evaluation`` adds the subgroup table, gaps and calibration.
    """
    file_metrics: dict[str, Any] | None = None
    counts: dict[str, int] | None = None
    if isinstance(run_dir_or_config, (str, Path)):
        run_dir = Path(run_dir_or_config)
        config, counts, file_metrics = _load_run(run_dir)
        name = title or run_dir.name
    elif isinstance(run_dir_or_config, Mapping):
        config = dict(run_dir_or_config)
        name = title or str(config.get("name") or config.get("run_id") or "UTKFace multi-task CNN")
    else:
        raise ModelCardError(
            f"run_dir_or_config must be a run folder path or a config dict, got {type(run_dir_or_config).__name__}"
        )
    if metrics is not None and not isinstance(metrics, Mapping):
        raise ModelCardError(f"metrics must be a dict of held-out metrics, got {type(metrics).__name__}")
    if evaluation is not None and not isinstance(evaluation, Evaluation):
        raise ModelCardError(f"evaluation must be an Evaluation or None, got {type(evaluation).__name__}")
    metrics = dict(metrics) if metrics is not None else dict(file_metrics or {})
    counts = dict(split_counts) if split_counts is not None else counts or _split_counts_from_config(config)

    data = config.get("data") if isinstance(config.get("data"), Mapping) else {}
    source = str(data.get("source", "not recorded"))
    is_demo = source == "demo"
    min_age, max_age = config.get("min_age"), config.get("max_age")

    lines: list[str] = [f"# Model card: {name}", ""]
    lines += [
        "A multi-task convolutional network that predicts apparent age (regression, years), gender (2 classes) and "
        "race (5 classes) from a cropped, aligned face image, trained on UTKFace.",
        "",
    ]
    if is_demo:
        lines += [
            "> **Warning: this model was trained on the synthetic demo data set.** Its numbers only show that the "
            "pipeline works; its predictions on real faces are meaningless.",
            "",
        ]

    lines += ["## Data", ""]
    lines += _table(
        ["Item", "Value"],
        [
            ["Source", "synthetic demo images" if is_demo else source],
            ["Fingerprint", data.get("fingerprint", "not recorded")],
            ["Age range", f"{min_age}-{max_age}" if min_age is not None and max_age is not None else "not recorded"],
            ["Image size", f"{config['image_size']} x {config['image_size']} RGB" if "image_size" in config else None],
        ],
    )
    lines.append("")
    if counts:
        total = sum(counts.values())
        lines += _table(["Split", "Images"], [[k, v] for k, v in counts.items()] + [["total", total]])
    else:
        lines.append("Images per split: not recorded.")
    lines.append("")

    lines += ["## Training", ""]
    lines += _table(
        ["Item", "Value"],
        [
            ["Split method", _split_method(config)],
            ["Seed", config.get("seed", "not recorded")],
            ["Preset", config.get("preset", "not recorded")],
        ],
    )
    lines.append("")
    loss_weights = config.get("loss_weights")
    if isinstance(loss_weights, Mapping) and loss_weights:
        lines += ["Loss weights:", ""]
        lines += _table(["Head", "Weight"], [[k, v] for k, v in loss_weights.items()])
    else:
        lines.append(f"Loss weights: {_cell(loss_weights) if loss_weights is not None else 'not recorded'}")
    lines.append("")
    hyper: dict[str, Any] = {}
    for key, value in config.items():
        if key not in _SECTION_KEYS and key != "image_size":
            _flatten(str(key), value, hyper)
    if hyper:
        lines += ["Hyper-parameters:", ""]
        lines += _table(["Parameter", "Value"], [[k, v] for k, v in sorted(hyper.items())])
        lines.append("")

    lines += ["## Held-out test metrics", ""]
    lines += _metrics_table(metrics, evaluation)
    lines.append("")

    lines += ["## Subgroup performance", ""]
    if evaluation is None:
        lines.append("No subgroup evaluation available: evaluate the run on its test split to fill this section.")
    else:
        rows = [
            [
                r["race"],
                r["gender"],
                int(r["n"]),
                _years(r["age_mae"]),
                _pct(r["gender_accuracy"]),
                _pct(r["race_accuracy"]),
            ]
            for r in evaluation.subgroups.to_dict(orient="records")
        ]
        lines += _table(["Race", "Gender", "n", "Age MAE", "Gender accuracy", "Race accuracy"], rows)
        lines += [
            "",
            f"Gaps between the best and the worst cell, over cells with at least {evaluation.min_group_n} test images:",
            "",
        ]
        gap_rows = []
        for metric, label, fmt in (
            ("age_mae", "Age MAE", _years),
            ("gender_accuracy", "Gender accuracy", _pct),
            ("race_accuracy", "Race accuracy", _pct),
        ):
            gap = evaluation.gaps.get(metric)
            cells = evaluation.gap_cells.get(metric) or {}
            if gap is None:
                gap_rows.append([label, "too few cells with enough images", "-", "-"])
            elif gap == 0:
                gap_rows.append(
                    [
                        label,
                        fmt(0.0).replace("%", " percentage points") if fmt is _pct else fmt(0.0),
                        "all equal",
                        "all equal",
                    ]
                )
            else:
                gap_rows.append(
                    [
                        label,
                        fmt(gap).replace("%", " percentage points") if fmt is _pct else fmt(gap),
                        cells.get("best"),
                        cells.get("worst"),
                    ]
                )
        lines += _table(["Metric", "Gap", "Best cell", "Worst cell"], gap_rows)
        lines += ["", "Small cells give noisy estimates; treat gaps between cells of a few dozen images with caution."]
    lines.append("")

    lines += [
        "## Intended use",
        "",
        "- Education: learning how a multi-output CNN is trained, evaluated and inspected.",
        "- Studying multi-task learning (shared features, loss weighting) and how errors and biases are distributed "
        "across demographic groups.",
        "",
        "Out of scope: identifying people, verifying identity or age, and any decision about a person "
        "(hiring, access, pricing, policing, age gating, medical or legal use).",
        "",
        "## Limitations",
        "",
        "- UTKFace labels are apparent or annotated values, not verified ground truth: ages, genders and races "
        "were assigned from images and contain errors.",
        "- Gender is modelled as a binary label and race as five coarse categories; these categories are socially "
        'constructed, do not describe how people identify, and "Others" lumps together many groups.',
        f"- The model was trained on ages {min_age}-{max_age} only; predictions outside that range are extrapolations."
        if min_age is not None and max_age is not None
        else "- The training age range was not recorded; predictions outside it are extrapolations.",
        "- The data set is imbalanced across age, gender and race, so accuracy differs between groups (see the "
        "subgroup table); the held-out metrics come from the same source and overstate performance on other "
        "cameras, lighting, poses and populations.",
        "- The model expects a single cropped, roughly aligned face; other inputs give arbitrary outputs.",
        "- Models trained on the synthetic demo data are meaningless for real faces.",
        "",
        "## Ethical considerations",
        "",
        "- Inferring gender or race from a face is contested and can harm people when it is wrong or when it is "
        "used to treat groups differently; never use these outputs to make decisions about anyone.",
        "- Faces are personal data. Only use images you have the right to use, and do not store uploaded images "
        "longer than needed.",
        "- Report subgroup gaps alongside overall metrics: an acceptable average can hide a poor worst-case group.",
        "",
    ]
    return "\n".join(lines)
