"""Command-line interface: index a folder, write the demo set, train, evaluate, predict."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path


def _progress_printer(label: str):
    def report(done: int, total: int) -> None:
        width = 30
        filled = int(width * done / max(total, 1))
        end = "\n" if done >= total else ""
        print(f"\r{label} [{'#' * filled}{'.' * (width - filled)}] {done}/{total}", end=end, file=sys.stderr, flush=True)

    return report


def cmd_index(args: argparse.Namespace) -> int:
    from .dataset import index_folder, summary_json, summary_text

    index = index_folder(
        args.dir,
        policy=args.duplicates,
        progress=None if args.json else _progress_printer("hashing"),
    )
    print(summary_json(index) if args.json else summary_text(index))
    return 0


def cmd_demo_data(args: argparse.Namespace) -> int:
    from .demo import generate_demo_dataset

    out = generate_demo_dataset(Path(args.dir), n=args.n, seed=args.seed, progress=_progress_printer("drawing"))
    print(f"Wrote {args.n} synthetic UTKFace-format images (seed {args.seed}) to {out}")
    return 0


def parse_loss_weights(text: str) -> dict[str, float] | str:
    """Parse ``age=2,race=1.5,gender=1`` (all three heads) or ``auto``."""
    if text.strip() == "auto":
        return "auto"
    weights: dict[str, float] = {}
    for part in text.split(","):
        head, sep, value = part.partition("=")
        if not sep:
            raise ValueError(f"loss weight {part!r} is not HEAD=VALUE; write e.g. age=2,race=1.5,gender=1 or auto")
        try:
            weights[head.strip()] = float(value)
        except ValueError:
            raise ValueError(f"loss weight for {head.strip()!r} is not a number: {value!r}") from None
    return weights


class TrainPrinter:
    """Terminal progress for training events: a decode bar, a batch bar with speed and ETA, a line per epoch."""

    def __init__(self, stream=sys.stderr) -> None:
        self.stream = stream

    def __call__(self, event: dict) -> None:
        kind = event.get("kind")
        if kind == "decode":
            _progress_printer("decoding")(event["done"], event["total"])
        elif kind == "batch":
            steps = max(1, event["steps"])
            filled = int(30 * (event["batch"] + 1) / steps)
            eta = event.get("eta_s")
            eta_text = f"ETA {eta:5.0f}s" if eta is not None else ""
            print(
                f"\repoch {event['epoch'] + 1} [{'#' * filled}{'.' * (30 - filled)}] {event['batch'] + 1}/{steps}"
                f" {event['images_per_s']:6.0f} img/s {eta_text}   ",
                end="", file=self.stream, flush=True,
            )
        elif kind == "epoch":
            logs = event["logs"]
            parts = [f"epoch {event['epoch'] + 1}:"]
            for key, fmt in (("loss", ".3f"), ("val_age_mae", ".2f"), ("val_gender_accuracy", ".3f"), ("val_race_accuracy", ".3f")):
                if key in logs:
                    parts.append(f"{key} {logs[key]:{fmt}}")
            weights = event.get("weights") or {}
            parts.append("weights " + ",".join(f"{k}={v:.2f}" for k, v in weights.items()))
            print("\r" + " ".join(parts) + " " * 10, file=self.stream, flush=True)
        elif kind in ("status", "end") and event.get("message"):
            print(f"{event.get('state', '')} {event['message']}".strip(), file=self.stream, flush=True)


def cmd_train(args: argparse.Namespace) -> int:
    import json

    from .config import TrainConfig
    from .workflow import run_training

    config = TrainConfig(
        preset=args.preset,
        image_size=args.image_size,
        epochs=args.epochs,
        time_budget_s=args.time_budget,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        min_age=args.min_age,
        max_age=args.max_age,
        loss_weights=parse_loss_weights(args.loss_weights) if args.loss_weights else TrainConfig().loss_weights,
        seed=args.seed,
        split_method=args.split,
        strategy=args.strategy,
    ).validate()
    result = run_training(config, args.data, args.out, report=TrainPrinter())
    print(json.dumps({"run_dir": str(result.run_dir), "state": result.state, "message": result.message, "metrics": result.metrics}, indent=2))
    return 0 if result.state in ("completed", "stopped") else 1


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m utkface_core``."""
    from .dataset import DUPLICATE_POLICIES

    parser = argparse.ArgumentParser(prog="python -m utkface_core", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("index", help="index a UTKFace folder and print a summary")
    p.add_argument("dir", help="folder holding UTKFace images (searched recursively)")
    p.add_argument("--json", action="store_true", help="print a JSON object")
    p.add_argument("--duplicates", choices=DUPLICATE_POLICIES, default=DUPLICATE_POLICIES[0], help="duplicate policy")
    p.set_defaults(func=cmd_index)

    p = sub.add_parser("demo-data", help="write the synthetic demo data set")
    p.add_argument("dir", help="output folder")
    p.add_argument("--n", type=int, default=3000, help="number of images (default 3000)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.set_defaults(func=cmd_demo_data)

    p = sub.add_parser("train", help="train a model into a run folder")
    p.add_argument("--data", required=True, help="a UTKFace folder, or 'demo' for the synthetic demo set")
    p.add_argument("--out", required=True, help="run folder to create")
    p.add_argument("--preset", choices=("fast", "tutorial"), default="fast")
    p.add_argument("--time-budget", type=float, default=None, metavar="SECONDS", help="stop after this many seconds (the LR schedule fits it)")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--learning-rate", type=float, default=None)
    p.add_argument("--min-age", type=int, default=10)
    p.add_argument("--max-age", type=int, default=65)
    p.add_argument("--loss-weights", default=None, help="age=2,race=1.5,gender=1 or auto")
    p.add_argument("--image-size", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--split", choices=("tutorial", "stratified"), default="tutorial")
    p.add_argument("--strategy", choices=("default", "mirrored"), default="default")
    p.set_defaults(func=cmd_train)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; return the exit code (2 with a one-line message on bad input)."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, NotADirectoryError, PermissionError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
