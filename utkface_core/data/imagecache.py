"""Decoded-image cache: each image is decoded once into a memory-mapped .npy and reused across restarts."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from utkface_core import limits
from utkface_core import paths as app_paths
from utkface_core.files import TEMP_PATTERN, sweep_stale_temp, write_atomic, write_text_atomic

# Bump whenever decoding changes (filter, background, crop), so old caches are not reused.
FORMAT_VERSION = 1
MAX_SIZE = 2048
BACKGROUND = (128, 128, 128)
_RESAMPLE = Image.Resampling.BILINEAR
_REDUCING_GAP = 3.0
_PROGRESS_CALLS = 200
_STALE_TMP_SECONDS = 24 * 3600
_KEY_RE = re.compile(r"[0-9a-f]{64}")
_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N")
_ALPHA = ("RGBA", "LA", "PA", "RGBa", "La")
# Modes Image.reduce handles and _to_rgb converts the same before or after shrinking.
_REDUCIBLE = ("RGB", "L", "RGBA", "LA", "CMYK", "YCbCr")
# Only mainstream formats: Pillow's lenient niche plugins would take some random bytes for images.
FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF")


class ImageDecodeError(ValueError):
    """An image cannot be decoded; ``reason`` says why, ``file`` names it when known."""

    def __init__(self, reason: str, file: str | None = None) -> None:
        self.reason = reason
        self.file = file
        super().__init__(f"{file}: {reason}" if file else reason)


class CacheBuildCancelled(RuntimeError):
    """The build was stopped through its ``stop`` event; no cache was committed."""


@dataclass
class ImageCache:
    """Decoded images (N, size, size, 3) uint8, memory-mapped read-only, with per-file success and errors."""

    key: str
    size: int
    paths: list[str]
    images: np.ndarray
    ok: np.ndarray
    errors: list[dict]
    path: Path


def _check_size(size: object) -> int:
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or not 1 <= int(size) <= MAX_SIZE:
        raise ValueError(f"size must be an integer from 1 to {MAX_SIZE} pixels, got {size!r}")
    return int(size)


def decode_image(
    source: str | Path | bytes | BinaryIO, size: int | None = None, *, max_side: int | None = None
) -> np.ndarray:
    """Decode an image file to uint8 RGB (H, W, 3), EXIF orientation applied.

    With ``size`` the image is centre-cropped to a square and resized to ``size`` x ``size``.
    With ``max_side`` a larger image is downscaled (aspect kept) so its longest side is at most
    ``max_side``: JPEGs during decoding (DCT scaling), others right after. Images over the
    ``max_image_pixels`` limit (width x height from the header) are refused before any pixel is
    decoded. Raises ImageDecodeError for empty, non-image, truncated, corrupt or oversized input.
    """
    if size is not None:
        size = _check_size(size)
    if max_side is not None and (
        isinstance(max_side, bool) or not isinstance(max_side, (int, np.integer)) or max_side < 1
    ):
        raise ValueError(f"max_side must be a positive integer number of pixels, got {max_side!r}")
    max_pixels = int(limits.get("max_image_pixels"))
    label, fp = _open_source(source)
    try:
        with warnings.catch_warnings():
            # Pillow only warns between its two limits; our own pixel cap below refuses such images with a reason.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(fp, formats=FORMATS)
    except Image.DecompressionBombError as exc:
        raise ImageDecodeError(f"image too large to decode safely ({exc})", label) from exc
    except UnidentifiedImageError as exc:
        raise ImageDecodeError("not an image file (not JPEG, PNG, WebP, BMP, GIF or TIFF)", label) from exc
    except FileNotFoundError as exc:
        raise ImageDecodeError("file not found", label) from exc
    except Exception as exc:  # noqa: BLE001 - a corrupt file may trip any error inside a decoder
        raise ImageDecodeError(f"truncated or corrupt image: {exc}", label) from exc
    with img:
        width, height = img.size
        try:
            if img.format == "JPEG" and (size is not None or max_side is not None):
                # DCT scaling decodes at 1/2, 1/4 or 1/8 resolution, never below the target size.
                img.draft("RGB", _draft_target(width, height, size, max_side))
        except Exception as exc:  # noqa: BLE001 - a corrupt header may trip any error
            raise ImageDecodeError(f"truncated or corrupt image: {exc}", label) from exc
        # The cap bounds what decoding allocates: the header's size, or the JPEG's DCT-scaled size.
        if img.width * img.height > max_pixels:
            raise ImageDecodeError(
                f"image is {width:,} x {height:,} pixels ({width * height / 1e6:.0f} Mpx), over the "
                f"{max_pixels / 1e6:g} Mpx limit: downscale it before uploading",
                label,
            )
        try:
            img.load()
            img = _apply_orientation(img)
            shrink_first = img.mode in _REDUCIBLE and "transparency" not in img.info
            if shrink_first and max_side is not None and max(img.size) > max_side:
                img = _shrink(img, max_side)
            rgb = _to_rgb(img, label)
            if max_side is not None and max(rgb.size) > max_side:
                rgb = _shrink(rgb, max_side)
            if size is not None:
                rgb = _crop_resize(rgb, size)
            return np.asarray(rgb, dtype=np.uint8)
        except ImageDecodeError:
            raise
        except Image.DecompressionBombError as exc:
            raise ImageDecodeError(f"image too large to decode safely ({exc})", label) from exc
        except Exception as exc:  # noqa: BLE001 - see above
            raise ImageDecodeError(f"truncated or corrupt image: {exc}", label) from exc


def _draft_target(width: int, height: int, size: int | None, max_side: int | None) -> tuple[int, int]:
    """The smallest decoded size JPEG draft mode may pick without going below what is needed."""
    if size is not None:
        # The centre square's side must stay >= size.
        return (size, size)
    scale = min(1.0, max_side / max(width, height))  # type: ignore[operator]
    return (max(1, int(width * scale)), max(1, int(height * scale)))


def _shrink(img: Image.Image, max_side: int) -> Image.Image:
    """Downscale so the longest side is ``max_side``; whole-factor ``reduce`` first keeps memory and time low."""
    longest = max(img.size)
    factor = longest // max_side
    if factor >= 2 and img.mode in _REDUCIBLE:
        img = img.reduce(factor)
    if max(img.size) > max_side:
        scale = max_side / max(img.size)
        target = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
        img = img.resize(target, _RESAMPLE, reducing_gap=_REDUCING_GAP)
    return img


def _open_source(source: str | Path | bytes | BinaryIO) -> tuple[str | None, str | io.BytesIO]:
    """Return a label for messages and something Image.open accepts; reject empty input early."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        if not data:
            raise ImageDecodeError("empty file (0 bytes)")
        return None, io.BytesIO(data)
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        try:
            st = os.stat(path)
        except FileNotFoundError as exc:
            raise ImageDecodeError("file not found", path) from exc
        except OSError as exc:
            raise ImageDecodeError(f"cannot read file: {exc}", path) from exc
        if os.path.isdir(path):
            raise ImageDecodeError("is a folder, not an image file", path)
        if st.st_size == 0:
            raise ImageDecodeError("empty file (0 bytes)", path)
        return path, path
    if hasattr(source, "read"):
        label = getattr(source, "name", None)
        label = str(label) if isinstance(label, (str, os.PathLike)) else None
        data = source.read()
        if not data:
            raise ImageDecodeError("empty file (0 bytes)", label)
        return label, io.BytesIO(data)
    raise TypeError(f"source must be a path, bytes or a binary file object, got {type(source).__name__}")


