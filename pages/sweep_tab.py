"""Sweep tab of the Train page: start a loss-weight sweep in a worker, watch it, and read its Pareto set.

The sweep engine is ``utkface_core.sweep``; this module only holds widgets and calls into it. The Train page
shows ``render_sweep_tab()`` in its Sweep tab. A sweep obeys the rules of a training: it records its owner, the
server's limits apply (``sweep.clamp_sweep_spec``) and only its owner or an unlocked operator may stop it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import pandas as pd
import streamlit as st

from pages.shared import current_data, is_admin, job_progress, link_widgets, owner_token
from utkface_core import jobs, sweep
from utkface_core.config import PRESET_IMAGE_SIZE
from utkface_core.evaluation import sweepcharts
from utkface_core.labels import MAX_AGE

MAX_TRIALS = 30
STRATEGY_HELP = (
    "grid: trials spread evenly over all (age, gender, race) weight mixes. optuna: a multi-objective search that "
    "proposes the next mix from the results so far. auto: one run that learns its weights."
)


def _spec_from_widgets(data: str) -> sweep.SweepSpec:
    state = st.session_state
    strategy = state.get("sweep_strategy", "grid")
    by_time = state.get("sweep_mode", "time budget") == "time budget"
    ages = state.get("sweep_ages", (10, 65))
    return sweep.SweepSpec(
        data=data,
        strategy=strategy,
        trials=int(state.get("sweep_trials", 9)),
        trial_budget_s=float(state.get("sweep_budget", 60)) if by_time else None,
        epochs=None if by_time else int(state.get("sweep_epochs", 3)),
        min_age=int(ages[0]),
        max_age=int(ages[1]),
        preset=state.get("sweep_preset", "fast"),
        with_auto=bool(state.get("sweep_with_auto", True)) and strategy != "auto",
        with_tutorial=bool(state.get("sweep_with_tutorial", True)) and strategy != "auto",
        sampler=state.get("sweep_sampler", "tpe"),
        tune_learning_rate=bool(state.get("sweep_tune_lr", False)) and strategy == "optuna",
    )


def _start_clicked() -> None:
    st.session_state.pop("_sweep_start_error", None)
    if time.monotonic() - st.session_state.get("_sweep_started_at", -10.0) < 2.0:
        return  # one start per click, even if the click arrives twice
    st.session_state["_sweep_started_at"] = time.monotonic()
    source, _ = current_data()
    if source is None:
        st.session_state["_sweep_start_error"] = "choose a data set in the sidebar"
        return
    data = "demo" if source.synthetic else str(source.path)
    try:
        # The label is shown to every visitor (the Train tab's queue): it names no folder.
        where = "the demo set" if source.synthetic else "a UTKFace data set"
        spec = _spec_from_widgets(data)
        sweep.start_sweep_job(spec, owner_token(), label=f"{spec.strategy} sweep on {where}")
    except ValueError as exc:
        st.session_state["_sweep_start_error"] = str(exc)


def _shown_sweep(owner: str, admin: bool) -> jobs.JobInfo | None:
    """This visitor's latest sweep; for an unlocked operator with no live sweep of their own, the live one."""
    job = jobs.latest_job("sweep", owner=owner)
    if admin and (job is None or not job.active):
        live = [j for j in jobs.list_jobs("sweep") if j.active]
        if live:
            return live[-1]
    return job


def _stop_clicked() -> None:
    job = _shown_sweep(owner_token(), is_admin())
    if job is not None and jobs.request_stop(job, owner_token(), admin=is_admin()):
        st.toast("Stopping after the current batch; starting the same sweep again resumes it.")


def _use_weights(trial: dict) -> None:
    """Button callback: put a trial's weights on the Train tab's sliders (Auto for the learned baseline)."""
    if trial.get("mode") == "auto":
        st.session_state["train_auto"] = True
    else:
        st.session_state["train_auto"] = False
        trained = sweep.trained_weights(trial["weights"])
        for head, value in trained.items():
            st.session_state[f"train_w_{head}"] = min(5.0, max(0.0, round(value, 1)))
    st.session_state["train_tab"] = "Train"
    st.rerun()  # the buttons sit in a fragment: only a full run moves the tab and the Train tab's sliders


def clicked_trial(frame: pd.DataFrame, event: Any) -> str | None:
    """The trial of the first point picked on the Pareto scatter (matched on its two plotted metrics), or None."""
    points = ((event or {}).get("selection") or {}).get("points") or []
    for point in points:
        x, y = point.get("x"), point.get("y")
        if not isinstance(x, (int, float)) or not isinstance(y, (int, float)):
            continue
        mae = pd.to_numeric(frame["age_mae"], errors="coerce").to_numpy(dtype="float64")
        gender = pd.to_numeric(frame["gender_accuracy"], errors="coerce").to_numpy(dtype="float64")
        hits = frame[np.isclose(mae, x) & np.isclose(gender, y)]
        if len(hits):
            return str(hits["trial"].iloc[0])
    return None


