"""Evaluate: held-out metrics, error analysis, confusion cells, subgroups and a model card for a trained run."""

from functools import partial
from pathlib import Path

import streamlit as st

from pages.shared import (
    current_data,
    ensure_shell,
    job_progress,
    link_widgets,
    model_mtime,
    model_runs,
    no_runs_message,
    owner_token,
    pick_run,
    require_data,
    run_label,
)
from utkface_core import jobs as worker_jobs
from utkface_core.evaluation import evalcharts
from utkface_core.evaluation.evaluation import Evaluation, evaluate_run
from utkface_core.evaluation.modelcard import render_model_card
from utkface_core.workflow import evaluation_job, evaluation_job_key

ensure_shell()
st.title("Evaluate a trained model")

all_runs = model_runs()
if not all_runs:
    no_runs_message("Evaluation")
by_name = {r.name: r for r in all_runs}
DATA_CHOICES = {"test": "The run's own test split", "sidebar": "The data set chosen in the sidebar"}

c1, c2, c3 = st.columns([3, 3, 2])
run = pick_run(c1, "run", "Run", all_runs)
wanted = st.query_params.get("compare")
if wanted and wanted not in by_name:
    st.warning(
        f"The run **{wanted}** to compare with, named in the link, does not exist on this server: "
        "showing no comparison.",
        icon=":material/link_off:",
    )
if st.session_state.get("compare") not in (None, *by_name):
    st.session_state["compare"] = None  # a run deleted since it was picked
# Bound selectboxes put the option's label in the URL: no format_func, so the label is the run name.
compare_name = c2.selectbox(
    "Compare with (optional)",
    list(by_name),
    index=None,
    key="compare",
    bind="query-params",
    placeholder="No comparison",
)
if compare_name in by_name and compare_name != run.name:
    c2.caption(run_label(by_name[compare_name]))
data_choice = c3.radio(
    "Evaluate on", list(DATA_CHOICES), index=0, key="eval_data", bind="query-params", format_func=DATA_CHOICES.get
)
link_widgets("compare", eval_data=DATA_CHOICES.get)
other = by_name.get(compare_name) if compare_name and compare_name != run.name else None
if compare_name and compare_name == run.name:
    c2.caption("That is the run itself: pick another run to compare.")

data_dir = None
data_tag = "test"
if data_choice == "sidebar":
    source, index = current_data()
    if source is None or index is None or len(index.frame) == 0:
        st.warning("No usable data set is chosen in the sidebar: pick one there, or evaluate on the run's test split.")
        st.stop()
    source, index = require_data()  # the demo faces must be drawn: the evaluation reads the images
    data_dir = Path(source.path)
    data_tag = f"{data_dir}:{index.fingerprint()}"  # a rescan that changes the images gives a new evaluation
    trained_on = (run.config.get("data") or {}).get("fingerprint")
    if trained_on and trained_on == index.fingerprint():
        st.warning(
            "This is the data set the run was trained on: its training and validation images are included, so the "
            "numbers are optimistic. Use the run's test split for held-out numbers.",
            icon=":material/warning:",
        )
    st.caption(
        f"Evaluating on every image of **{source.label}** within the run's age range "
        f"({run.config.get('min_age')}–{run.config.get('max_age')})."
    )


def evaluation_job_of(target, restart: bool = False) -> worker_jobs.JobInfo:
    """The worker job evaluating ``target`` (one per run, model and data, shared by all visitors)."""
    return evaluation_job(
        target.path,
        model_mtime(target),
        data_dir=data_dir,
        data_tag=data_tag,
        owner=owner_token(),
        label=f"Evaluating {target.name}",
        restart=restart,
    )


@st.cache_resource(max_entries=8, show_spinner=False)
def load_evaluation(run_path: str, mtime: int, data: str | None, tag: str) -> Evaluation:
    """The evaluation a worker computed, read back from the run's evaluation cache (keyed by model mtime)."""
    return evaluate_run(Path(run_path), data_dir=Path(data) if data else None)


def evaluation_of(target):
    """The finished Evaluation of a run, or the worker job computing it (started here when there is none)."""
    job = evaluation_job_of(target)
    if job.state == "completed":
        return load_evaluation(str(target.path), model_mtime(target), str(data_dir) if data_dir else None, data_tag)
    return job