def _apply_orientation(img: Image.Image) -> Image.Image:
    try:
        ImageOps.exif_transpose(img, in_place=True)
    except Exception:  # noqa: BLE001 - broken EXIF metadata should not lose an otherwise fine image
        pass
    return img


def _to_rgb(img: Image.Image, label: str | None) -> Image.Image:
    """Convert any PIL mode to RGB: alpha onto a neutral grey, high bit depths scaled (not clipped)."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in _ALPHA or (mode in ("P", "L", "RGB") and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*BACKGROUND, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode in _SIXTEEN_BIT or mode in ("I", "F"):
        grey = _scale_to_uint8(np.asarray(img), mode)
        return Image.fromarray(np.ascontiguousarray(np.repeat(grey[:, :, None], 3, axis=2)), "RGB")
    try:
        return img.convert("RGB")
    except ValueError as exc:
        raise ImageDecodeError(f"unsupported colour mode {mode!r}; save the image as RGB", label) from exc


def _scale_to_uint8(arr: np.ndarray, mode: str) -> np.ndarray:
    """Map 16-bit, 32-bit integer and float grey levels to 0..255."""
    values = arr.astype(np.float64)
    values[~np.isfinite(values)] = 0.0
    if mode in _SIXTEEN_BIT:
        scaled = values / 257.0
    else:
        lo = float(values.min()) if values.size else 0.0
        hi = float(values.max()) if values.size else 0.0
        if mode == "F" and lo >= 0.0 and hi <= 1.0:
            scaled = values * 255.0
        elif lo >= 0.0 and hi <= 255.0:
            scaled = values
        elif mode == "I" and lo >= 0.0 and hi <= 65535.0:
            scaled = values / 257.0
        elif hi > lo:
            scaled = (values - lo) * (255.0 / (hi - lo))
        else:
            scaled = np.zeros_like(values)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def _crop_resize(img: Image.Image, size: int) -> Image.Image:
    """Centre-crop to a square, then resize to size x size."""
    width, height = img.size
    side = min(width, height)
    if width == height == size:
        return img
    if width != height:
        # A real crop: resize(box=...) would blend in pixels from outside the box at the edges.
        left = (width - side) // 2
        top = (height - side) // 2
        img = img.crop((left, top, left + side, top + side))
    if side == size:
        return img
    return img.resize((size, size), _RESAMPLE, reducing_gap=_REDUCING_GAP)


def image_cache_key(paths: Sequence[str | Path], size: int) -> str:
    """Return the cache key: sha256 over the format version, size, and each file's path, size and mtime."""
    size = _check_size(size)
    digest = hashlib.sha256(f"utkface-imagecache-v{FORMAT_VERSION}\n{size}\n".encode())
    for item in paths:
        path = os.fspath(item)
        try:
            st = os.stat(path)
            stamp = (st.st_size, st.st_mtime_ns)
        except OSError:
            stamp = (-1, -1)
        digest.update(f"{path}\0{stamp[0]}\0{stamp[1]}\n".encode("utf-8", "surrogateescape"))
    return digest.hexdigest()