def _sweep_folders() -> list[Path]:
    try:
        folders = [p for p in sweep.sweeps_dir().iterdir() if (p / sweep.SPEC_FILE).is_file()]
    except OSError:
        return []
    return sorted(folders, key=lambda p: p.name, reverse=True)


def _settings() -> None:
    with st.container(border=True):
        c1, c2, c3, c4 = st.columns(4)
        strategy = c1.selectbox(
            "Strategy", list(sweep.STRATEGIES), index=0, key="sweep_strategy", bind="query-params", help=STRATEGY_HELP
        )
        c2.number_input(
            "Trials",
            1,
            MAX_TRIALS,
            value=9,
            step=1,
            key="sweep_trials",
            bind="query-params",
            disabled=strategy == "auto",
            help="weight mixes to train (grid: 3, 6, 10, 15 fill it evenly)",
        )
        mode = c3.radio(
            "Each trial stops after",
            ["time budget", "epochs"],
            index=0,
            key="sweep_mode",
            horizontal=True,
            bind="query-params",
        )
        if mode == "time budget":
            c4.number_input("Seconds per trial", 10, 600, value=60, step=10, key="sweep_budget", bind="query-params")
        else:
            c4.number_input("Epochs per trial", 1, 50, value=3, step=1, key="sweep_epochs", bind="query-params")
        d1, d2, d3, d4 = st.columns(4)
        d1.selectbox("Preset", list(PRESET_IMAGE_SIZE), index=0, key="sweep_preset", bind="query-params")
        d2.slider(
            "Age range",
            0,
            MAX_AGE,
            value=(10, 65),
            key="sweep_ages",
            bind="query-params",
            help="only faces in this age range are used; the age error is scaled by its span",
        )
        link_widgets(
            "sweep_strategy",
            "sweep_trials",
            "sweep_mode",
            "sweep_budget" if mode == "time budget" else "sweep_epochs",
            "sweep_preset",
            "sweep_ages",
        )
        d3.checkbox(
            "Add the Auto baseline",
            value=True,
            key="sweep_with_auto",
            disabled=strategy == "auto",
            help="one more trial that learns its weights, to compare fixed mixes against",
        )
        d3.checkbox(
            "Add the tutorial's 2 / 1 / 1.5",
            value=True,
            key="sweep_with_tutorial",
            disabled=strategy == "auto",
            help="one more trial with the tutorial's fixed loss weights, marked on the charts",
        )
        if strategy == "optuna":
            e1, e2, _ = st.columns([1, 1, 2])
            e1.selectbox(
                "Sampler",
                list(sweep.SAMPLERS),
                index=0,
                key="sweep_sampler",
                help="tpe: multi-objective TPE. nsga2: a genetic algorithm (needs more trials)",
            )
            e2.checkbox("Also tune the learning rate", value=False, key="sweep_tune_lr")


