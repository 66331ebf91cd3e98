"""Train: preset, hyper-parameters and live loss weights; start/stop a background job; live curves; run history."""

import streamlit as st

from pages.shared import ensure_shell, job_progress, mirror_to_url, require_data, url_state
from utkface_core import charts, runs
from utkface_core.config import TrainConfig
from utkface_core.jobs import registry
from utkface_core.labels import MAX_AGE
from utkface_core.lossweights import DEFAULT_WEIGHTS, HEADS
from utkface_core.config import PRESET_IMAGE_SIZE
from utkface_core.paths import runs_dir
from utkface_core.workflow import start_training_job

ensure_shell()
st.title("Train a multi-task model")
source, index = require_data()
if source.synthetic:
    st.caption("Training on the **synthetic demo set**: the model learns drawn cues, not real faces.")


def parse_weights(text: str):
    if text == "auto":
        return True, dict(DEFAULT_WEIGHTS)
    values = [float(v) for v in text.split(",")]
    if len(values) != 3 or min(values) < 0 or max(values) > 10:
        raise ValueError(text)
    return False, dict(zip(HEADS, values))


url_state("train_preset", "preset", lambda t: t if t in PRESET_IMAGE_SIZE else "fast", "fast")
try:
    auto_default, weights_default = parse_weights(st.query_params.get("w", ""))
except ValueError:
    auto_default, weights_default = False, dict(DEFAULT_WEIGHTS)
for head in HEADS:
    url_state(f"train_w_{head}", "w", lambda t, h=head: parse_weights(t)[1][h], weights_default[head])
url_state("train_auto", "w", lambda t: t == "auto", auto_default)

job = registry().latest("train")
running = job is not None and job.active


def push_weights() -> None:
    """Slider callback: hand the new weights to the running job (applied at its next batch)."""
    live = registry().latest("train", active_only=True)
    if live is None:
        return
    weights = live.extra["weights"]
    weights.set_auto(st.session_state["train_auto"])
    if not st.session_state["train_auto"]:
        weights.set(**{h: st.session_state[f"train_w_{h}"] for h in HEADS})


with st.container(border=True):
    c1, c2, c3, c4 = st.columns(4)
    preset = c1.selectbox("Preset", list(PRESET_IMAGE_SIZE), key="train_preset", disabled=running,
                          help="fast: designed for CPU speed. tutorial: the original network at 198 px.")
    size = c2.number_input("Image size (px)", 16, 256, value=PRESET_IMAGE_SIZE[preset], step=8,
                           key=f"train_size_{preset}", disabled=running)
    mode = c3.radio("Stop after", ["time budget", "epochs"], key="train_mode", horizontal=True, disabled=running)
    if mode == "time budget":
        budget_min = c4.number_input("Minutes", 0.25, 120.0, value=2.0, step=0.25, key="train_budget", disabled=running)
        epochs = 200
    else:
        budget_min = None
        epochs = c4.number_input("Epochs", 1, 500, value=10, key="train_epochs", disabled=running)
    d1, d2, d3, d4 = st.columns(4)
    ages = d1.slider("Age range", 0, MAX_AGE, value=(10, 65), key="train_ages", disabled=running)
    batch = d2.selectbox("Batch size", [16, 32, 64, 128, 256], index=2, key="train_batch", disabled=running)
    lr = d3.number_input("Learning rate (0 = preset default)", 0.0, 1.0, value=0.0, format="%.4f", key="train_lr", disabled=running)
    seed = d4.number_input("Seed", 0, 10_000, value=0, key="train_seed", disabled=running)

st.subheader("Loss weights")
st.caption("Total loss = Σ weight × head loss. Sliders act on a running training at its next batch. "
           "Auto learns the weights from each head's uncertainty (Kendall et al., 2018).")
w1, w2, w3, w4 = st.columns(4)
auto = w4.toggle("Auto (learned)", key="train_auto", on_change=push_weights)
for col, head in zip((w1, w2, w3), HEADS):
    col.slider(head.capitalize(), 0.0, 5.0, step=0.1, key=f"train_w_{head}", disabled=auto, on_change=push_weights)
weights = {h: float(st.session_state[f"train_w_{h}"]) for h in HEADS}
mirror_to_url(
    {
        "train_preset": ("preset", preset),
        "train_auto": ("w", "auto" if auto else ",".join(f"{weights[h]:g}" for h in HEADS)),
    }
)
for head in HEADS:  # shadow copies, so a dropped widget state comes back as the user left it
    st.session_state[f"_keep_train_w_{head}"] = weights[head]