def load_image_cache(key: str, cache_root: Path | None = None) -> ImageCache | None:
    """Open a committed cache read-only (memory-mapped); None if absent, incomplete or unreadable."""
    if not isinstance(key, str) or not _KEY_RE.fullmatch(key):
        raise ValueError(f"key must be 64 lowercase hex characters (a sha256), got {key!r}")
    root = Path(cache_root) if cache_root is not None else app_paths.data_subdir("images")
    meta_path = root / f"{key}.json"
    npy_path = root / f"{key}.npy"
    if not meta_path.is_file() or not npy_path.is_file():
        return None
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if meta.get("format") != FORMAT_VERSION or meta.get("key") != key:
            return None
        size = int(meta["size"])
        paths = [str(p) for p in meta["paths"]]
        ok = np.asarray(meta["ok"], dtype=bool).reshape(-1)
        errors = [dict(e) for e in meta["errors"]]
        images = _open_npy(npy_path, len(paths), size)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    if images is None or ok.shape != (len(paths),):
        return None
    with contextlib.suppress(OSError):
        os.utime(meta_path)  # last use, for the janitor's least-recently-used order
    return ImageCache(key=key, size=size, paths=paths, images=images, ok=ok, errors=errors, path=npy_path)


def _open_npy(npy_path: Path, count: int, size: int) -> np.ndarray | None:
    shape = (count, size, size, 3)
    if count == 0:
        # numpy cannot memory-map an array with no elements.
        images = np.load(npy_path)
    else:
        images = np.load(npy_path, mmap_mode="r")
    if images.shape != shape or images.dtype != np.uint8:
        return None
    return images