targets = [run] + ([other] if other is not None else [])
results = {t.name: evaluation_of(t) for t in targets}
pending = {name: r for name, r in results.items() if not isinstance(r, Evaluation)}
if pending:
    waiting = any(j.active for j in pending.values())

    @st.fragment(run_every=0.5 if waiting else None)
    def wait_panel() -> None:
        current = [worker_jobs.load_job(j.dir) or j for j in pending.values()]
        for job in current:
            job_progress(job)
            if job.state == "failed":
                if st.button("Try again", key=f"eval_retry_{job.id}", icon=":material/refresh:"):
                    target = next(t for t in targets if evaluation_job_key(t.path, model_mtime(t), data_tag) == job.key)
                    evaluation_job_of(target, restart=True)
                    st.rerun(scope="app")
        if waiting and not any(j.active for j in current):
            st.rerun(scope="app")

    wait_panel()
    st.stop()

ev = results[run.name]
ev_other = results[other.name] if other is not None else None
pairs = [(run, ev, "a")] + ([(other, ev_other, "b")] if other is not None else [])
if ev.cached:
    st.caption("Loaded from the run's evaluation cache (same model and images as before).")
if ev.excluded:
    with st.expander(f"{len(ev.excluded)} image(s) could not be decoded and were left out"):
        st.dataframe(ev.excluded, key="eval_excluded")
if (run.config.get("data") or {}).get("source") == "demo":
    st.caption("This run was trained on the **synthetic demo set**: these numbers only show that the pipeline works.")

# --- headline -------------------------------------------------------------------------------------
head = evalcharts.headline(ev)
base = evalcharts.headline(ev_other) if ev_other is not None else None
deltas = {}
if ev_other is not None:
    deltas = {
        "Images": None,
        "Age MAE": f"{ev.age_mae - ev_other.age_mae:+.2f} y",
        "Age RMSE": f"{ev.age_rmse - ev_other.age_rmse:+.2f} y",
        "Gender accuracy": f"{100 * (ev.gender_accuracy - ev_other.gender_accuracy):+.1f} pts",
        "Race accuracy": f"{100 * (ev.race_accuracy - ev_other.race_accuracy):+.1f} pts",
        "Gender AUC": None,
    }
cols = st.columns(len(head))
for col, (label, value) in zip(cols, head.items(), strict=False):
    col.metric(
        label,
        value,
        delta=deltas.get(label),
        delta_color="inverse" if label.startswith("Age") else "normal",
        help=f"{other.name}: {base[label]}" if base else None,
    )
if ev_other is not None:
    st.caption(f"Deltas compare **{run.name}** with **{other.name}** (age: lower is better).")

if ev_other is not None:
    st.subheader("Comparison")
    evals = {run.name: ev, other.name: ev_other}
    a, b = st.columns([3, 2])
    a.plotly_chart(evalcharts.compare_metrics(evals), key="eval_compare_metrics")
    b.plotly_chart(evalcharts.compare_mae_by_age_bin(evals), key="eval_compare_bins")
    st.dataframe(
        evalcharts.compare_frame(evals),
        key="eval_compare_table",
        hide_index=True,
        column_config={
            "age_mae": st.column_config.NumberColumn("Age MAE", format="%.2f"),
            "age_rmse": st.column_config.NumberColumn("Age RMSE", format="%.2f"),
            "gender_accuracy": st.column_config.NumberColumn("Gender acc", format="percent"),
            "race_accuracy": st.column_config.NumberColumn("Race acc", format="percent"),
            "gender_auc": st.column_config.NumberColumn("Gender AUC", format="%.3f"),
            "gender_ece": st.column_config.NumberColumn("Gender ECE", format="%.3f"),
            "race_ece": st.column_config.NumberColumn("Race ECE", format="%.3f"),
        },
    )


def side_by_side():
    """One column per evaluated run (two when comparing), each headed by its run name."""
    columns = st.columns(len(pairs))
    for column, (target, evaluation, prefix) in zip(columns, pairs, strict=False):
        if len(pairs) > 1:
            column.markdown(f"**{target.name}**")
        yield column, evaluation, prefix


