"""UI helpers shared by the pages: the app shell and menu, the data-source sidebar, cached loaders, shareable links."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any

import streamlit as st

from utkface_core import access, limits
from utkface_core.data import sources
from utkface_core.data.dataset import DatasetIndex, index_folder
from utkface_core.data.demo import DemoBuild, demo_index
from utkface_core.jobs import registry

DATA_KINDS = {
    "demo": "Demo data (synthetic)",
    "named": "A data folder of this server",
    "folder": "A folder",
    "archive": "Upload an archive",
}


@st.cache_resource(show_spinner=False)
def demo_build() -> DemoBuild:
    """The drawing of the demo set, shared by all sessions (started by the first ``demo_source`` call)."""
    return DemoBuild(sources.DEMO_N, sources.DEMO_SEED)


def demo_source() -> sources.DataSource:
    """The demo set: usable at once (its labels come from its file names); its faces are drawn in the background."""
    build = demo_build().start()
    if build.error:
        raise OSError(build.error)
    return sources.DataSource("demo", build.path, f"Synthetic demo faces ({build.n} generated images, not real people)")


@st.cache_data(show_spinner="Indexing images…", max_entries=8)
def _folder_index(path: str, refresh: int) -> DatasetIndex:
    return index_folder(path)


@st.cache_resource(show_spinner=False)
def _demo_label_index(n: int, seed: int) -> DatasetIndex:
    return demo_index(n, seed)


def load_index(path: str, refresh: int = 0) -> DatasetIndex:
    """The index of a data folder (``refresh`` busts the cache after a rescan).

    While the demo faces are still being drawn, the demo folder's index comes from the file names
    (same rows and labels, no content hashes): Explore shows it at once; pages that read the images
    wait for them (``require_data``).
    """
    build = demo_build()
    if not build.ready and os.path.abspath(path) == str(build.path):
        return _demo_label_index(build.n, build.seed)
    return _folder_index(path, refresh)


def demo_progress(*, blocking: bool) -> None:
    """While the demo faces are drawn: a progress line that refreshes the page once they are all there.

    ``blocking`` pages (they read the images) stop here until then.
    """
    source, _ = current_data()
    build = demo_build()
    if source is None or not source.synthetic or build.ready:
        return

    @st.fragment(run_every=1.0)
    def panel() -> None:
        if build.ready:
            st.rerun(scope="app")
        if build.error:
            st.error(f"Drawing the demo faces failed: {build.error}. Reload the page to try again.")
            return
        text = (
            f"Drawing the synthetic demo faces: {build.done:,} of {build.total:,} (once per server; "
            "this page continues when they are all there)…"
            if blocking
            else f"Drawing the synthetic demo faces in the background: {build.done:,} of {build.total:,}. "
            "The charts use their labels already; the gallery draws its faces on the fly."
        )
        st.progress(build.done / max(build.total, 1), text=text)

    panel()
    if blocking:
        st.stop()


class _UploadLease:
    """Held in session state: when the session ends (its state is dropped) its uploads are deleted."""

    def __init__(self) -> None:
        import secrets
        import weakref

        self.session_id = secrets.token_urlsafe(18)
        weakref.finalize(self, _release_uploads, self.session_id)


def _release_uploads(session_id: str) -> None:
    try:
        sources.release_uploads(session_id)
    except OSError:
        pass


def _archive_source(upload: Any) -> sources.DataSource:
    """The session's uploaded archive, extracted into a folder only this session uses."""
    lease = st.session_state.get("_upload_lease")
    if lease is None:
        lease = st.session_state["_upload_lease"] = _UploadLease()
    cached = st.session_state.get("_archive")
    if cached and cached[0] == upload.file_id:
        sources.touch(cached[1].path)
        return cached[1]
    source = sources.archive_source(upload.getvalue(), upload.name, session_id=lease.session_id)
    # One upload per session on disk: the one it replaces goes now, not at the end of the session.
    sources.release_uploads(lease.session_id, keep=source.path)
    st.session_state["_archive"] = (upload.file_id, source)
    _janitor_after_upload()
    return source


@st.cache_resource(show_spinner=False)
def _janitor_at_start() -> dict:
    """Sweep the app data caches at start and every few minutes (a background thread: never delays a page)."""
    from utkface_core import janitor

    return janitor.start_background()


