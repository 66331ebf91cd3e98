"""Cold vs warm load of a data set: index (names + hashes + duplicates) and the decoded-image cache.

    python benchmarks/load_times.py [DIR] [--size 64]

DIR defaults to $UTKFACE_DIR. Each phase runs in a fresh process; "cold" uses an empty app data
folder, "warm" reuses it, as a restarted app would. Prints seconds and the cold/warm ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
from utkface_core.data.dataset import index_folder
from utkface_core.data.imagecache import build_image_cache
t1 = time.perf_counter()
index = index_folder(sys.argv[1])
t2 = time.perf_counter()
cache = build_image_cache(index.frame["path"].tolist(), int(sys.argv[2]))
t3 = time.perf_counter()
summary = {"import_s": t1 - t0, "index_s": t2 - t1, "decode_s": t3 - t2}
summary.update(images=len(index.frame), bad=int((~cache.ok).sum()))
print(json.dumps(summary))
"""


def measure(data: str, size: int, app_dir: str) -> dict:
    env = {**os.environ, "UTKFACE_APP_DIR": app_dir, "PYTHONPATH": str(REPO)}
    out = subprocess.run(
        [sys.executable, "-c", CHILD, data, str(size)], env=env, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dir", nargs="?", default=os.environ.get("UTKFACE_DIR"))
    parser.add_argument("--size", type=int, default=48, help="decoded size (default 48, the fast preset)")
    args = parser.parse_args()
    if not args.dir:
        parser.error("give a data folder or set UTKFACE_DIR")
    with tempfile.TemporaryDirectory(prefix="utkface-bench-") as app_dir:
        cold = measure(args.dir, args.size, app_dir)
        warm = measure(args.dir, args.size, app_dir)
    print(
        f"data: {args.dir}  images kept: {cold['images']:,}  undecodable: {cold['bad']}  "
        f"size: {args.size}px  cores: {os.cpu_count()}"
    )
    print(f"{'phase':<8}{'cold s':>10}{'warm s':>10}{'cold/warm':>12}")
    for phase in ("index_s", "decode_s"):
        print(f"{phase[:-2]:<8}{cold[phase]:>10.2f}{warm[phase]:>10.2f}{cold[phase] / max(warm[phase], 1e-9):>11.1f}x")
    total_c, total_w = cold["index_s"] + cold["decode_s"], warm["index_s"] + warm["decode_s"]
    print(f"{'total':<8}{total_c:>10.2f}{total_w:>10.2f}{total_c / max(total_w, 1e-9):>11.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
