"""Does a training started from the app (a worker process, watched) train as fast as the CLI?

    python benchmarks/worker_speed.py [--seconds 30] [--rounds 2] [--n 400]

Baseline, measured in the same run: ``python -m utkface_core train`` with a time budget. Then the same
configuration as a worker job (``workflow.start_training_job``) while this process polls its folder twice a
second the way the Train page does (status, control and the whole events.jsonl). Rounds alternate CLI and
worker so a busy machine slows both alike. Prints the training speed (images/s, from metrics.json) of each
and the worker/CLI ratio (1.0 = same speed).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def cli_speed(data: Path, seconds: float, out: Path) -> float:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "utkface_core",
            "train",
            "--data",
            str(data),
            "--out",
            str(out),
            "--time-budget",
            str(seconds),
            "--epochs",
            "1000",
            "--image-size",
            "32",
            "--min-age",
            "0",
            "--max-age",
            "116",
        ],
        cwd=REPO,
        check=True,
        capture_output=True,
    )
    return json.loads((out / "metrics.json").read_text())["train_images_per_s"]


def worker_speed(data: Path, seconds: float) -> float:
    from utkface_core import jobs, runs
    from utkface_core.config import TrainConfig
    from utkface_core.workflow import start_training_job

    config = TrainConfig(
        epochs=1000, time_budget_s=seconds, image_size=32, min_age=0, max_age=116, early_stopping_patience=None
    )
    job = start_training_job(config, data, owner="benchmark")
    while True:  # what the Train page's live fragment reads each tick
        current = jobs.load_job(job.dir)
        runs.read_events(job.dir)
        jobs.describe_progress(current)
        if not current.active:
            break
        time.sleep(0.5)
    if current.state != "completed":
        raise RuntimeError(f"worker run ended {current.state}: {current.message}")
    return json.loads((job.dir / "metrics.json").read_text())["train_images_per_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=30.0, help="time budget of each training")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--n", type=int, default=400, help="synthetic images")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="worker-speed-"))
    os.environ["UTKFACE_APP_DIR"] = str(tmp / "app")
    os.environ["UTKFACE_RUNS_DIR"] = str(tmp / "runs")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from utkface_core.data.demo import generate_demo_dataset

    data = generate_demo_dataset(tmp / "data", n=args.n, seed=0)
    cli_speed(data, 5, tmp / "warmup")  # the first run also decodes the images into the shared cache
    cli, worker = [], []
    for i in range(args.rounds):
        cli.append(cli_speed(data, args.seconds, tmp / f"cli-{i}"))
        worker.append(worker_speed(data, args.seconds))
        print(f"round {i + 1}: CLI {cli[-1]:,.0f} images/s, worker (watched) {worker[-1]:,.0f} images/s", flush=True)
    ratio = statistics.median(worker) / statistics.median(cli)
    print(
        f"median CLI {statistics.median(cli):,.0f} images/s, worker {statistics.median(worker):,.0f} images/s; "
        f"worker/CLI = {ratio:.2f}"
    )


if __name__ == "__main__":
    main()
