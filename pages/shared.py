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


def ensure_shell() -> None:
    """Run the page inside the app shell (sidebar, navigation).

    On a fresh server, a direct link such as /train makes Streamlit run this page alone in its legacy
    ``pages/`` mode; switching that mode off and rerunning sends the same URL through ``st.navigation``.
    """
    if st.session_state.get("_shell"):
        return
    from streamlit.runtime.pages_manager import PagesManager

    PagesManager.uses_pages_directory = False
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