def _janitor_after_upload() -> None:
    import threading

    from utkface_core import janitor

    threading.Thread(target=lambda: _quiet(janitor.sweep), name="janitor-upload", daemon=True).start()


def _quiet(fn: Callable[[], Any]) -> None:
    try:
        fn()
    except (OSError, ValueError):
        pass


def _visible_message(exc: Exception, public: bool) -> str:
    """The message of a data-source error; in public mode a system error is described without its path."""
    if isinstance(exc, ValueError) or not public:
        return str(exc)
    reason = os.strerror(exc.errno) if isinstance(exc, OSError) and exc.errno else type(exc).__name__
    return f"The server could not read or write this data ({reason}): try again, or pick another source."


# --- the app shell: navigation, pages and shareable links ------------------------------------------

_RUN = threading.local()  # per script thread: is a page running inside the shell, and its pinned link params


def app_pages() -> list:
    """The app's pages, in menu order (the first is the default)."""
    return [
        st.Page("pages/explore.py", title="Explore", icon=":material/search:", default=True),
        st.Page("pages/train.py", title="Train", icon=":material/model_training:"),
        st.Page("pages/evaluate.py", title="Evaluate", icon=":material/analytics:"),
        st.Page("pages/predict.py", title="Predict", icon=":material/photo_camera:"),
    ]


def run_app() -> None:
    """The whole app: page config, the menu, the data sidebar, the chosen page and its shareable link."""
    # An emoji icon is drawn in the browser; a ":material/...:" one is fetched from fonts.gstatic.com by every visitor.
    st.set_page_config(page_title="UTKFace multi-task lab", page_icon="🧑", layout="wide")
    # Our own menu of page links: .streamlit/config.toml sets client.showSidebarNavigation = false, which
    # hides the menu Streamlit would build from the files of pages/ on a fresh server's first visit (it
    # listed "streamlit app" and "shared"). st.navigation still routes the pages and their URLs.
    pages = app_pages()
    page = st.navigation(pages, position="hidden")
    with st.sidebar.container(key="app_menu"):
        for item in pages:
            st.page_link(item)
    data_sidebar()
    link_box = copy_link(st.sidebar)
    # The link is written first from the widgets the page linked in its previous run (a page that calls
    # st.stop() ends the run: nothing can be drawn after that), then again once the page has run.
    known = st.session_state.get("_link_keys", {}).get(page.url_path, {})
    link_box.code(page_link_url(known), language=None, wrap_lines=True)
    _RUN.in_shell, _RUN.page, _RUN.pins = True, page.url_path, {}
    try:
        page.run()
    finally:
        _RUN.in_shell = False
    link_box.code(page_link_url(_RUN.pins), language=None, wrap_lines=True)


def ensure_shell() -> None:
    """Make sure the page runs inside the app shell (the menu, the sidebar), even when Streamlit ran it alone.

    A folder named ``pages/`` next to the entry script puts a fresh Streamlit server in its legacy
    multipage mode until the first ``st.navigation`` call: a server's very first visit to, say, /train
    runs pages/train.py on its own (AppTest does so on every run after ``switch_page``). Then this
    runs the app around the page here (``st.navigation`` ends that mode; public API only) and stops
    the outer run: no rerun, so no click or typed value of the run is lost.
    """
    if getattr(_RUN, "in_shell", False):
        return
    run_app()
    st.stop()


def link_widgets(*keys: str, **labels: Callable[[Any], Any]) -> None:
    """Put these URL-bound widgets' current values in this page's shareable link.

    The address bar leaves out values at their defaults, and on reruns of the same page the server's
    copy of the query string lags the browser's, so the link is built from the widgets' values.
    A widget with a ``format_func`` is named by keyword with that function: its URL holds the label.
    """
    pins = getattr(_RUN, "pins", None)
    if pins is None:
        return
    new = {**{key: str for key in keys}, **labels}
    pins.update(new)
    st.session_state.setdefault("_link_keys", {}).setdefault(_RUN.page, {}).update(new)


