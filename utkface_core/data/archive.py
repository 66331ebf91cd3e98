"""Safe import of user-uploaded image archives (.zip, .tar, .tar.gz) into the app data folder."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import shutil
import stat
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from utkface_core import labels, limits
from utkface_core import paths as app_paths
from utkface_core.files import TEMP_PATTERN, make_temp_dir, sweep_stale_temp, write_text_atomic
from utkface_core.limits import fmt_bytes

_CHUNK = 1024 * 1024
_STALE_TMP_SECONDS = 24 * 3600
_DRIVE = re.compile(r"^[A-Za-z]:")
_NOT_ARCHIVE = "{name} is not a .zip, .tar or .tar.gz archive; upload one of those, or point the app at a folder"


class ArchiveError(ValueError):
    """An archive cannot be imported safely; the message names the member (if any), why, and what to do."""


@dataclass
class ExtractResult:
    """Where an archive's images were extracted, how many, and the non-image files left out."""

    dest: Path
    extracted: int
    skipped: list[dict] = field(default_factory=list)


@dataclass
class _Member:
    """One archive entry that passed the safety checks and will be written."""

    name: str
    parts: tuple[str, ...]
    size: int
    handle: object
    compressed: int | None = None  # zip only: the member's compressed bytes


def extract_archive(
    source: Path | BinaryIO | bytes,
    *,
    dest_root: Path | None = None,
    max_members: int | None = None,
    max_total_bytes: int | None = None,
    max_member_bytes: int | None = None,
    max_ratio: float | None = None,
    reserve_bytes: int | None = None,
) -> ExtractResult:
    """Extract the images of a .zip/.tar/.tar.gz archive into ``dest_root/<sha256[:16]>`` safely.

    Every member is checked before anything is written (no path traversal, links, devices,
    member-count, size or compression-ratio overruns, not enough free disk); real bytes are counted
    again while writing, so lying headers cannot overrun. Extraction goes to a temporary sibling
    folder renamed into place, so a failure leaves nothing behind. The same archive extracted
    again reuses the existing folder. ``max_total_bytes`` counts every file in the archive,
    ``max_member_bytes`` only the images (other files are never written); ``max_ratio`` bounds
    uncompressed / compressed bytes per member and for the whole archive; ``reserve_bytes`` must
    stay free on the disk after extracting. Unset limits come from ``utkface_core.limits``.
    """
    max_members = limits.get("max_archive_members") if max_members is None else max_members
    max_total_bytes = limits.get("max_archive_bytes") if max_total_bytes is None else max_total_bytes
    max_member_bytes = limits.get("max_member_bytes") if max_member_bytes is None else max_member_bytes
    max_ratio = limits.get("max_compression_ratio") if max_ratio is None else max_ratio
    reserve_bytes = limits.get("disk_reserve_mb") * 1024 * 1024 if reserve_bytes is None else reserve_bytes
    for label, value in (
        ("max_members", max_members),
        ("max_total_bytes", max_total_bytes),
        ("max_member_bytes", max_member_bytes),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{label} must be a positive integer, got {value!r}")
    if isinstance(max_ratio, bool) or not isinstance(max_ratio, (int, float)) or not max_ratio >= 1:
        raise ValueError(f"max_ratio must be a number >= 1, got {max_ratio!r}")
    if isinstance(reserve_bytes, bool) or not isinstance(reserve_bytes, int) or reserve_bytes < 0:
        raise ValueError(f"reserve_bytes must be an integer >= 0, got {reserve_bytes!r}")
    root = Path(dest_root) if dest_root is not None else app_paths.data_subdir("uploads")
    root.mkdir(parents=True, exist_ok=True)
    _remove_stale_temp_dirs(root)

    with _open_source(source, root) as (fh, name):
        digest = _sha256(fh)[:16]
        dest = root / digest
        if dest.is_dir():
            return _reuse(dest)
        archive_bytes = fh.seek(0, os.SEEK_END)
        fh.seek(0)
        with _open_archive(fh, name) as archive:
            members, skipped = _plan(archive, max_members, max_total_bytes, max_member_bytes, max_ratio)
            if not members:
                raise ArchiveError(
                    f"{name} contains no image files ({', '.join(labels.IMAGE_SUFFIXES)}); "
                    "upload an archive of UTKFace images"
                )
            planned = sum(m.size for m in members)
            # Whole-archive ratio: tar members carry no compressed size of their own.
            ratio_cap = _ratio_cap(archive_bytes, max_ratio)
            if planned > ratio_cap:
                raise ArchiveError(
                    f"{name} is {fmt_bytes(archive_bytes)} but its images expand to {fmt_bytes(planned)}, "
                    f"more than {max_ratio:g} times its size (the limit): it looks like a decompression bomb; "
                    "upload an archive of ordinary photos"
                )
            _check_free_space(root, planned, reserve_bytes, name)
            tmp = make_temp_dir(dest, mode=0o700)
            try:
                extracted = _write_members(
                    archive, members, tmp, min(max_total_bytes, ratio_cap), max_member_bytes, max_ratio
                )
                archive.check_end()
                try:
                    os.rename(tmp, dest)
                except OSError:
                    # Another session finished extracting the same archive first.
                    if dest.is_dir():
                        shutil.rmtree(tmp, ignore_errors=True)
                        return _reuse(dest)
                    raise
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
    _write_manifest(root / f"{digest}.json", name, extracted, skipped)
    return ExtractResult(dest=dest, extracted=extracted, skipped=skipped)


@contextlib.contextmanager
def _open_source(source: Path | BinaryIO | bytes, root: Path) -> Iterator[tuple[BinaryIO, str]]:
    """Yield a seekable binary file for ``source`` and a name to use in messages."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        yield io.BytesIO(bytes(source)), "the upload"
        return
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if path.is_dir():
            raise ArchiveError(f"{path} is a folder, not an archive; point the app at the folder instead")
        try:
            fh = open(path, "rb")
        except FileNotFoundError as exc:
            raise ArchiveError(f"{path} does not exist; check the path of the archive") from exc
        with fh:
            yield fh, path.name
        return
    if not hasattr(source, "read"):
        raise TypeError(f"source must be a path, bytes or a binary file object, got {type(source).__name__}")
    name = Path(str(getattr(source, "name", "") or "the upload")).name
    seekable = getattr(source, "seekable", None)
    if seekable is not None and seekable():
        source.seek(0)  # an upload object may already have been read by someone else
        yield source, name
        return
    with tempfile.TemporaryFile(dir=root) as spool:
        shutil.copyfileobj(source, spool, _CHUNK)
        spool.seek(0)
        yield spool, name


def _sha256(fh: BinaryIO) -> str:
    fh.seek(0)
    digest = hashlib.sha256()
    for chunk in iter(lambda: fh.read(_CHUNK), b""):
        digest.update(chunk)
    return digest.hexdigest()


class _Archive:
    """Minimal common interface over zip and tar archives."""

    def __init__(self, kind: str, obj: zipfile.ZipFile | tarfile.TarFile, name: str) -> None:
        self.kind = kind
        self.obj = obj
        self.name = name

    def __enter__(self) -> _Archive:
        return self

    def __exit__(self, *exc: object) -> None:
        self.obj.close()

    def open(self, member: _Member) -> BinaryIO:
        if self.kind == "zip":
            return self.obj.open(member.handle)  # type: ignore[arg-type,return-value]
        reader = self.obj.extractfile(member.handle)  # type: ignore[arg-type,union-attr]
        if reader is None:
            raise ArchiveError(f"member {member.name!r} has no file data; re-create the archive")
        return reader  # type: ignore[return-value]

    def check_end(self) -> None:
        """Fail if a tar stops without its end-of-archive block (tarfile silently drops what follows)."""
        if self.kind != "tar":
            return
        tar: tarfile.TarFile = self.obj  # type: ignore[assignment]
        try:
            # Forward seek only: compressed streams would otherwise decompress again from the start.
            tar.fileobj.seek(tar.offset)  # type: ignore[union-attr]
            block = tar.fileobj.read(tarfile.BLOCKSIZE)  # type: ignore[union-attr]
        except (OSError, EOFError, zlib.error, tarfile.TarError) as exc:
            block = repr(exc).encode()
        if block != tarfile.NUL * tarfile.BLOCKSIZE:
            raise ArchiveError(
                f"{self.name} is truncated or has damaged data after member {tar.members[-1].name!r}; "
                "re-create or re-download the archive"
            )


def _open_archive(fh: BinaryIO, name: str) -> _Archive:
    """Open ``fh`` as zip or tar, detected from its content, never from its name."""
    fh.seek(0)
    if zipfile.is_zipfile(fh):
        fh.seek(0)
        try:
            return _Archive("zip", zipfile.ZipFile(fh), name)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as exc:
            raise ArchiveError(
                f"{name} looks like a .zip archive but cannot be read ({exc}); re-create the archive"
            ) from exc
    fh.seek(0)
    try:
        return _Archive("tar", tarfile.open(fileobj=fh, mode="r:*"), name)
    except (tarfile.TarError, OSError, EOFError, zlib.error, ValueError) as exc:
        raise ArchiveError(_NOT_ARCHIVE.format(name=name)) from exc


def _members(archive: _Archive) -> Iterator[tuple[str, str, int, object, str | None]]:
    """Yield (name, kind, declared size, handle, rejection reason) per entry; kind is file/dir/other."""
    if archive.kind == "zip":
        for info in archive.obj.infolist():  # type: ignore[union-attr]
            ftype = stat.S_IFMT(info.external_attr >> 16)
            reason = None
            if ftype == stat.S_IFLNK:
                reason = "is a symbolic link"
            elif ftype in (stat.S_IFCHR, stat.S_IFBLK):
                reason = "is a device file"
            elif ftype in (stat.S_IFIFO, stat.S_IFSOCK):
                reason = "is a FIFO or socket"
            elif info.flag_bits & 0x1:
                reason = "is encrypted (password protected); upload an archive without a password"
            kind = "dir" if info.is_dir() or ftype == stat.S_IFDIR else "file"
            yield info.filename, kind, info.file_size, info, reason
        return
    tar: tarfile.TarFile = archive.obj  # type: ignore[assignment]
    try:
        for info in tar:
            reason = None
            if info.issym():
                reason = f"is a symbolic link (to {info.linkname!r})"
            elif info.islnk():
                reason = f"is a hard link (to {info.linkname!r})"
            elif info.ischr() or info.isblk():
                reason = "is a device file"
            elif info.isfifo():
                reason = "is a FIFO (named pipe)"
            elif not (info.isreg() or info.isdir()):
                reason = f"has an unsupported tar member type {info.type!r}"
            kind = "dir" if info.isdir() else "file"
            yield info.name, kind, info.size, info, reason
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise ArchiveError(
            f"{archive.name} is corrupt or truncated ({exc}); re-create or re-download the archive"
        ) from exc


def _safe_parts(name: str) -> tuple[str, ...]:
    """Split a member name into path components, rejecting anything that could escape the folder."""
    if "\x00" in name:
        raise ArchiveError(f"member {name!r} has a NUL character in its name; the archive is not safe to extract")
    # Backslashes are separators on Windows, so "..\\x" must be treated as a parent reference.
    norm = name.replace("\\", "/")
    if norm.startswith("/"):
        raise ArchiveError(f"member {name!r} has an absolute path; the archive is not safe to extract")
    if _DRIVE.match(norm):
        raise ArchiveError(f"member {name!r} has a drive letter; the archive is not safe to extract")
    parts = tuple(p for p in norm.split("/") if p not in ("", "."))
    if ".." in parts:
        raise ArchiveError(
            f"member {name!r} points outside the archive folder ('..'); the archive is not safe to extract"
        )
    return parts


def _is_hidden(parts: tuple[str, ...]) -> bool:
    return any(p.startswith(".") or p == "__MACOSX" for p in parts)


def _ratio_cap(compressed: int, max_ratio: float) -> int:
    """Most uncompressed bytes allowed for ``compressed`` bytes; tiny inputs get 1 MiB of slack."""
    return int(max(compressed, 1) * max_ratio) + _CHUNK


def _check_free_space(root: Path, planned: int, reserve_bytes: int, name: str) -> None:
    """Refuse before writing when the disk would keep less than ``reserve_bytes`` free."""
    try:
        free = shutil.disk_usage(root).free
    except OSError:
        return
    if free - planned < reserve_bytes:
        raise ArchiveError(
            f"not enough free disk space to extract {name}: it needs {fmt_bytes(planned)} and "
            f"{fmt_bytes(reserve_bytes)} must stay free; try a smaller archive or ask the operator to free space"
        )


def _plan(
    archive: _Archive, max_members: int, max_total_bytes: int, max_member_bytes: int, max_ratio: float
) -> tuple[list[_Member], list[dict]]:
    """Check every member before anything is written; return the images to write and the skipped files."""
    members: list[_Member] = []
    skipped: list[dict] = []
    seen: set[str] = set()
    total = 0
    count = 0
    for name, kind, size, handle, reason in _members(archive):
        count += 1
        if count > max_members:
            raise ArchiveError(
                f"{archive.name} has more than {max_members:,} members (the limit); "
                "split it into smaller archives, or extract it yourself and point the app at the folder"
            )
        parts = _safe_parts(name)
        if reason is not None:
            raise ArchiveError(f"member {name!r} {reason}; the archive is not safe to extract")
        if kind == "dir" or not parts:
            continue
        total += max(size, 0)
        if total > max_total_bytes:
            raise ArchiveError(
                f"{archive.name} expands to more than {fmt_bytes(max_total_bytes)} (the limit; "
                f"reached at member {name!r}); split it into smaller archives, or extract it "
                "yourself and point the app at the folder"
            )
        if _is_hidden(parts):
            continue
        rel = "/".join(parts)
        if Path(rel).suffix.lower() not in labels.IMAGE_SUFFIXES:
            skipped.append({"file": rel, "reason": "not an image (" + ", ".join(labels.IMAGE_SUFFIXES) + ")"})
            continue
        if rel in seen:
            skipped.append({"file": rel, "reason": "duplicate entry; the first copy was kept"})
            continue
        if size > max_member_bytes:
            raise ArchiveError(
                f"member {name!r} is {fmt_bytes(size)}, more than the {fmt_bytes(max_member_bytes)} "
                "limit for one image; remove or shrink it and upload again"
            )
        compressed = _compressed_size(handle)
        if compressed is not None and size > _ratio_cap(compressed, max_ratio):
            raise ArchiveError(
                f"member {name!r} expands from {fmt_bytes(compressed)} to {fmt_bytes(size)}, more than "
                f"{max_ratio:g} times (the limit): it looks like a decompression bomb; upload ordinary photos"
            )
        seen.add(rel)
        members.append(_Member(name=name, parts=parts, size=size, handle=handle, compressed=compressed))
    return members, skipped


def _compressed_size(handle: object) -> int | None:
    return int(handle.compress_size) if isinstance(handle, zipfile.ZipInfo) else None


def _write_members(
    archive: _Archive,
    members: list[_Member],
    tmp: Path,
    max_total_bytes: int,
    max_member_bytes: int,
    max_ratio: float,
) -> int:
    """Write the planned members under ``tmp``, counting real bytes so lying headers cannot overrun."""
    base = tmp.resolve()
    total = 0
    for member in members:
        target = base.joinpath(*member.parts)
        if not target.resolve().is_relative_to(base):
            raise ArchiveError(f"member {member.name!r} points outside the archive folder; not safe to extract")
        limit = min(member.size, max_member_bytes)
        if member.compressed is not None:
            limit = min(limit, _ratio_cap(member.compressed, max_ratio))
        written = 0
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            out = open(target, "xb")
        except OSError as exc:
            # No server path in the message: it reaches visitors.
            raise ArchiveError(
                f"could not create {member.name!r} in the uploads folder ({exc.strerror or exc}); "
                "free some disk space or ask the operator"
            ) from exc
        with out:
            try:
                reader = archive.open(member)
            except ArchiveError:
                raise
            except (
                zipfile.BadZipFile,
                tarfile.TarError,
                NotImplementedError,
                RuntimeError,
                OSError,
                EOFError,
                zlib.error,
                ValueError,
            ) as exc:
                raise ArchiveError(
                    f"member {member.name!r} cannot be read ({exc}); re-create the archive with "
                    "plain (deflate) compression and no password"
                ) from exc
            with reader:
                while True:
                    try:
                        chunk = reader.read(_CHUNK)
                    except (zipfile.BadZipFile, tarfile.TarError, OSError, EOFError, zlib.error, ValueError) as exc:
                        raise ArchiveError(
                            f"member {member.name!r} is corrupt or truncated ({exc}); "
                            "re-create or re-download the archive"
                        ) from exc
                    if not chunk:
                        break
                    written += len(chunk)
                    total += len(chunk)
                    if written > limit:
                        raise ArchiveError(
                            f"member {member.name!r} holds more data than its header declares "
                            f"({fmt_bytes(limit)}); the archive is corrupt or malicious, re-create it"
                        )
                    if total > max_total_bytes:
                        raise ArchiveError(
                            f"the archive expands to more than {fmt_bytes(max_total_bytes)} (the limit, "
                            f"or {max_ratio:g} times its compressed size); split it, or extract it yourself "
                            "and point the app at the folder"
                        )
                    try:
                        out.write(chunk)
                    except OSError as exc:
                        raise ArchiveError(
                            f"could not write {member.name!r} ({exc.strerror or exc}); free some disk space"
                        ) from exc
    return len(members)


def _write_manifest(path: Path, name: str, extracted: int, skipped: list[dict]) -> None:
    write_text_atomic(path, json.dumps({"source": name, "extracted": extracted, "skipped": skipped}))


def _reuse(dest: Path) -> ExtractResult:
    """Describe a folder extracted earlier from the same archive."""
    manifest = dest.with_name(f"{dest.name}.json")
    try:
        meta = json.loads(manifest.read_text(encoding="utf-8"))
        return ExtractResult(dest=dest, extracted=int(meta["extracted"]), skipped=list(meta["skipped"]))
    except (OSError, ValueError, KeyError, TypeError):
        count = sum(1 for p in dest.rglob("*") if p.is_file() and p.suffix.lower() in labels.IMAGE_SUFFIXES)
        return ExtractResult(dest=dest, extracted=count, skipped=[])


def _remove_stale_temp_dirs(root: Path) -> None:
    """Remove temps of extractions killed long ago (a live one is never this old)."""
    # ".*.tmp": the names earlier versions gave their temps.
    for pattern in (TEMP_PATTERN, ".*.tmp"):
        sweep_stale_temp(root, pattern, _STALE_TMP_SECONDS)