def build_image_cache(
    paths: Sequence[str | Path],
    size: int,
    *,
    cache_root: Path | None = None,
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    stop: threading.Event | None = None,
) -> ImageCache:
    """Decode ``paths`` at ``size`` into a cache on disk, or open the committed one with the same key.

    Files that cannot be decoded get ``ok`` False, an all-zero row and an error entry. ``progress``
    (done, total) is called from the calling thread at most ~200 times, last with (total, total).
    Setting ``stop`` aborts with CacheBuildCancelled and leaves nothing behind.
    """
    size = _check_size(size)
    if isinstance(paths, (str, bytes, os.PathLike)):
        raise ValueError("paths must be a list of image paths, not a single path")
    items = []
    for item in paths:
        if not isinstance(item, (str, os.PathLike)):
            raise ValueError(f"paths must hold file paths (str or Path), got {type(item).__name__}")
        items.append(os.fspath(item))
    if workers is None:
        workers = os.cpu_count() or 1
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a positive integer, got {workers!r}")
    root = Path(cache_root) if cache_root is not None else app_paths.data_subdir("images")
    root.mkdir(parents=True, exist_ok=True)
    total = len(items)
    key = image_cache_key(items, size)

    cached = load_image_cache(key, root)
    if cached is not None:
        if progress is not None:
            progress(total, total)
        return cached

    # Temps of builds killed long ago (a live build's are never this old); ".*.tmp" as earlier versions named them.
    for pattern in (TEMP_PATTERN, ".*.tmp"):
        sweep_stale_temp(root, pattern, _STALE_TMP_SECONDS)
    decoded: list[tuple[np.ndarray, list[dict]]] = []

    def decode_into(tmp_npy: Path) -> None:
        decoded.append(_decode_all(items, size, tmp_npy, workers, progress, stop))
        if stop is not None and stop.is_set():
            raise CacheBuildCancelled("image cache build was cancelled; nothing was saved")

    write_atomic(root / f"{key}.npy", decode_into)
    ok, errors = decoded[0]
    meta = {
        "format": FORMAT_VERSION,
        "key": key,
        "size": size,
        "count": total,
        "paths": items,
        "ok": [bool(v) for v in ok],
        "errors": errors,
        "created": time.time(),
    }
    # The .json is the commit marker: it only appears once the .npy is complete.
    write_text_atomic(root / f"{key}.json", json.dumps(meta))
    result = load_image_cache(key, root)
    if result is None:
        raise RuntimeError(f"image cache {key} was written to {root} but cannot be read back; check the disk")
    return result


def _decode_all(
    items: list[str],
    size: int,
    tmp_npy: Path,
    workers: int,
    progress: Callable[[int, int], None] | None,
    stop: threading.Event | None,
) -> tuple[np.ndarray, list[dict]]:
    """Decode every item into a new memory-mapped .npy at ``tmp_npy``; return the ok mask and errors."""
    total = len(items)
    ok = np.zeros(total, dtype=bool)
    reasons: dict[int, str] = {}
    if total == 0:
        with open(tmp_npy, "wb") as fh:  # np.save would append ".npy" to a bare name
            np.save(fh, np.zeros((0, size, size, 3), dtype=np.uint8), allow_pickle=False)
        if progress is not None:
            progress(0, 0)
        return ok, []
    # The file starts sparse (all zeros), so failed rows need no writing.
    images = np.lib.format.open_memmap(tmp_npy, mode="w+", dtype=np.uint8, shape=(total, size, size, 3))
    abort = threading.Event()

    def cancelled() -> bool:
        return abort.is_set() or (stop is not None and stop.is_set())

    def work(start: int, end: int) -> int:
        for i in range(start, end):
            if cancelled():
                break
            try:
                images[i] = decode_image(items[i], size)
                ok[i] = True
            except ImageDecodeError as exc:
                reasons[i] = exc.reason
            except Exception as exc:  # noqa: BLE001 - one bad file must never sink the whole build
                reasons[i] = f"unexpected error: {type(exc).__name__}: {exc}"
        return end - start

    chunk = max(1, min(64, total // (workers * 8)))
    step = max(1, -(-total // _PROGRESS_CALLS))
    done = 0
    reported = 0
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="imagecache")
    try:
        pending: set[Future[int]] = {
            pool.submit(work, start, min(start + chunk, total)) for start in range(0, total, chunk)
        }
        while pending:
            finished, pending = wait(pending, timeout=0.25, return_when=FIRST_COMPLETED)
            for future in finished:
                done += future.result()
            if cancelled():
                break
            if progress is not None and (done - reported >= step or done == total) and done != reported:
                reported = done
                progress(done, total)
        images.flush()
    finally:
        abort.set()
        pool.shutdown(wait=True, cancel_futures=True)
    errors = [{"file": items[i], "reason": reasons[i]} for i in sorted(reasons)]
    return ok, errors