def _url_values(value: Any, label: Callable[[Any], Any] = str) -> list[str]:
    if isinstance(value, bool):
        return ["true" if value else "false"]
    if isinstance(value, (list, tuple)):
        return [str(label(v)) for v in value] or [""]
    return [str(label(value))]


def page_link_url(linked: dict[str, Callable[[Any], Any]] | None = None) -> str:
    """The link that reopens this page as it is now: its address, the data source and the ``linked`` widgets."""
    from urllib.parse import urlencode

    params: dict[str, list[str]] = {key: st.query_params.get_all(key) for key in st.query_params}
    kind = st.session_state.get("data_kind")
    wanted: dict[str, Callable[[Any], Any]] = {"data_kind": DATA_KINDS.get}
    if kind == "named":
        wanted["data_root"] = str
    elif kind == "folder" and not access.is_public():  # never a server path in a public link
        wanted["data_folder"] = str
    wanted.update(linked or {})
    for key, label in wanted.items():
        value = st.session_state.get(key)
        if value is not None:
            params[key] = _url_values(value, label)
    if access.is_public():
        params.pop("data_folder", None)
    base = st.context.url or ""
    query = urlencode(params, doseq=True)
    return f"{base}?{query}" if query else base


def copy_link(container: Any) -> Any:
    """A "Copy link" popover; returns the slot in it where the caller writes the link (an ``st.code`` box).

    One popover per run, with a fixed key, whose link is rewritten in place: a rerun that lands while it is
    open (a widget change, a timer) leaves it open. Replacing the popover itself during a run would close it.
    """
    with container.popover(
        "Copy link", icon=":material/link:", help="A link that reopens this page as you see it", key="copy_link"
    ):
        st.caption("Opens this page with the same data source, filters, tab and selected runs:")
        return st.empty()


def data_sidebar() -> None:
    """Render the shared data-source picker and keep the chosen source and its index in session state.

    What it offers depends on the server mode (utkface_core.access): public mode never offers a
    typed folder path and names the operator's data folders by name only.
    """
    sidebar = st.sidebar
    sidebar.header("Data set")
    _janitor_at_start()
    try:
        _data_picker(sidebar)
    finally:
        admin_controls(sidebar)


def _data_picker(sidebar: Any) -> None:
    try:
        mode = access.server_mode()
    except access.AccessError as exc:  # fail closed: a mistyped mode must not open the server up
        sidebar.error(str(exc))
        st.session_state["source"] = st.session_state["index"] = None
        st.stop()
    public = mode == access.PUBLIC
    try:
        roots = access.data_roots()
    except access.AccessError as exc:
        sidebar.error(str(exc))
        roots = {}
    kinds = ["demo"] + (["named"] if roots else []) + ([] if public else ["folder"]) + ["archive"]
    if st.session_state.get("data_kind") not in kinds:
        st.session_state["data_kind"] = "demo"
    _link_fallback(sidebar, "data_kind", [DATA_KINDS[k] for k in kinds], "data source", DATA_KINDS["demo"])
    # Bound to the URL (the label is the value there): a shared link reopens the same source.
    kind = sidebar.radio("Source", kinds, index=0, format_func=DATA_KINDS.get, key="data_kind", bind="query-params")
    source: sources.DataSource | None = None
    try:
        if kind == "demo":
            source = demo_source()
        elif kind == "named":
            names = list(roots)
            if st.session_state.get("data_root") not in names:
                st.session_state["data_root"] = names[0]
            _link_fallback(sidebar, "data_root", names, "data folder", names[0])
            name = sidebar.selectbox(
                "Data folder",
                names,
                index=0,
                key="data_root",
                bind="query-params",
                help="Folders the server's operator made available.",
            )
            source = sources.named_source(name)
        elif kind == "folder":
            st.session_state.setdefault("data_folder", os.environ.get("UTKFACE_DIR", ""))
            folder = sidebar.text_input(
                "Folder with UTKFace images",
                key="data_folder",
                bind="query-params",  # private mode only: a public server never offers typed folders
                help="Searched recursively; UTKFACE_DIR pre-fills it. Only folders under the allowed roots "
                "(your home folder and UTKFACE_DIR unless UTKFACE_ALLOWED_ROOTS says otherwise) can be opened.",
            )
            source = sources.visitor_folder_source(folder, mode)
        else:
            upload = sidebar.file_uploader(
                "UTKFace archive (.zip, .tar, .tar.gz)",
                type=["zip", "tar", "gz", "tgz"],
                key="data_archive",
                help="Extracted for this browser tab only, deleted when you leave (or after a while unused).",
            )
            if upload is None:
                sidebar.info("Upload an archive of UTKFace images, or pick another source.")
            else:
                source = _archive_source(upload)
    except (ValueError, OSError) as exc:
        sidebar.error(_visible_message(exc, public))
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
    sidebar.metric(
        "Images (kept)", f"{len(index.frame):,}", help=f"{index.files:,} image files; see Explore → Data quality"
    )
    if sidebar.button("Rescan", key="data_rescan", help="Index the folder again (after adding or removing files)"):
        st.session_state["index_refresh"] = refresh + 1
        st.rerun()