if running:
    st.info("A training is running on this server (one at a time, shared by all its users): "
            "watch it below, move the weight sliders, or stop it.", icon=":material/hourglass_top:")
b1, b2, _ = st.columns([1, 1, 4])
if b1.button("Start training", key="train_start", type="primary", disabled=running, icon=":material/play_arrow:"):
    config = TrainConfig(
        preset=preset,
        image_size=int(size),
        epochs=int(epochs),
        time_budget_s=budget_min * 60 if budget_min else None,
        batch_size=int(batch),
        learning_rate=float(lr) or None,
        min_age=int(ages[0]),
        max_age=int(ages[1]),
        loss_weights="auto" if auto else weights,
        seed=int(seed),
        # With a time budget the schedule decays to its end: stopping early would waste it.
        early_stopping_patience=None if budget_min else 8,
    )
    try:
        job = start_training_job(config, "demo" if source.synthetic else str(source.path), label=f"{preset} on {source.label}")
        st.rerun()
    except ValueError as exc:
        st.error(f"Cannot start: {exc}")
if b2.button("Stop", key="train_stop", disabled=not running, icon=":material/stop:"):
    job.stop()
    st.toast("Stopping at the end of the current batch; the best weights are kept.")


@st.fragment(run_every=1.0 if running else None)
def live_panel() -> None:
    current = registry().latest("train")
    if current is None:
        st.info("No training yet in this server. Set the options above and press **Start training**.")
        return
    job_progress(current)
    in_force = current.extra["weights"].get()
    mode_text = "learned (auto)" if current.extra["weights"].auto else "fixed"
    st.caption(f"Weights in force ({mode_text}): " + " · ".join(f"{h} {w:.2f}" for h, w in in_force.items()))
    if current.state == "completed":
        st.success(f"{current.label}: {current.message}")
    epochs_seen = [e for e in list(current.events) if e.get("kind") == "epoch"]
    if epochs_seen:
        history = charts.history_frame(epochs_seen)
        c = st.columns(3)
        for col, metric in zip(c, charts.CURVES):
            col.plotly_chart(charts.metric_curve(history, metric), key=f"live_{metric}")
        c = st.columns(2)
        c[0].plotly_chart(charts.losses_curve(history), key="live_losses")
        c[1].plotly_chart(charts.weights_curve(history), key="live_weights")
    elif current.active:
        st.caption("Curves appear after the first epoch.")
    # When the job ends, refresh the whole page once so the history and buttons catch up.
    if not current.active and st.session_state.get("_train_seen_end") != current.id:
        st.session_state["_train_seen_end"] = current.id
        st.rerun(scope="app")


live_panel()

st.subheader("Runs")
all_runs = runs.list_runs()
if not all_runs:
    st.caption(f"No runs yet in {runs_dir()}.")
    st.stop()
table = [
    {
        "run": r.name,
        "state": r.state,
        "created": r.created,
        "preset": r.config.get("preset"),
        "data": (r.config.get("data") or {}).get("source"),
        "age MAE": (r.metrics or {}).get("age_mae"),
        "gender acc": (r.metrics or {}).get("gender_accuracy"),
        "race acc": (r.metrics or {}).get("race_accuracy"),
        "wall s": (r.metrics or {}).get("wall_time_s"),
        "note": r.error or r.message,
    }
    for r in all_runs
]
picked = st.dataframe(table, key="train_runs_table", on_select="rerun", selection_mode="multi-row", hide_index=True)
chosen = [all_runs[i] for i in picked.selection.rows]
if chosen:
    histories = {r.name: runs.read_history(r.path) for r in chosen}
    st.dataframe(
        [{"run": r.name, **{k: (r.metrics or {}).get(k) for k in ("age_mae", "gender_accuracy", "race_accuracy", "n", "best_epoch", "wall_time_s")},
          "weights": r.config.get("loss_weights"), "image size": r.config.get("image_size")} for r in chosen],
        key="train_compare_table", hide_index=True,
    )
    cols = st.columns(3)
    for col, metric in zip(cols, charts.CURVES):
        col.plotly_chart(charts.compare_curves(histories, metric), key=f"compare_{metric}")
    active_dir = job.extra.get("run_dir") if job is not None and job.active else None
    deletable = [r for r in chosen if r.path != active_dir]
    if st.button(f"Delete {len(deletable)} selected run(s)", key="train_delete", disabled=not deletable, icon=":material/delete:"):
        for r in deletable:
            runs.delete_run(r.path)
        st.rerun()
