"""UI helpers shared by the pages: the data-source sidebar, cached loaders, URL-mirrored widget state."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import streamlit as st

from utkface_core import sources
from utkface_core.dataset import DatasetIndex, index_folder
from utkface_core.jobs import Job, registry

DATA_KINDS = {"demo": "Demo data (synthetic)", "folder": "A folder", "archive": "Upload an archive"}


@st.cache_resource(show_spinner="Drawing the synthetic demo faces (first start only, a few seconds)…")
def demo_source() -> sources.DataSource:
    """The generated demo set, shared by all sessions."""
    return sources.demo_source()


@st.cache_data(show_spinner="Indexing images…", max_entries=8)
def load_index(path: str, refresh: int = 0) -> DatasetIndex:
    """The index of a data folder (``refresh`` busts the cache after a rescan)."""
    return index_folder(path)


def _archive_source(upload: Any) -> sources.DataSource:
    cached = st.session_state.get("_archive")
    if cached and cached[0] == upload.file_id:
        return cached[1]
    source = sources.archive_source(upload.getvalue(), upload.name)
    st.session_state["_archive"] = (upload.file_id, source)
    return source


def keep_keras_state() -> None:
    """Stop Streamlit from calling ``keras.backend.clear_session()`` after every script run.

    Streamlit does that to free memory between runs. Here a model trains in a background thread, and
    wiping Keras' global state and TensorFlow's kernel cache under it at each rerun of the live
    fragment made training 9-17x slower while a browser watched (116-227 images/s instead of 1,949
    on the development set).
    """
    from streamlit.runtime.scriptrunner import script_runner

    if hasattr(script_runner, "_clean_problem_modules"):
        script_runner._clean_problem_modules = lambda: None


def leave_legacy_pages_mode() -> None:
    """Rerun through ``st.navigation`` if Streamlit started this run in its legacy ``pages/`` mode.

    Until a server's first ``st.navigation`` call, Streamlit treats ``pages/`` as auto-discovered pages:
    the first run would show the wrong menu (or a page without the sidebar on a direct link such as
    /train) and widget values set during it would be lost on the next run.
    """
    from streamlit.runtime.pages_manager import PagesManager

    if PagesManager.uses_pages_directory:
        PagesManager.uses_pages_directory = False
        # Only a session's first run needs the rerun; later ones (AppTest resets the flag on every
        # run) would lose a button click to it.
        if not st.session_state.get("_shell"):
            st.rerun()


def ensure_shell() -> None:
    """Run the page inside the app shell (sidebar, navigation), even when opened by a direct link."""
    leave_legacy_pages_mode()
    if not st.session_state.get("_shell"):
        st.rerun()


def data_sidebar() -> None:
    """Render the shared data-source picker and keep the chosen source and its index in session state."""
    sidebar = st.sidebar
    sidebar.header("Data set")
    kind = sidebar.radio("Source", list(DATA_KINDS), format_func=DATA_KINDS.get, key="data_kind")
    source: sources.DataSource | None = None
    try:
        if kind == "demo":
            source = demo_source()
        elif kind == "folder":
            st.session_state.setdefault("data_folder", os.environ.get("UTKFACE_DIR", ""))
            folder = sidebar.text_input("Folder with UTKFace images", key="data_folder", help="Searched recursively; UTKFACE_DIR pre-fills it.")
            source = sources.folder_source(folder)
        else:
            upload = sidebar.file_uploader(
                "UTKFace archive (.zip, .tar, .tar.gz)", type=["zip", "tar", "gz", "tgz"], key="data_archive"
            )
            if upload is None:
                sidebar.info("Upload an archive of UTKFace images, or pick another source.")
            else:
                source = _archive_source(upload)
    except (ValueError, OSError) as exc:
        sidebar.error(str(exc))
    if source is None:
        st.session_state["source"] = None
        st.session_state["index"] = None
        return
    refresh = st.session_state.get("index_refresh", 0)
    index = load_index(str(source.path), refresh)
    st.session_state["source"] = source
    st.session_state["index"] = index
    if source.synthetic:
        sidebar.warning("**Synthetic demo data**: drawn cartoon faces, not real people.", icon=":material/science:")
    else:
        sidebar.caption(source.label)
    sidebar.metric("Images (kept)", f"{len(index.frame):,}", help=f"{index.files:,} image files; see Explore → Data quality")
    if sidebar.button("Rescan", key="data_rescan", help="Index the folder again (after adding or removing files)"):
        st.session_state["index_refresh"] = refresh + 1
        st.rerun()


def current_data() -> tuple[sources.DataSource | None, DatasetIndex | None]:
    """The data source and index chosen in the sidebar (None when none is usable)."""
    return st.session_state.get("source"), st.session_state.get("index")


def require_data() -> tuple[sources.DataSource, DatasetIndex]:
    """Like ``current_data`` but stops the page with a message when no data set is usable."""
    source, index = current_data()
    if source is None or index is None:
        st.info("Choose a data set in the sidebar.")
        st.stop()
    if len(index.frame) == 0:
        st.warning(f"{source.label} holds no labelled UTKFace images. See the data-quality report on the Explore page.")
        st.stop()
    return source, index


def url_state(key: str, param: str, parse: Callable[[str], Any], default: Any) -> None:
    """Seed widget ``key`` once per session from the URL query parameter ``param`` (or a shadow copy, or ``default``)."""
    shadow = f"_keep_{key}"
    if key in st.session_state:
        return
    if shadow in st.session_state:
        st.session_state[key] = st.session_state[shadow]
        return
    raw = st.query_params.get(param)
    value = default
    if raw not in (None, ""):
        try:
            value = parse(raw)
        except (ValueError, TypeError):
            value = default
    st.session_state[key] = value


def mirror_to_url(values: dict[str, tuple[str, str]]) -> None:
    """Write widget values to the URL and keep a shadow copy that survives page switches.

    ``values`` maps widget key -> (query parameter, serialised value).
    """
    for key, (param, text) in values.items():
        st.session_state[f"_keep_{key}"] = st.session_state[key]
        if st.query_params.get(param) != text:
            st.query_params[param] = text


def job_progress(job: Job) -> None:
    """Show a job's progress bar, message and a Stop button."""
    if job.state == "queued":
        ahead = registry().queue_position(job)
        st.info(f"{job.label}: waiting in the queue ({ahead} job(s) ahead).")
    elif job.state == "running":
        st.progress(job.progress, text=f"{job.label}: {job.message}")
    elif job.state == "failed":
        st.error(f"{job.label} failed: {job.error}")
    elif job.state == "stopped":
        st.warning(f"{job.label} was stopped. {job.message}")