def _link_fallback(container: Any, key: str, offered: list[str], what: str, fallback: str) -> None:
    """Say so when a link names a value this server does not offer (the bound widget then drops it)."""
    asked = st.query_params.get(key)
    if asked and asked not in offered:
        container.warning(
            f"The link asks for the {what} “{asked}”, which this server does not offer: showing “{fallback}” instead.",
            icon=":material/link_off:",
        )


def current_data() -> tuple[sources.DataSource | None, DatasetIndex | None]:
    """The data source and index chosen in the sidebar (None when none is usable)."""
    return st.session_state.get("source"), st.session_state.get("index")


def require_data(*, files: bool = True) -> tuple[sources.DataSource, DatasetIndex]:
    """Like ``current_data`` but stops the page with a message when no data set is usable.

    With ``files`` (the default) it also waits, showing progress, until the demo faces are drawn.
    """
    source, index = current_data()
    if source is None or index is None:
        st.info("Choose a data set in the sidebar.")
        st.stop()
    if len(index.frame) == 0:
        st.warning(f"{source.label} holds no labelled UTKFace images. See the data-quality report on the Explore page.")
        st.stop()
    if files and source.synthetic:
        demo_progress(blocking=True)
        build = demo_build()
        if index is _demo_label_index(build.n, build.seed):  # the faces were finished during this run
            index = st.session_state["index"] = load_index(str(source.path))
    return source, index


def job_progress(job: Any, *, ahead: int | None = None, mine: bool | None = None) -> None:
    """Show a job's state: queue place, honest progress bar and phase, or how it ended.

    ``job`` is a worker job (``jobs.JobInfo``: progress read from its folder) or an in-server thread ``Job``.
    ``mine`` says whether this visitor started it (shown as "you" / "another visitor", never the owner token).
    """
    from utkface_core.jobs import JobInfo, describe_progress

    who = "" if mine is None else (" (yours)" if mine else " (another visitor's)")
    if isinstance(job, JobInfo):
        fraction, text = describe_progress(job)
        if job.state == "queued":
            st.info(f"{job.label}{who}: waiting in the queue ({ahead or 0} job(s) ahead).", icon=":material/schedule:")
        elif job.active:
            st.progress(fraction, text=f"{job.label}{who}: {text}")
        elif job.state == "failed":
            st.error(f"{job.label} failed: {job.error}")
        elif job.state == "stopped":
            st.warning(f"{job.label} was stopped. {job.message}")
        elif job.state == "interrupted":
            st.warning(f"{job.label} was interrupted: {job.error}.")
        return
    if job.state == "queued":
        ahead = registry().queue_position(job) if ahead is None else ahead
        st.info(f"{job.label}: waiting in the queue ({ahead} job(s) ahead).")
    elif job.state == "running":
        st.progress(job.progress, text=f"{job.label}: {job.message}")
    elif job.state == "failed":
        st.error(f"{job.label} failed: {job.error}")
    elif job.state == "stopped":
        st.warning(f"{job.label} was stopped. {job.message}")


# --- trained runs (Evaluate and Predict pages) ----------------------------------------------------

# An interrupted run (its worker died) keeps the best model it had saved: still usable.
USABLE_RUN_STATES = ("completed", "stopped", "interrupted")
MAX_UPLOAD_MB = int(limits.get("max_photo_upload_mb"))  # the photo upload limit (utkface_core/limits.py)