def _results(folder: Path) -> None:
    try:
        result = sweep.load_sweep(folder)
    except sweep.SweepError as exc:
        st.warning(str(exc))
        return
    frame = sweepcharts.trials_frame(result)
    m1, m2, m3 = st.columns(3)
    m1.metric("Finished trials", len(result["trials"]))
    m2.metric("Pareto-optimal", len(result["pareto"]))
    m3.metric("Hypervolume", f"{result['hypervolume']:.4f}", help=result["objectives"])
    if result["running"]:
        st.caption(f"Training now: {', '.join(t['name'] for t in result['running'])}")
    if result["interrupted"]:
        st.caption(f"{len(result['interrupted'])} trial(s) were interrupted; resuming the sweep trains them again.")
    if frame.empty:
        st.info("No trial has finished yet.")
        return
    st.markdown(
        "**Pareto-optimal trials** (picked on validation metrics; the compromise nearest the ideal is marked *best*)"
    )
    shown = frame[frame["pareto"]].drop(columns=["pareto", "state", "run_dir"])
    # Every trial is an ordinary run: the Evaluate page lists it as SWEEP/TRIAL (pages.shared.model_runs).
    shown.insert(1, "open", [f"./evaluate?run={quote(f'{folder.name}/{name}', safe='')}" for name in shown["trial"]])
    st.dataframe(
        shown,
        hide_index=True,
        key="sweep_pareto_table",
        width="stretch",
        column_config={"open": st.column_config.LinkColumn("open", display_text="Evaluate")},
    )
    by_name = {t["name"]: t for t in (result["trials"][i] for i in result["pareto"]) if t.get("weights")}
    if by_name:
        u1, u2 = st.columns([2, 3], vertical_alignment="bottom")
        chosen = u1.selectbox("Pareto trial", list(by_name), key="sweep_use_trial")
        u2.button(
            "Use its weights on the Train tab",
            key="sweep_use_weights",
            icon=":material/tune:",
            on_click=_use_weights,
            args=(by_name[chosen],),
            help="sets the loss-weight sliders (or Auto, for the learned baseline) and opens the Train tab",
        )
    c1, c2 = st.columns(2)
    event = c1.plotly_chart(
        sweepcharts.pareto_scatter(result), key="sweep_scatter", on_select="rerun", selection_mode="points"
    )
    picked = clicked_trial(frame, event)
    trial = next((t for t in result["trials"] if t.get("name") == picked), None)
    if trial is not None:
        c1.page_link(
            "pages/evaluate.py",
            label=f"Open {picked} on the Evaluate page",
            icon=":material/analytics:",
            query_params={"run": f"{folder.name}/{picked}"},
        )
        if trial.get("weights"):
            c1.button(
                f"Use the weights of {picked} on the Train tab",
                key="sweep_use_clicked",
                icon=":material/tune:",
                on_click=_use_weights,
                args=(trial,),
            )
    else:
        c1.caption("Click a point to open its run on the Evaluate page or use its weights.")
    metric = c2.selectbox(
        "Colour the weight triangle by",
        list(sweepcharts.METRIC_LABELS),
        format_func=sweepcharts.METRIC_LABELS.get,
        index=0,
        key="sweep_ternary_metric",
    )
    c2.plotly_chart(sweepcharts.weights_ternary(result, metric), key="sweep_ternary")
    with st.expander("All trials"):
        st.dataframe(frame.drop(columns=["run_dir"]), hide_index=True, key="sweep_all_table", width="stretch")
        st.caption(
            "Every trial is an ordinary run folder: evaluate it with "
            "`python -m utkface_core evaluate SWEEP_DIR/trials/trial-NNN`."
        )


def render_sweep_tab() -> None:
    """The whole Sweep tab: settings, start/stop, progress of this visitor's sweep and a sweep's results."""
    st.markdown(
        "Train one short run per loss-weight mix and keep the **Pareto-optimal** mixes: those no other trial "
        "beats on age, gender and race at once. All trials use the same data, split, seed and budget."
    )
    _settings()
    owner = owner_token()
    admin = is_admin()
    source, index = current_data()
    usable = source is not None and index is not None and len(index.frame) > 0
    mine = jobs.latest_job("sweep", owner=owner)
    job = _shown_sweep(owner, admin)
    active = job is not None and job.active
    mine_active = mine is not None and mine.active
    b1, b2 = st.columns([1, 4])
    b1.button(
        "Start sweep",
        key="sweep_start",
        type="primary",
        disabled=mine_active or not usable,
        icon=":material/play_arrow:",
        on_click=_start_clicked,
    )
    if active and (job.owner == owner or admin):
        b2.button(
            "Stop sweep",
            key="sweep_stop",
            icon=":material/stop:",
            on_click=_stop_clicked,
            help="stops after the current batch; starting it again later resumes it",
        )
    if not usable:
        st.info("Choose a usable data set in the sidebar to start a sweep.")
    if st.session_state.get("_sweep_start_error"):
        st.error(f"Cannot start: {st.session_state['_sweep_start_error']}")
    try:
        limit_notes = sweep.clamp_sweep_spec(_spec_from_widgets("demo"))[1]
    except (ValueError, TypeError) as exc:  # a bad limit override (LimitError): starting says the same
        limit_notes = [str(exc)]
    for note in limit_notes:
        st.caption(f":material/info: {note}")

    @st.fragment(run_every=2.0 if active else None)
    def live() -> None:
        current = _shown_sweep(owner, admin)
        if active and (current is None or not current.active):
            # The sweep ended: rerun the whole tab once, or its Start/Stop buttons (outside this fragment) stay stale
            # and this fragment keeps refreshing every 2 s.
            st.rerun(scope="app")
        if current is not None:
            job_progress(current, mine=current.owner == owner)
        folders = _sweep_folders()
        if not folders:
            st.caption("No sweeps yet.")
            return
        mine = Path(str((current.spec.get("args") or {}).get("sweep_dir"))) if current is not None else None
        names = [p.name for p in folders]
        default = names.index(mine.name) if mine is not None and mine.name in names else 0
        if mine is not None and mine.name in names and st.session_state.get("_sweep_followed") != mine.name:
            # A keyed selectbox keeps its value when options are added: show the shown sweep once its folder
            # appears, then leave the choice to the visitor.
            st.session_state["_sweep_followed"] = mine.name
            st.session_state["sweep_pick"] = mine.name
        picked = st.selectbox("Sweep", names, index=default, key="sweep_pick")
        _results(sweep.sweeps_dir() / picked)

    live()
