"""Train: preset, hyper-parameters and live loss weights; start/stop a training worker; live curves; run history.

The training runs in its own worker process (utkface_core.worker); this page only reads its run folder and
writes its control file, so a reload, a closed browser or a restarted server leaves the training alone.
"""

import time

import streamlit as st

from pages.shared import (
    confirm_delete_dialog,
    current_data,
    data_label,
    demo_build,
    demo_progress,
    ensure_shell,
    is_admin,
    job_progress,
    link_widgets,
    owner_token,
)
from pages.sweep_tab import render_sweep_tab
from utkface_core import jobs, runs, standby
from utkface_core.config import PRESET_BATCH_SIZE, PRESET_IMAGE_SIZE, TrainConfig
from utkface_core.labels import HEADS, MAX_AGE
from utkface_core.limits import clamp_train_config
from utkface_core.training import charts
from utkface_core.workflow import start_training_job

PRESET_BATCH_TEXT = "preset default"
# A training's starting weights by default (the tutorial's), from the config: this page never loads TensorFlow.
DEFAULT_WEIGHTS = TrainConfig().loss_weights

# Watching a training costs the server and the browser CPU that the worker would otherwise have (2 cores): each
# fragment run is a script run on the server and a re-render in the browser, and
# each curve redraw a Plotly layout of five charts (~250 ms of browser CPU). So the live section refreshes every
# LIVE_PROGRESS_S (progress about every second or two), and its curves change at most every LIVE_CURVES_S and only
# when an epoch or a weight change arrived: otherwise it re-sends the very same figures, which the browser does
# not redraw.
LIVE_PROGRESS_S = 2.0
LIVE_CURVES_S = 10.0


def curve_events(events: list[dict]) -> tuple[list[dict], list[dict]]:
    """The epoch and weight-change events of a run: all its curves are drawn from these."""
    epochs_seen = [e for e in events if e.get("kind") == "epoch"]
    changes = [e for e in events if e.get("kind") == "weight_change"]
    return epochs_seen, changes


# cache_resource, not cache_data: the same Figure objects, never copied. st.plotly_chart only reads them (to_dict);
# a cache_data copy would be re-validated by plotly on every draw (53 ms a page run against 4 ms, measured).
@st.cache_resource(max_entries=16, show_spinner=False)
def live_figures(run_dir: str, version: tuple[int, int], _epochs: list[dict], _changes: list[dict]) -> dict:
    """The curves of a run (Plotly figures, never mutated) from its first ``version`` = (epochs, weight changes)
    events: events.jsonl is append-only, so a run and a version always name the same curves."""
    epochs_seen, changes = _epochs[: version[0]], _changes[: version[1]]
    history = charts.history_frame(epochs_seen)
    figures = {metric: charts.metric_curve(history, metric, changes=changes) for metric in charts.CURVES}
    figures["losses"] = charts.losses_curve(history)
    figures["weights"] = charts.weights_curve(history, changes=changes)
    return figures


def shown_version(run_dir: str, newest: tuple[int, int], live: bool) -> tuple[int, int]:
    """The curves' version to show: the ``newest``, but while the run is live at most one change every
    LIVE_CURVES_S (this session's last drawn version is kept in its state)."""
    drawn = st.session_state.get("_train_curves")  # (run folder, version, monotonic time drawn)
    now = time.monotonic()
    if drawn is not None and drawn[0] == run_dir:
        if drawn[1] == newest or (live and now - drawn[2] < LIVE_CURVES_S):
            return drawn[1]
    st.session_state["_train_curves"] = (run_dir, newest, now)
    return newest


ensure_shell()
st.title("Train a multi-task model")
# A worker with TensorFlow already imported waits for the Start click (utkface_core.standby): a quicker first batch.
standby.ensure()
owner = owner_token()
admin = is_admin()  # an operator who unlocked may steer, stop or delete any training
source, index = current_data()
usable = source is not None and index is not None and len(index.frame) > 0
if not usable:
    st.info("Choose a usable data set in the sidebar to start a training; the settings below are kept meanwhile.")
