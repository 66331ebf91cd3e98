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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; return the exit code (2 with a one-line message on bad input)."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, NotADirectoryError, PermissionError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