def gallery(files, captions, empty: str) -> None:
    present = evalcharts.existing_files(list(files))
    shown = [(f, c) for f, c, ok in zip(files, captions, present, strict=False) if ok]
    if not shown:
        st.caption(empty if not len(files) else "The image files are no longer on disk.")
        return
    st.image([f for f, _ in shown], caption=[c for _, c in shown], width=110)
    if len(shown) < len(files):
        st.caption(f"{len(files) - len(shown)} image file(s) no longer on disk.")


# Bound to the URL, the tabs also track which one is open: only that tab's content is built.
tab_age, tab_class, tab_curves, tab_groups, tab_worst, tab_card = st.tabs(
    ["Age", "Gender & race", "ROC & calibration", "Subgroups", "Worst errors", "Model card"],
    default="Age",
    key="eval_tab",
    bind="query-params",
)
link_widgets("eval_tab")

if tab_age.open:
    with tab_age:
        for column, evaluation, p in side_by_side():
            with column:
                st.plotly_chart(evalcharts.age_scatter(evaluation), key=f"eval_{p}_scatter")
                st.plotly_chart(evalcharts.mae_by_age_bin(evaluation), key=f"eval_{p}_bins")
                if len(pairs) == 1:
                    a, b = st.columns(2)
                    a.plotly_chart(evalcharts.residual_histogram(evaluation), key=f"eval_{p}_residuals")
                    b.plotly_chart(evalcharts.residuals_vs_true(evaluation), key=f"eval_{p}_residuals_age")
                else:
                    st.plotly_chart(evalcharts.residual_histogram(evaluation), key=f"eval_{p}_residuals")
                    st.plotly_chart(evalcharts.residuals_vs_true(evaluation), key=f"eval_{p}_residuals_age")

CELL_KEYS = ("eval_cell_head", "eval_cell_true", "eval_cell_pred")
HEAD_CLASSES = evalcharts.CLASS_HEADS


def pick_cell(chart_key: str, head: str) -> None:
    """Chart selection callback: point the cell explorer at the clicked confusion cell."""
    cell = evalcharts.cell_from_selection(st.session_state[chart_key].selection)
    if cell is not None:
        st.session_state["eval_cell_head"] = head
        st.session_state["eval_cell_true"], st.session_state["eval_cell_pred"] = cell


if tab_class.open:
    with tab_class:
        normalized = st.toggle(
            "Row-normalised (share of each true class)", value=False, key="eval_cm_norm", bind="query-params"
        )
        for column, evaluation, p in side_by_side():
            with column:
                for head_name in evalcharts.CLASS_HEADS:
                    chart_key = f"eval_{p}_cm_{head_name}"
                    fig = evalcharts.confusion_heatmap(evaluation, head_name, normalized=normalized)
                    if p == "a":
                        st.plotly_chart(
                            fig,
                            key=chart_key,
                            on_select=partial(pick_cell, chart_key, head_name),
                            selection_mode="points",
                        )
                    else:
                        st.plotly_chart(fig, key=chart_key)
                    report = evalcharts.report_frame(
                        evaluation.report_gender if head_name == "gender" else evaluation.report_race
                    )
                    st.dataframe(
                        report,
                        key=f"eval_{p}_report_{head_name}",
                        hide_index=True,
                        column_config={
                            c: st.column_config.NumberColumn(format="%.3f") for c in ("precision", "recall", "f1")
                        },
                    )

        st.subheader("Images of a confusion cell")
        st.caption(f"Click a cell of a confusion matrix of **{run.name}** above, or pick it here.")
        k1, k2, k3 = st.columns(3)
        # Initial values come from session state (the clicked cell, or the largest confusion), or the link.
        if st.session_state.get("eval_cell_head") not in HEAD_CLASSES:
            st.session_state["eval_cell_head"] = "race"
        cell_head = k1.selectbox("Head", list(HEAD_CLASSES), key="eval_cell_head", bind="query-params")
        classes = HEAD_CLASSES[cell_head]
        if (
            st.session_state.get("eval_cell_true") not in classes
            or st.session_state.get("eval_cell_pred") not in classes
        ):
            st.session_state["eval_cell_true"], st.session_state["eval_cell_pred"] = evalcharts.top_confusion(
                ev, cell_head
            )
        true_name = k2.selectbox("True class", classes, key="eval_cell_true", bind="query-params")
        pred_name = k3.selectbox("Predicted class", classes, key="eval_cell_pred", bind="query-params")
        link_widgets("eval_cm_norm", *CELL_KEYS)
        cell = evalcharts.confusion_cell_frame(ev, cell_head, true_name, pred_name)
        st.markdown(
            f"**{len(cell):,}** image(s) with true {cell_head} **{true_name}** predicted as **{pred_name}**"
            + (" (the 36 most confident shown)." if len(cell) > 36 else ".")
        )
        top = cell.head(36)
        gallery(
            top["file"].tolist(),
            [f"age {r.true_age:.0f} · pred {r.pred_age:.0f} · {r.confidence:.0%}" for r in top.itertuples()],
            "No image in this cell.",
        )

