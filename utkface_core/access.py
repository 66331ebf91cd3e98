"""Who may read what: the server mode, the folders it may open, owner tokens and the admin gate.

Two modes (``UTKFACE_MODE`` or ``[utkface] mode`` in .streamlit/config.toml; private by default):

* ``private``: a folder path may be typed, but only under the allowed roots
  (``UTKFACE_ALLOWED_ROOTS``, default: the home folder and ``UTKFACE_DIR``). ``..``, ``/`` and
  links out of a root are refused with one message that never tells whether the path exists.
* ``public``: no typed paths at all; only the demo data, the named data folders the operator lists
  in ``UTKFACE_DATA_ROOTS`` (shown by name, never by path) and the visitor's own uploads.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import re
import threading
import time
import tomllib
from collections import deque
from pathlib import Path

from utkface_core import paths as app_paths
from utkface_core.files import write_bytes_atomic

PRIVATE = "private"
PUBLIC = "public"
MODES: tuple[str, ...] = (PRIVATE, PUBLIC)
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.\-]{0,63}$")
_CONFIG_FILES = (
    Path.cwd() / ".streamlit" / "config.toml",
    Path(__file__).resolve().parents[1] / ".streamlit" / "config.toml",
)


class AccessError(ValueError):
    """A folder may not be opened (or the access settings are wrong); the message says what to do instead."""


def check_mode(mode: object) -> str:
    """Return ``mode`` if it is ``"private"`` or ``"public"``; raise ValueError otherwise."""
    if mode not in MODES:
        raise ValueError(f"mode must be 'private' or 'public', got {mode!r}")
    return mode  # type: ignore[return-value]


def server_mode() -> str:
    """The server's mode: ``UTKFACE_MODE``, else ``[utkface] mode`` in .streamlit/config.toml, else private.

    An unknown value raises AccessError rather than falling back to private: a typo in a public
    deployment must not open the server up.
    """
    raw = os.environ.get("UTKFACE_MODE", "").strip().lower()
    where = "UTKFACE_MODE"
    if not raw:
        raw, where = _mode_from_config()
    if not raw:
        return PRIVATE
    if raw not in MODES:
        raise AccessError(f"{where}={raw!r} is not a mode: set it to 'private' or 'public'")
    return raw


def _mode_from_config() -> tuple[str, str]:
    for path in _CONFIG_FILES:
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError):
            continue
        value = (data.get("utkface") or {}).get("mode")
        if value:
            return str(value).strip().lower(), f"[utkface] mode in {path.name}"
    return "", ""


def is_public(mode: str | None = None) -> bool:
    """True when ``mode`` (default: the server's) is public."""
    return (mode or server_mode()) == PUBLIC


# --- folders ---------------------------------------------------------------------------------------


def allowed_roots() -> list[Path]:
    """Folders under which private mode may open a typed path (resolved, links followed).

    ``UTKFACE_ALLOWED_ROOTS`` (os.pathsep-separated) replaces the default: the home folder and
    ``UTKFACE_DIR``. The data folders of ``UTKFACE_DATA_ROOTS`` are always allowed.
    """
    raw = os.environ.get("UTKFACE_ALLOWED_ROOTS", "")
    if raw.strip():
        candidates = [Path(p).expanduser() for p in raw.split(os.pathsep) if p.strip()]
    else:
        candidates = [Path.home()]
        if os.environ.get("UTKFACE_DIR", "").strip():
            candidates.append(Path(os.environ["UTKFACE_DIR"].strip()).expanduser())
    candidates += list(data_roots().values())
    roots: list[Path] = []
    for candidate in candidates:
        resolved = candidate.resolve()
        if resolved not in roots and resolved != Path(resolved.anchor):
            roots.append(resolved)
    return roots


def data_roots() -> dict[str, Path]:
    """The named data folders of ``UTKFACE_DATA_ROOTS`` (os.pathsep-separated ``NAME=PATH`` or ``PATH``).

    A bare PATH is named after its last component. Raises AccessError for a bad name or a name
    given twice, so an operator's mistake shows at once.
    """
    raw = os.environ.get("UTKFACE_DATA_ROOTS", "")
    roots: dict[str, Path] = {}
    for entry in (e.strip() for e in raw.split(os.pathsep)):
        if not entry:
            continue
        name, sep, path = entry.partition("=")
        if not sep:
            name, path = Path(entry).name, entry
        name, path = name.strip(), path.strip()
        if not _NAME_RE.match(name):
            raise AccessError(
                f"UTKFACE_DATA_ROOTS: {name!r} is not a usable name (letters, digits, space, _ . -; up to 64)"
            )
        if name in roots:
            raise AccessError(f"UTKFACE_DATA_ROOTS: the name {name!r} is given twice")
        roots[name] = Path(path).expanduser().resolve()
    return roots


def named_root(name: str) -> Path:
    """The folder of the data root called ``name``; AccessError if there is none by that name."""
    roots = data_roots()
    if name not in roots:
        raise AccessError(f"there is no data folder named {name!r} on this server: pick one from the list")
    path = roots[name]
    if not path.is_dir():
        raise AccessError(f"the data folder {name!r} is not available right now: ask the server's operator")
    return path


def resolve_folder(text: str, mode: str | None = None) -> Path:
    """Return the real folder a visitor typed, if the mode and the allowed roots permit it.

    Public mode refuses every typed path. Private mode refuses ``/``, any ``..`` component and
    anything whose real location (links followed) is outside ``allowed_roots()``, all with the
    same message whether or not the path exists. Inside the roots, a missing folder or a file gets
    its own message. Raises AccessError (a ValueError) or FileNotFoundError.
    """
    mode = check_mode(mode) if mode is not None else server_mode()
    if mode == PUBLIC:
        raise AccessError(
            "folder paths cannot be typed on this shared server: pick a named data folder, "
            "the demo data, or upload an archive"
        )
    text = str(text or "").strip()
    if not text:
        raise FileNotFoundError("no folder given: type the path of a folder holding UTKFace images")
    if "\x00" in text:
        raise AccessError("that folder name has a NUL character: type a plain folder path")
    lexical = Path(text).expanduser()
    roots = allowed_roots()
    refused = AccessError(
        f"{text} is not allowed: only folders under {_names(roots)} can be opened. "
        "Move the images there, or have the operator add the folder to UTKFACE_ALLOWED_ROOTS."
    )
    if ".." in lexical.parts or not lexical.is_absolute() or lexical == Path(lexical.anchor):
        raise refused
    real = lexical.resolve()  # follows every link, existing or not
    if not any(real == root or real.is_relative_to(root) for root in roots):
        raise refused
    if not real.exists():
        raise FileNotFoundError(f"folder {text} does not exist: check the path (or set UTKFACE_DIR)")
    if not real.is_dir():
        raise FileNotFoundError(
            f"{text} is a file, not a folder: give the folder that holds the images, or upload an archive"
        )
    return real


def _names(roots: list[Path]) -> str:
    return ", ".join(str(r) for r in roots) if roots else "(no folder: set UTKFACE_ALLOWED_ROOTS)"


def display_path(path: str | os.PathLike | None, mode: str | None = None) -> str:
    """A label for a data path that is safe to show to a visitor.

    Private mode shows the path. Public mode never does: ``demo`` stays ``demo``, a named data
    folder becomes its name (plus the sub-path inside it), an upload ``an uploaded archive``, any
    other path ``a server folder``.
    """
    if path is None or str(path) in ("", "demo"):
        return "demo" if path else ""
    mode = check_mode(mode) if mode is not None else server_mode()
    if mode == PRIVATE:
        return str(path)
    real = Path(path).expanduser().resolve()
    for name, root in data_roots().items():
        if real == root:
            return name
        if real.is_relative_to(root):
            return f"{name}/{real.relative_to(root).as_posix()}"
    app = app_paths.app_data_dir()
    if real.is_relative_to(app / "demo"):
        return "demo"
    if real.is_relative_to(app / "uploads"):
        return "an uploaded archive"
    return "a server folder"


# --- owner tokens and the admin gate ------------------------------------------------------------------

_SECRET_LOCK = threading.Lock()


def server_secret() -> bytes:
    """A random 32-byte secret kept in the app data folder (mode 0600), created on first use."""
    path = app_paths.app_data_dir() / "server-secret.key"
    with _SECRET_LOCK:
        try:
            data = path.read_bytes()
            if len(data) >= 32:
                return data
        except FileNotFoundError:
            pass
        with contextlib.suppress(FileExistsError):  # never replaces a secret another process wrote first
            write_bytes_atomic(path, os.urandom(32), mode=0o600, exclusive=True)
        return path.read_bytes()


def owner_from_secret(browser_secret: bytes | str) -> str:
    """An opaque owner token (32 hex) derived from a per-browser secret with the server secret (HMAC-SHA256)."""
    raw = browser_secret.encode() if isinstance(browser_secret, str) else bytes(browser_secret)
    if not raw:
        raise ValueError("browser_secret must not be empty")
    return hmac.new(server_secret(), b"owner\0" + raw, hashlib.sha256).hexdigest()[:32]


def password_matches(given: str, expected: str | None) -> bool:
    """Constant-time comparison of a typed password with the configured one; False when none is configured."""
    if not expected or not isinstance(given, str):
        return False
    return hmac.compare_digest(given.encode("utf-8"), str(expected).encode("utf-8"))


class AttemptLimiter:
    """At most ``max_attempts`` tries per key (and ``max_attempts * 4`` for all keys) in a sliding window."""

    def __init__(self, max_attempts: int = 5, window_s: float = 300.0) -> None:
        if max_attempts < 1 or window_s <= 0:
            raise ValueError("max_attempts must be >= 1 and window_s > 0")
        self.max_attempts = max_attempts
        self.window_s = window_s
        self._tries: dict[str, deque] = {}
        self._all: deque = deque()
        self._lock = threading.Lock()

    def wait_s(self, key: str, now: float | None = None) -> float:
        """Seconds until ``key`` may try again (0 when it may try now)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            self._expire(now)
            waits = [0.0]
            tries = self._tries.get(key, ())
            if len(tries) >= self.max_attempts:
                waits.append(tries[0] + self.window_s - now)
            if len(self._all) >= self.max_attempts * 4:
                waits.append(self._all[0] + self.window_s - now)
            return max(waits)

    def record(self, key: str, now: float | None = None) -> None:
        """Count one attempt by ``key``."""
        now = time.monotonic() if now is None else now
        with self._lock:
            self._tries.setdefault(key, deque()).append(now)
            self._all.append(now)

    def _expire(self, now: float) -> None:
        cutoff = now - self.window_s
        while self._all and self._all[0] <= cutoff:
            self._all.popleft()
        for key in list(self._tries):
            tries = self._tries[key]
            while tries and tries[0] <= cutoff:
                tries.popleft()
            if not tries:
                del self._tries[key]


ADMIN_ATTEMPTS = AttemptLimiter()