elif source.synthetic:
    st.caption("Training on the **synthetic demo set**: the model learns drawn cues, not real faces.")
    # Training reads the images: wait until all demo faces are drawn (the settings stay usable meanwhile).
    usable = demo_build().ready
    demo_progress(blocking=False)


# The chosen tab is in the URL (?train_tab=Sweep), so a shared link reopens the sweep. Both tabs always run: the
# settings of the hidden one keep their state. The Sweep tab comes first in the script because the Train tab
# stops the script when there are no runs yet.
train_tab, sweep_tab = st.tabs(["Train", "Sweep"], key="train_tab", bind="query-params")
link_widgets("train_tab")
with sweep_tab:
    render_sweep_tab()

with train_tab:

    def shown_job() -> jobs.JobInfo | None:
        """The training this visitor watches: their own active one, else the one running, else the latest one."""
        mine = jobs.latest_job("train", owner=owner)
        if mine is not None and mine.active:
            return mine
        queue = jobs.queue_of("train")
        if queue:
            return queue[0]
        return mine if mine is not None else jobs.latest_job("train")

    job = shown_job()
    my_active = job is not None and job.active and job.owner == owner
    busy = job is not None and job.active  # settings of a live job are fixed

    with st.container(border=True):
        c1, c2, c3, c4 = st.columns(4)
        preset = c1.selectbox(
            "Preset",
            list(PRESET_IMAGE_SIZE),
            index=0,
            key="train_preset",
            bind="query-params",
            help="fast: designed for CPU speed. tutorial: the original network at 198 px.",
        )
        size = c2.number_input(
            "Image size (px)",
            16,
            256,
            value=PRESET_IMAGE_SIZE[preset],
            step=8,
            key=f"train_size_{preset}",
            bind="query-params",
        )
        mode = c3.radio(
            "Stop after", ["time budget", "epochs"], index=0, key="train_mode", horizontal=True, bind="query-params"
        )
        if mode == "time budget":
            budget_min = c4.number_input(
                "Minutes", 0.25, 120.0, value=2.0, step=0.25, key="train_budget", bind="query-params"
            )
            epochs = 200
        else:
            budget_min = None
            epochs = c4.number_input("Epochs", 1, 500, value=10, key="train_epochs", bind="query-params")
        d1, d2, d3, d4 = st.columns(4)
        ages = d1.slider("Age range", 0, MAX_AGE, value=(10, 65), key="train_ages", bind="query-params")
        batch = d2.selectbox(
            "Batch size",
            [PRESET_BATCH_TEXT, "16", "32", "64", "128", "256"],
            index=0,
            key="train_batch",
            bind="query-params",
            help=f"The preset's own batch size ({PRESET_BATCH_SIZE[preset]} for {preset}); its learning rate scales "
            "with the square root of the batch size.",
        )
        lr = d3.number_input(
            "Learning rate (0 = preset default)",
            0.0,
            1.0,
            value=0.0,
            format="%.4f",
            key="train_lr",
            bind="query-params",
        )
        seed = d4.number_input("Seed", 0, 10_000, value=0, key="train_seed", bind="query-params")
    link_widgets(
        "train_preset",
        f"train_size_{preset}",
        "train_mode",
        "train_budget" if mode == "time budget" else "train_epochs",
        "train_ages",
        "train_batch",
        "train_lr",
        "train_seed",
        "train_auto",
        *(f"train_w_{h}" for h in HEADS),
    )

    def push_weights() -> None:
        """Slider/toggle callback: hand the new weights to this visitor's live training (applied at its next batch)."""
        current = shown_job()
        if current is None or not current.active or not runs.can_control(current.spec, owner, is_admin()):
            return
        auto = bool(st.session_state["train_auto"])
        weights = None if auto else {h: float(st.session_state[f"train_w_{h}"]) for h in HEADS}
        jobs.set_live_weights(current, owner, weights=weights, auto=auto, admin=is_admin())

    def seed_from_job(current: jobs.JobInfo) -> None:
        """While a training is live, the sliders show the weights it trains with (asked for through its control)."""
        requested, auto = jobs.requested_weights(current)
        target = requested or jobs.weights_in_force(current)
        if st.session_state.get("train_auto") != auto:
            st.session_state["train_auto"] = auto
        if target and not auto:
            for head in HEADS:
                value = round(float(target.get(head, DEFAULT_WEIGHTS[head])), 2)
                shown = st.session_state.get(f"train_w_{head}")
                # Slider steps arrive as e.g. 0.7999999999999999: only a real difference may overwrite the widget,
                # since a programmatic set of a URL-bound widget does not update the URL.
                if shown is None or abs(float(shown) - value) > 1e-6:
                    st.session_state[f"train_w_{head}"] = value

    def stop_clicked() -> None:
        """Stop callback: ask this visitor's live training to stop (its worker reads it within a second)."""
        current = shown_job()
        if current is not None and jobs.request_stop(current, owner_token(), admin=is_admin()):
            st.toast("Stopping at the end of the current batch; the best weights are kept.")

    @st.fragment(run_every=LIVE_PROGRESS_S if busy else None)
    def live_section() -> None:
        current = shown_job()
        live = current is not None and current.active
        controllable = live and runs.can_control(current.spec, owner, admin)
        if live:
            seed_from_job(current)

        reason = None
        if live and not controllable:
            reason = "This training belongs to another visitor: only they can change its weights."
        w1, w2, w3, w4 = st.columns(4)
        auto = w4.toggle(
            "Auto (learned)",
            value=False,
            key="train_auto",
            on_change=push_weights,
            disabled=reason is not None,
            help=reason,
            bind="query-params",
        )
        for col, head in zip((w1, w2, w3), HEADS, strict=True):
            col.slider(
                head.capitalize(),
                0.0,
                5.0,
                value=float(DEFAULT_WEIGHTS[head]),
                step=0.1,
                key=f"train_w_{head}",
                disabled=auto or reason is not None,
                on_change=push_weights,
                bind="query-params",
                help=reason,
            )
        if reason:
            st.caption(f":material/lock: {reason}")

        if current is None:
            st.info("No training yet on this server. Set the options above and press **Start training**.")
            return
        queue = jobs.queue_of("train")
        if len(queue) > 1 or (current.state == "queued"):
            lines = []
            for position, member in enumerate(queue):
                who = "you" if member.owner == owner else "another visitor"
                what = "running" if member.state == "running" else f"waiting (position {position})"
                lines.append(f"{position + 1}. {what}: {member.label}, started by **{who}**")
            st.caption("One training at a time on this server. Queue:\n\n" + "\n\n".join(lines))
        job_progress(
            current,
            ahead=jobs.queue_position(current) if current.state == "queued" else None,
            mine=current.owner == owner,
        )
        b1, _ = st.columns([1, 5])
        b1.button(
            "Stop",
            key="train_stop",
            disabled=not controllable or current.stop_requested,
            icon=":material/stop:",
            help=None if controllable or not live else reason,
            on_click=stop_clicked,
        )
        in_force = jobs.weights_in_force(current)
        if in_force:
            mode_text = "learned (auto)" if current.status.get("auto") else "fixed"
            st.caption(
                f"Weights in force ({mode_text}): "
                + " · ".join(f"{h} {in_force[h]:.2f}" for h in HEADS if h in in_force)
            )
        if current.state == "completed":
            st.success(f"{current.label}: {current.message}")
        elif current.state == "interrupted":
            st.warning(
                f"{current.label} was interrupted ({current.error}). Its best model so far is kept and usable "
                "on the Evaluate and Predict pages.",
                icon=":material/warning:",
            )
        events = runs.read_events(current.dir)[0]
        epochs_seen, changes = curve_events(events)
        if epochs_seen:
            version = shown_version(str(current.dir), (len(epochs_seen), len(changes)), live)
            figures = live_figures(str(current.dir), version, epochs_seen, changes)
            c = st.columns(3)
            for col, metric in zip(c, charts.CURVES, strict=False):
                col.plotly_chart(figures[metric], key=f"live_{metric}")
            c = st.columns(2)
            c[0].plotly_chart(figures["losses"], key="live_losses")
            c[1].plotly_chart(figures["weights"], key="live_weights")
        elif live:
            st.caption("Curves appear after the first epoch.")
        # When the job ends, refresh the whole page once so the history and buttons catch up.
        seen = st.session_state.get("_train_seen_end")
        if not live and seen != current.id and (busy or seen is not None):
            st.session_state["_train_seen_end"] = current.id
            st.rerun(scope="app")
        if live:
            st.session_state["_train_seen_end"] = None

    def config_from_widgets() -> TrainConfig:
        """The training configuration the widgets describe (read from their keys, so callbacks can use it)."""
        state = st.session_state
        chosen = state.get("train_preset", "fast")
        by_time = state.get("train_mode", "time budget") == "time budget"
        budget = float(state.get("train_budget", 2.0)) if by_time else None
        ages_chosen = state.get("train_ages", (10, 65))
        auto_on = bool(state.get("train_auto", False))
        return TrainConfig(
            preset=chosen,
            image_size=int(state.get(f"train_size_{chosen}", PRESET_IMAGE_SIZE[chosen])),
            epochs=200 if by_time else int(state.get("train_epochs", 10)),
            time_budget_s=budget * 60 if budget else None,
            batch_size=None
            if state.get("train_batch", PRESET_BATCH_TEXT) == PRESET_BATCH_TEXT
            else int(state["train_batch"]),
            learning_rate=float(state.get("train_lr", 0.0)) or None,
            min_age=int(ages_chosen[0]),
            max_age=int(ages_chosen[1]),
            loss_weights="auto"
            if auto_on
            else {h: float(state.get(f"train_w_{h}", DEFAULT_WEIGHTS[h])) for h in HEADS},
            seed=int(state.get("train_seed", 0)),
            # With a time budget the schedule decays to its end: stopping early would waste it.
            early_stopping_patience=None if budget else 8,
        )

    def start_clicked() -> None:
        """Start callback: runs once per click, before the page script (so no rerun can drop the click)."""
        st.session_state.pop("_train_start_error", None)
        # One start per session at a time; the worker layer also refuses a second active job of this owner.
        if time.monotonic() - st.session_state.get("_train_started_at", -10.0) < 2.0:
            return
        st.session_state["_train_started_at"] = time.monotonic()
        data_source, _ = current_data()
        if data_source is None:
            st.session_state["_train_start_error"] = "choose a data set in the sidebar"
            return
        try:
            # The label is shown to every visitor (the queue): it names no folder.
            where = "the demo set" if data_source.synthetic else "a UTKFace data set"
            # The server's limits (utkface_core.limits) apply to what the widgets ask; the notes say what changed.
            config, _ = clamp_train_config(config_from_widgets())
            start_training_job(
                config,
                "demo" if data_source.synthetic else str(data_source.path),
                owner=owner_token(),
                label=f"{st.session_state.get('train_preset', 'fast')} preset on {where}",
            )
        except ValueError as exc:
            st.session_state["_train_start_error"] = str(exc)

    start_label = "Start training" if not (busy and not my_active) else "Queue my training"
    st.button(
        start_label,
        key="train_start",
        type="primary",
        disabled=my_active or not usable,
        icon=":material/play_arrow:",
        on_click=start_clicked,
    )
    if st.session_state.get("_train_start_error"):
        st.error(f"Cannot start: {st.session_state['_train_start_error']}")
    try:
        limit_notes = clamp_train_config(config_from_widgets())[1]
    except (ValueError, TypeError) as exc:  # a bad limit override (LimitError) or setting: say so, start refuses
        limit_notes = [str(exc)]
    for note in limit_notes:
        st.caption(f":material/info: {note}")

    # Static text stays out of the fragments: what a fragment run re-sends, the browser renders again.
    st.subheader("Loss weights")
    st.caption(
        "Total loss = Σ weight × head loss. Sliders act on your running training at its next batch. "
        "Auto learns the weights from each head's uncertainty (Kendall et al., 2018)."
    )
    live_section()

    st.subheader("Runs")
    all_runs = runs.list_runs()
    if not all_runs:
        st.caption("No runs yet on this server.")
        st.stop()

    def weights_text(weights) -> str:
        if weights == "auto":
            return "auto"
        if isinstance(weights, dict):
            return ", ".join(f"{h} {float(weights[h]):g}" for h in HEADS if h in weights)
        return ""

    table = [
        {
            "run": r.name,
            "state": r.state,
            "created": r.created,
            "preset": r.config.get("preset"),
            "data": data_label((r.config.get("data") or {}).get("source") or ""),  # never a server path
            "age MAE": (r.metrics or {}).get("age_mae"),
            "gender acc": (r.metrics or {}).get("gender_accuracy"),
            "race acc": (r.metrics or {}).get("race_accuracy"),
            "wall s": (r.metrics or {}).get("wall_time_s"),
            "note": r.error or r.message,
        }
        for r in all_runs
    ]
    picked = st.dataframe(table, key="train_runs_table", on_select="rerun", selection_mode="multi-row", hide_index=True)
    # A selection made before runs were deleted can point past the end of the list.
    chosen = [all_runs[i] for i in picked.selection.rows if 0 <= i < len(all_runs)]
    if chosen:
        histories = {r.name: runs.read_history(r.path) for r in chosen}
        changes = {r.name: runs.weight_changes(r.path) for r in chosen}
        st.dataframe(
            [
                {
                    "run": r.name,
                    **{
                        k: (r.metrics or {}).get(k)
                        for k in ("age_mae", "gender_accuracy", "race_accuracy", "n", "best_epoch", "wall_time_s")
                    },
                    "start weights": weights_text(r.config.get("loss_weights")),
                    "final weights": weights_text((r.metrics or {}).get("loss_weights_final")),
                    "live weight changes": len(changes[r.name]),
                    "image size": r.config.get("image_size"),
                }
                for r in chosen
            ],
            key="train_compare_table",
            hide_index=True,
        )
        cols = st.columns(3)
        for col, metric in zip(cols, charts.CURVES, strict=True):
            col.plotly_chart(charts.compare_curves(histories, metric, changes=changes), key=f"compare_{metric}")
        if any(changes.values()):
            st.plotly_chart(charts.compare_weights(histories, changes), key="compare_weights")
        deletable = [r for r in chosen if r.state not in runs.ACTIVE_STATES and runs.can_control(r, owner, admin)]
        if len(deletable) < len(chosen):
            st.caption("Only finished runs that you started can be deleted.")
        clicked = st.button(
            f"Delete {len(deletable)} selected run(s)",
            key="train_delete",
            disabled=not deletable,
            icon=":material/delete:",
            help="Deleted runs go to the trash and are removed after 24 h.",
        )

        # The names the dialog lists: those picked when Delete was pressed (the dialog survives reruns).
        pending = [r.name for r in deletable] if clicked else list(st.session_state.get("_confirm_delete") or [])

        def delete_confirmed() -> None:
            # Checked again at the moment of deleting: the dialog may have stayed open while a run changed.
            by_name = {r.name: r for r in runs.list_runs()}
            for name in pending:
                r = by_name.get(name)
                if r is not None and r.state not in runs.ACTIVE_STATES and runs.can_control(r, owner, is_admin()):
                    runs.delete_run(r.path)

        confirm_delete_dialog([r.name for r in deletable], delete_confirmed, what="run", open=clicked)