if tab_curves.open:
    with tab_curves:
        for column, evaluation, p in side_by_side():
            with column:
                a, b = st.columns(2)
                a.plotly_chart(evalcharts.roc_figure(evaluation), key=f"eval_{p}_roc")
                b.plotly_chart(evalcharts.pr_figure(evaluation), key=f"eval_{p}_pr")
                a, b = st.columns(2)
                a.plotly_chart(evalcharts.reliability_figure(evaluation, "gender"), key=f"eval_{p}_rel_gender")
                b.plotly_chart(evalcharts.reliability_figure(evaluation, "race"), key=f"eval_{p}_rel_race")
        st.caption(
            "Reliability: bars below the diagonal mean the model is over-confident in that confidence range. "
            "ECE is the image-weighted mean gap between confidence and accuracy."
        )

if tab_groups.open:
    with tab_groups:
        for column, evaluation, p in side_by_side():
            with column:
                heat = st.columns(3 if len(pairs) == 1 else 1)
                for i, metric in enumerate(evalcharts.SUBGROUP_METRICS):
                    heat[i % len(heat)].plotly_chart(
                        evalcharts.subgroup_heatmap(evaluation, metric), key=f"eval_{p}_group_{metric}"
                    )
                st.dataframe(
                    evalcharts.subgroup_table(evaluation),
                    key=f"eval_{p}_subgroups",
                    hide_index=True,
                    column_config={
                        "age_mae": st.column_config.NumberColumn("Age MAE", format="%.2f"),
                        "gender_accuracy": st.column_config.ProgressColumn(
                            "Gender acc", min_value=0.0, max_value=1.0, format="percent"
                        ),
                        "race_accuracy": st.column_config.ProgressColumn(
                            "Race acc", min_value=0.0, max_value=1.0, format="percent"
                        ),
                        "enough": st.column_config.CheckboxColumn(f"n ≥ {evaluation.min_group_n}"),
                    },
                )
                st.markdown(f"**Best–worst gaps** (cells with at least {evaluation.min_group_n} images)")
                st.dataframe(
                    evalcharts.gap_table(evaluation),
                    key=f"eval_{p}_gaps",
                    hide_index=True,
                    column_config={"gap": st.column_config.NumberColumn("Gap", format="%.3f")},
                )
        st.caption(
            "Accuracy gaps are fractions (0.05 = 5 percentage points); the age gap is in years. "
            "Small cells give noisy numbers."
        )

if tab_worst.open:
    with tab_worst:
        for column, evaluation, _ in side_by_side():
            with column:
                for head_name, title in (
                    ("age", "Largest age errors"),
                    ("gender", "Most confident wrong genders"),
                    ("race", "Most confident wrong races"),
                ):
                    st.markdown(f"**{title}**")
                    table = evaluation.worst[head_name]
                    gallery(
                        table["file"].tolist(), evalcharts.worst_captions(table, head_name), "No error for this head."
                    )

if tab_card.open:
    with tab_card:
        card = render_model_card(run.path, evaluation=ev)
        st.download_button(
            "Download the model card (Markdown)",
            card,
            file_name=f"model-card-{run.name}.md",
            mime="text/markdown",
            key="eval_card",
            icon=":material/download:",
            on_click="ignore",
        )
        with st.container(border=True):
            st.markdown(card)