def model_runs() -> list:
    """Runs that finished (completed, or stopped with their best weights) and hold a model, newest first;
    then the sweeps' trial runs, named ``SWEEP/TRIAL`` (a "/" no run folder name has, so every name is unique)."""
    from utkface_core import runs, sweep

    found = [*runs.list_runs(), *sweep.list_trial_runs()]
    return [r for r in found if r.has_model and r.state in USABLE_RUN_STATES]


def data_label(source: Any) -> str:
    """A run's data source for display: the folder name in private mode; never a server path in public mode."""
    if source == "demo":
        return "demo data"
    if access.is_public():
        return access.display_path(source)
    return os.path.basename(str(source).rstrip("/")) or str(source)


def run_label(run: Any) -> str:
    """A one-line description of a run for pickers: name, state, preset, data, held-out metrics."""
    metrics = run.metrics or {}
    parts = [run.name]
    if run.state != "completed":
        parts.append(run.state)
    source = (run.config.get("data") or {}).get("source")
    if source:
        parts.append(data_label(source))
    if metrics.get("age_mae") is not None:
        parts.append(f"MAE {metrics['age_mae']:.1f}")
    if metrics.get("race_accuracy") is not None:
        parts.append(f"race {metrics['race_accuracy']:.0%}")
    return " · ".join(parts)


def pick_run(container: Any, key: str, label: str, all_runs: list) -> Any:
    """A selectbox of runs bound to the URL (``?{key}=NAME``, always in the shareable link); return the chosen RunInfo.

    A link naming a run that no longer exists says so and falls back to the newest run.
    """
    names = [r.name for r in all_runs]
    by_name = {r.name: r for r in all_runs}
    wanted = st.query_params.get(key)
    if wanted and wanted not in by_name:
        st.warning(
            f"The run **{wanted}** named in the link does not exist on this server (deleted, or never "
            f"here): showing the newest run, **{names[0]}**.",
            icon=":material/link_off:",
        )
    if st.session_state.get(key) not in by_name:
        st.session_state[key] = names[0]
    # No format_func: a bound selectbox puts the option's label in the URL, so the label is the run name.
    name = container.selectbox(label, names, index=None, key=key, bind="query-params", placeholder="Newest run")
    if name not in by_name:  # cleared by the user: back to the newest run
        name = names[0]
    container.caption(run_label(by_name[name]))
    link_widgets(key)
    return by_name[name]


def no_runs_message(what: str) -> None:
    """Tell the user there is no trained model yet and link to the Train page; stop the page."""
    st.info(
        f"No trained model yet. {what} needs a finished training run: train one on the Train page "
        "(the fast preset on the demo data takes about a minute).",
        icon=":material/info:",
    )
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
    """Modification time (ns) of a run's model: part of every cache key, so a retrained model is reloaded."""
    return run.model_mtime_ns()


# --- ownership of jobs and runs --------------------------------------------------------------------


XSRF_COOKIE = "_streamlit_xsrf"


def owner_token() -> str:
    """An opaque token for this browser: jobs and runs record it as their owner. Never shown.

    Derived (HMAC with a server secret) from the random token in Streamlit's XSRF cookie, which the
    browser keeps across reloads and tabs; without that cookie (XSRF protection off, tests) it is a
    random token for this session only.
    """
    token = st.session_state.get("_owner_token")
    if token:
        return token
    secret = browser_secret(_cookie(XSRF_COOKIE))
    if secret is None:
        import secrets

        secret = secrets.token_bytes(24)
    token = access.owner_from_secret(secret)
    st.session_state["_owner_token"] = token
    return token


def _cookie(name: str) -> str | None:
    try:
        return st.context.cookies.get(name)
    except Exception:  # noqa: BLE001 - no request context (bare script runs)
        return None


def browser_secret(cookie: str | None) -> bytes | None:
    """The random bytes inside a Streamlit/Tornado XSRF cookie (``2|mask|masked|time``; masks change, bytes don't)."""
    if not cookie:
        return None
    value = cookie.strip("\"'")
    try:
        if value.startswith("2|"):
            _, mask_hex, masked_hex, _ = value.split("|")
            mask, masked = bytes.fromhex(mask_hex), bytes.fromhex(masked_hex)
            if len(mask) != 4 or len(masked) < 8:
                return None
            return bytes(b ^ mask[i % 4] for i, b in enumerate(masked))
        raw = bytes.fromhex(value)  # version 1: the token in hex
        return raw if len(raw) >= 8 else None
    except ValueError:
        return None


