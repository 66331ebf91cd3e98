"""Overhead of the Ray sweep backend against the local one, on the same trials, measured in one run.

    python benchmarks/sweep_backends.py [--data DIR|demo] [--trials 3] [--epochs 1] [--out DIR]

Runs the same grid sweep three times into fresh folders (same data, split, seed, epoch budget, so the same
training work): local (the baseline: trials one after another in this process), Ray with one trial at a time
(pure overhead: starting the cluster, worker processes importing TensorFlow, preparing the data there), and Ray
with as many trials at once as the local cluster fits. Prints wall times and ratios against local. On a shared
machine other processes' load falls on all three runs; repeat the run to see the spread.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _run(spec, out: Path) -> tuple[float, dict]:
    from utkface_core.sweep import run_sweep

    started = time.monotonic()
    result = run_sweep(spec, out)
    return time.monotonic() - started, result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=os.environ.get("UTKFACE_DIR") or "demo")
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--out", default=None, help="folder for the three sweeps (default: a temporary folder)")
    args = parser.parse_args()

    from utkface_core.sweep import SweepSpec, _prepare

    base = Path(args.out or tempfile.mkdtemp(prefix="sweep-backends-"))
    spec = SweepSpec(data=args.data, strategy="grid", trials=args.trials, trial_budget_s=None, epochs=args.epochs)
    _prepare(spec.validate())  # decode once before timing anything: all three runs find the cache
    rows = []
    local_s, local = _run(spec, base / "local")
    rows.append(("local (baseline)", local_s, local))
    ray_one_s, ray_one = _run(SweepSpec(**{**spec.to_dict(), "backend": "ray", "max_concurrent": 1}), base / "ray-1")
    rows.append(("ray, 1 trial at a time", ray_one_s, ray_one))
    ray_all_s, ray_all = _run(SweepSpec(**{**spec.to_dict(), "backend": "ray"}), base / "ray-all")
    rows.append(("ray, trials in parallel", ray_all_s, ray_all))

    cpu = sorted({flag for line in open("/proc/cpuinfo") for flag in line.split() if flag.startswith("avx512")})
    print(
        f"data {args.data}, {args.trials} grid trials x {args.epochs} epoch(s), {os.cpu_count()} CPUs, "
        f"AVX-512: {' '.join(cpu) or 'none'}"
    )
    # "outside training" = wall time minus the trials' own train() time: what the backend adds (cluster start,
    # worker start-up, data preparation there, copying results), less exposed to the load than the training.
    print(
        f"{'backend':<26} {'wall s':>8} {'ratio':>6} {'trial s (sum)':>14} {'outside training s':>19}"
        "  val age MAE per trial"
    )
    outside = {}
    for name, seconds, result in rows:
        trial_s = sum(t.get("wall_time_s") or 0 for t in result["trials"])
        outside[name] = seconds - trial_s
        maes = ", ".join(f"{t['age_mae']:.2f}" for t in sorted(result["trials"], key=lambda t: t["point"]))
        shown = f"{outside[name]:19.1f}" if name != "ray, trials in parallel" else f"{'(overlapping)':>19}"
        print(f"{name:<26} {seconds:8.1f} {seconds / local_s:6.2f} {trial_s:14.1f} {shown}  {maes}")
    print(
        json.dumps(
            {
                "local_s": local_s,
                "ray_one_at_a_time_s": ray_one_s,
                "ray_parallel_s": ray_all_s,
                "ratio_ray_one_at_a_time": ray_one_s / local_s,
                "ratio_ray_parallel": ray_all_s / local_s,
                "outside_training_local_s": outside["local (baseline)"],
                "outside_training_ray_one_at_a_time_s": outside["ray, 1 trial at a time"],
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