# --- trained runs (Evaluate and Predict pages) ----------------------------------------------------

USABLE_RUN_STATES = ("completed", "stopped")
MAX_UPLOAD_MB = 25


def model_runs() -> list:
    """Runs that finished (completed, or stopped with their best weights) and hold a model, newest first."""
    from utkface_core import runs

    return [r for r in runs.list_runs() if r.has_model and r.state in USABLE_RUN_STATES]


def run_label(run: Any) -> str:
    """A one-line description of a run for pickers: name, state, preset, data, held-out metrics."""
    metrics = run.metrics or {}
    parts = [run.name]
    if run.state != "completed":
        parts.append(run.state)
    source = (run.config.get("data") or {}).get("source")
    if source:
        parts.append("demo data" if source == "demo" else os.path.basename(str(source).rstrip("/")) or str(source))
    if metrics.get("age_mae") is not None:
        parts.append(f"MAE {metrics['age_mae']:.1f}")
    if metrics.get("race_accuracy") is not None:
        parts.append(f"race {metrics['race_accuracy']:.0%}")
    return " · ".join(parts)


def pick_run(container: Any, key: str, label: str, all_runs: list, *, param: str = "run") -> Any:
    """A URL-mirrored selectbox of runs (``?param=NAME``); return the chosen RunInfo.

    A stale choice (a run deleted since) or an unknown name in the URL falls back to the newest run.
    """
    names = [r.name for r in all_runs]
    by_name = {r.name: r for r in all_runs}
    url_state(key, param, lambda text: text if text in by_name else _unknown_run(text), names[0])
    if st.session_state.get(key) not in by_name:
        st.session_state[key] = names[0]
    name = container.selectbox(label, names, key=key, format_func=lambda n: run_label(by_name[n]))
    mirror_to_url({key: (param, name)})
    return by_name[name]


def _unknown_run(name: str) -> str:
    st.toast(f"Run {name!r} from the link was not found; showing the newest run.", icon=":material/warning:")
    raise ValueError(name)


def no_runs_message(what: str) -> None:
    """Tell the user there is no trained model yet and link to the Train page; stop the page."""
    st.info(f"No trained model yet. {what} needs a finished training run: train one on the Train page "
            "(the fast preset on the demo data takes about a minute).", icon=":material/info:")
    st.page_link("pages/train.py", label="Go to Train", icon=":material/model_training:")
    st.stop()


def upload_problem(name: str, size: int, limit_mb: int = MAX_UPLOAD_MB) -> str | None:
    """Why an upload cannot be used before decoding it (empty or over the size limit), or None."""
    if size <= 0:
        return f"{name} is empty (0 bytes): upload the image again."
    if size > limit_mb * 1024 * 1024:
        return f"{name} is {size / 1024 / 1024:.1f} MB, over the {limit_mb} MB limit: downscale or compress it first."
    return None


def model_mtime(run: Any) -> int:
    """Modification time (ns) of a run's model.keras: part of every cache key, so a retrained model is reloaded."""
    try:
        return (run.path / "model.keras").stat().st_mtime_ns
    except OSError:
        return 0