def _admin_password() -> str | None:
    """The operator password: ``admin_password`` in st.secrets, else ``UTKFACE_ADMIN_PASSWORD``; None when unset."""
    try:
        value = st.secrets.get("admin_password")
    except Exception:  # noqa: BLE001 - no secrets.toml at all
        value = None
    value = value or os.environ.get("UTKFACE_ADMIN_PASSWORD")
    return str(value) if value else None


def is_admin() -> bool:
    """True when this session's operator unlocked with the admin password (may steer, stop or delete any job or run)."""
    return bool(st.session_state.get("_admin_unlocked")) and _admin_password() is not None


def _close_admin_dialog() -> None:
    st.session_state["_admin_dialog"] = False


@st.dialog("Operator unlock", on_dismiss=_close_admin_dialog)
def admin_unlock_dialog() -> None:
    """A password form; the right password marks this session as the operator's (rate-limited attempts)."""
    st.caption("Operators can steer, stop and delete every visitor's jobs and runs.")
    key = owner_token()
    wait = access.ADMIN_ATTEMPTS.wait_s(key)
    with st.form("admin_unlock_form", border=False):
        given = st.text_input("Admin password", type="password", key="admin_password_input")
        submitted = st.form_submit_button("Unlock", type="primary", disabled=wait > 0)
    if wait > 0:
        st.error(f"Too many attempts: try again in {int(wait) + 1} s.")
        return
    if submitted:
        access.ADMIN_ATTEMPTS.record(key)
        if access.password_matches(given, _admin_password()):
            st.session_state["_admin_unlocked"] = True
            st.session_state["_admin_dialog"] = False
            st.rerun()
        st.error("Wrong password.")


def admin_controls(container: Any) -> None:
    """An 'Operator unlock' button (or the unlocked state and a lock button), only when a password is configured.

    The dialog stays open across full reruns until unlocked or dismissed (a session flag).
    """
    if _admin_password() is None:
        return
    if is_admin():
        container.caption(":material/admin_panel_settings: Operator mode: you can act on every job and run.")
        if container.button("Lock operator mode", key="admin_lock", icon=":material/lock:"):
            st.session_state["_admin_unlocked"] = False
            st.rerun()
        return
    if container.button("Operator unlock", key="admin_unlock", icon=":material/key:"):
        st.session_state["_admin_dialog"] = True
    if st.session_state.get("_admin_dialog"):
        admin_unlock_dialog()


def _close_delete_dialog() -> None:
    st.session_state.pop("_confirm_delete", None)


@st.dialog("Confirm deletion", on_dismiss=_close_delete_dialog)
def _confirm_delete(names: list[str], on_confirm: Callable[[], Any], what: str) -> None:
    count = len(names)
    st.markdown(f"Delete {count} {what}{'s' if count != 1 else ''}?")
    st.markdown("\n".join(f"- {name}" for name in names[:20]) + (f"\n- … and {count - 20} more" if count > 20 else ""))
    yes, no = st.columns(2)
    if yes.button("Delete", key="confirm_delete_yes", type="primary", icon=":material/delete:"):
        _close_delete_dialog()
        on_confirm()
        st.rerun()
    if no.button("Cancel", key="confirm_delete_no"):
        _close_delete_dialog()
        st.rerun()


def confirm_delete_dialog(
    names: list[str], on_confirm: Callable[[], Any], *, what: str = "run", open: bool = True
) -> None:
    """A dialog listing ``names``; ``on_confirm()`` runs only when the visitor presses Delete.

    Either call it when the page's delete button is pressed, or on every run with
    ``open=st.button(...)`` (then the dialog also survives full reruns until answered or dismissed).
    The caller checks permissions first (only the owner or an operator may delete).
    """
    if open:
        st.session_state["_confirm_delete"] = list(names)
    pending = st.session_state.get("_confirm_delete")
    if pending:
        _confirm_delete(list(pending), on_confirm, what)
