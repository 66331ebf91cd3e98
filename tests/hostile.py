"""Hostile inputs from issue 8 (pixel bombs, a disk-bomb zip) and a way to measure what they cost.

Built without ever holding the decoded pixels: the PNG is written row by row through zlib, the zip
reuses one deflated member. ``python -m tests.hostile`` prints the closing-note table
(| attack | peak RSS | disk written | outcome |) for the code in this tree.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MIB = 1024 * 1024


def write_png_bomb(path: Path, side: int = 13_000) -> Path:
    """A tiny (~20-500 KB) all-black RGB PNG of ``side`` x ``side`` pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    comp = zlib.compressobj(9)
    row = b"\x00" * (1 + 3 * side)  # filter byte + RGB
    parts = []
    for _ in range(side):
        out = comp.compress(row)
        if out:
            parts.append(out)
    parts.append(comp.flush())
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"".join(parts)) + chunk(b"IEND", b"")
    )
    return path


def write_big_jpeg(path: Path, width: int = 8000, height: int = 6000) -> Path:
    """A real 8000x6000 JPEG (a smooth gradient: small on disk, full size when decoded)."""
    import numpy as np
    from PIL import Image

    x = np.linspace(0, 255, width, dtype=np.float32)
    y = np.linspace(0, 255, height, dtype=np.float32)[:, None]
    img = np.empty((height, width, 3), dtype=np.uint8)
    img[..., 0] = x
    img[..., 1] = y
    img[..., 2] = 128
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path, "JPEG", quality=80)
    return path


def write_zip_bomb(path: Path, members: int = 63, member_bytes: int = 63 * MIB) -> Path:
    """A ~4 MB zip of ``members`` .jpg members of ``member_bytes`` zero bytes each (deflated once, reused)."""
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = b"\x00" * MIB
    data = b"".join(comp.compress(block) for _ in range(member_bytes // MIB)) + comp.flush()
    crc = 0
    for _ in range(member_bytes // MIB):
        crc = zlib.crc32(block, crc)
    crc &= 0xFFFFFFFF
    local, central = bytearray(), bytearray()
    for i in range(members):
        name = f"{20 + i % 50}_0_0_2017011617452{i:04d}.jpg.chip.jpg".encode()
        offset = len(local)
        local += struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 8, 0, 0, crc, len(data), member_bytes, len(name), 0)
        local += name + data
        central += struct.pack(
            "<IHHHHHHIIIHHHHHII",
            0x02014B50,
            20,
            20,
            0,
            8,
            0,
            0,
            crc,
            len(data),
            member_bytes,
            len(name),
            0,
            0,
            0,
            0,
            0,
            offset,
        )
        central += name
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, members, members, len(central), len(local), 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(local) + bytes(central) + end)
    return path


def folder_bytes(root: Path) -> int:
    """Bytes of all files under ``root`` (0 when it does not exist)."""
    total = 0
    for dirpath, _, files in os.walk(root):
        for name in files:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except OSError:
                pass
    return total


_PROBE = r"""
import json, os, resource, sys, time
mode, target, app = sys.argv[1], sys.argv[2], sys.argv[3]
os.environ["UTKFACE_APP_DIR"] = app
sys.path.insert(0, sys.argv[4])
import numpy as np, PIL.Image  # the baseline includes the libraries
from utkface_core.data import imagecache
from utkface_core.inference import prediction
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
out = {"outcome": "ok"}
try:
    if mode == "decode":
        arr = imagecache.decode_image(target)
        out["shape"] = list(arr.shape)
    elif mode == "prepare":
        arr = prediction.prepare_image(open(target, "rb").read())[0] if hasattr(prediction, "prepare_image") else \
            prediction._as_rgb(open(target, "rb").read())[0]
        out["shape"] = list(arr.shape)
    elif mode == "extract":
        from utkface_core.data.archive import extract_archive
        res = extract_archive(open(target, "rb").read())
        out["extracted"] = res.extracted
    elif mode == "predict6":  # six different 8000x6000 photos kept by the Predict page's cache
        sys.path.insert(0, sys.argv[5])
        from tests.models import tiny_model
        model = tiny_model(32)
        prediction.predict_image(model, np.zeros((64, 64, 3), np.uint8), image_size=32, detect=False)
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        data = open(target, "rb").read()
        kept = []
        for i in range(6):
            variant = data[:-2] + bytes([i]) + data[-2:]
            if hasattr(prediction, "predict_bytes_cached"):
                kept.append(prediction.predict_bytes_cached(model, variant, model_key="m", image_size=32, detect=False))
            else:  # before issue 8: st.cache_data kept predict_image's full result
                kept.append(prediction.predict_image(model, variant, image_size=32, detect=False))
        out["held_mb"] = sum(r.image_rgb.nbytes + sum(f.crop.nbytes for f in r.faces) for r in kept) / 2**20
except Exception as exc:
    out["outcome"] = f"{type(exc).__name__}: {exc}"[:300]
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
out["base_mb"] = base / 1024
out["peak_mb"] = peak / 1024
out["delta_mb"] = (peak - base) / 1024
print(json.dumps(out))
"""


def probe(mode: str, target: Path, app_dir: Path, timeout: float = 600, code: Path = REPO) -> dict:
    """Run one attack in a fresh interpreter; return its outcome and peak RSS above the import baseline (MB).

    ``code`` is the folder holding the ``utkface_core`` to attack (default: this tree).
    """
    app_dir.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, mode, str(target), str(app_dir), str(code), str(REPO)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"probe {mode} failed: {proc.stderr[-2000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["disk_mb"] = folder_bytes(app_dir) / MIB
    return result


def main() -> None:
    """``python -m tests.hostile [CODE_DIR]``: the table for the utkface_core under CODE_DIR (default: this tree)."""
    code = Path(sys.argv[1]).resolve() if len(sys.argv) > 1 else REPO
    work = Path(tempfile.mkdtemp(prefix="hostile-"))
    png = write_png_bomb(work / "bomb.png")
    jpg = write_big_jpeg(work / "big.jpg")
    bomb = write_zip_bomb(work / "bomb.zip")
    rows = [
        (
            f"13000x13000 PNG ({png.stat().st_size // 1024} KB), decode_image",
            probe("decode", png, work / "a1", code=code),
        ),
        (
            f"8000x6000 JPEG ({jpg.stat().st_size // 1024} KB), decode_image",
            probe("decode", jpg, work / "a2", code=code),
        ),
        ("8000x6000 JPEG, Predict-page decoding", probe("prepare", jpg, work / "a3", code=code)),
        ("13000x13000 PNG, Predict-page decoding", probe("prepare", png, work / "a4", code=code)),
        ("six 8000x6000 JPEGs, Predict-page results kept", probe("predict6", jpg, work / "a6", code=code)),
        (
            f"{bomb.stat().st_size / MIB:.1f} MB zip of 63 x 63 MiB zeros, extract",
            probe("extract", bomb, work / "a5", code=code),
        ),
    ]
    print(f"code under test: {code}")
    print("| attack | peak RSS above baseline | disk written | outcome |")
    print("|---|---|---|---|")
    for name, r in rows:
        held = f"; results hold {r['held_mb']:.0f} MB" if "held_mb" in r else ""
        print(f"| {name} | {r['delta_mb']:.0f} MB | {r['disk_mb']:.0f} MB | {r['outcome'][:120]}{held} |")
    import shutil

    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
