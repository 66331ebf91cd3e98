"""Command-line interface: index a folder, write the demo set, train, evaluate, predict."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from utkface_core.config import PRESETS, SPLIT_METHODS


def _progress_printer(label: str):
    interactive = sys.stderr.isatty()

    def report(done: int, total: int) -> None:
        if not interactive and done < total:
            return  # a log file gets the final line only
        width = 30
        filled = int(width * done / max(total, 1))
        end = "\n" if done >= total else ""
        print(
            f"\r{label} [{'#' * filled}{'.' * (width - filled)}] {done}/{total}", end=end, file=sys.stderr, flush=True
        )

    return report


def cmd_index(args: argparse.Namespace) -> int:
    from utkface_core.data.dataset import index_folder, summary_json, summary_text

    index = index_folder(
        args.dir,
        policy=args.duplicates,
        progress=None if args.json else _progress_printer("hashing"),
    )
    print(summary_json(index) if args.json else summary_text(index))
    return 0


def cmd_demo_data(args: argparse.Namespace) -> int:
    from utkface_core.data.demo import generate_demo_dataset

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
                end="",
                file=self.stream,
                flush=True,
            )
        elif kind == "epoch":
            logs = event["logs"]
            parts = [f"epoch {event['epoch'] + 1}:"]
            for key, fmt in (
                ("loss", ".3f"),
                ("val_age_mae", ".2f"),
                ("val_gender_accuracy", ".3f"),
                ("val_race_accuracy", ".3f"),
            ):
                if key in logs:
                    parts.append(f"{key} {logs[key]:{fmt}}")
            weights = event.get("weights") or {}
            parts.append("weights " + ",".join(f"{k}={v:.2f}" for k, v in weights.items()))
            print("\r" + " ".join(parts) + " " * 10, file=self.stream, flush=True)
        elif kind in ("status", "end") and event.get("message"):
            print(f"{event.get('state', '')} {event['message']}".strip(), file=self.stream, flush=True)


def cmd_train(args: argparse.Namespace) -> int:
    import json

    from utkface_core.config import TrainConfig
    from utkface_core.workflow import run_training

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
        # With a time budget the schedule decays to its end: stopping early would waste it.
        early_stopping_patience=args.patience if args.patience is not None else (None if args.time_budget else 8),
    ).validate()
    result = run_training(config, args.data, args.out, report=TrainPrinter())
    print(
        json.dumps(
            {
                "run_dir": str(result.run_dir),
                "state": result.state,
                "message": result.message,
                "metrics": result.metrics,
            },
            indent=2,
        )
    )
    return 0 if result.state in ("completed", "stopped") else 1


def _run_folder(run_dir: str | Path) -> Path:
    path = Path(run_dir).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(
            f"run folder {path} does not exist: give a folder written by 'python -m utkface_core train --out DIR'"
        )
    return path


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _num(value: float | None, fmt: str = ".2f") -> str:
    return "-" if value is None else format(value, fmt)


def evaluation_text(evaluation) -> str:
    """A readable multi-line summary of an Evaluation for the terminal."""
    from utkface_core.labels import GENDERS, RACES

    data = evaluation.to_json_dict()
    lines = [
        f"Images evaluated   {data['n']:,}"
        + (f" ({data['n_excluded']} undecodable left out)" if data["n_excluded"] else ""),
        f"Age MAE            {data['age_mae']:.2f} years (RMSE {data['age_rmse']:.2f})",
        f"Gender accuracy    {_pct(data['gender_accuracy'])} (ROC AUC {_num(data['gender_auc'], '.3f')}, "
        f"ECE {_num(data['ece'].get('gender'), '.3f')})",
        f"Race accuracy      {_pct(data['race_accuracy'])} (ECE {_num(data['ece'].get('race'), '.3f')})",
        "",
        "Age MAE by true age:",
    ]
    for row in data["mae_by_age_bin"]:
        lines.append(f"  {row['bin']:>8}  n={row['n']:<6} MAE {_num(row['mae'])}")
    for head, names in (("gender", GENDERS), ("race", RACES)):
        matrix = data["confusion"][head]
        width = max(len(n) for n in names) + 2
        lines += [
            "",
            f"{head.capitalize()} confusion (rows true, columns predicted):",
            " " * width + "".join(f"{n:>{width}}" for n in names),
        ]
        for name, row in zip(names, matrix, strict=False):
            lines.append(f"{name:<{width}}" + "".join(f"{v:>{width}}" for v in row))
        lines.append(f"{'class':<{width}} precision  recall      f1  support")
        for name in names:
            r = data["report"][head].get(name, {})
            lines.append(
                f"{name:<{width}} {_num(r.get('precision'), '.3f'):>9} {_num(r.get('recall'), '.3f'):>7} "
                f"{_num(r.get('f1-score'), '.3f'):>7} {int(r.get('support') or 0):8d}"
            )
    lines += [
        "",
        f"Subgroups (gaps use cells with at least {data['min_group_n']} images):",
        f"  {'race':<8}{'gender':<8}{'n':>6}{'age MAE':>9}{'gender':>9}{'race':>9}",
    ]
    for row in data["subgroups"]:
        lines.append(
            f"  {row['race']:<8}{row['gender']:<8}{row['n']:>6}{_num(row['age_mae']):>9}"
            f"{_pct(row['gender_accuracy']):>9}{_pct(row['race_accuracy']):>9}"
        )
    for metric, gap in data["gaps"].items():
        cells = data["gap_cells"].get(metric) or {}
        if gap is None:
            lines.append(f"  gap {metric}: too few cells with enough images")
        else:
            shown = f"{gap:.2f} years" if metric == "age_mae" else f"{100 * gap:.1f} points"
            lines.append(f"  gap {metric}: {shown} (best {cells.get('best')}, worst {cells.get('worst')})")
    return "\n".join(lines)


def cmd_evaluate(args: argparse.Namespace) -> int:
    import json

    from utkface_core.evaluation.evaluation import EVALUATION_PHASES, evaluate_run

    run_dir = _run_folder(args.run_dir)
    data_dir = None
    if args.data is not None:
        data_dir = Path(args.data).expanduser()
        if not data_dir.is_dir():
            raise FileNotFoundError(f"data folder {data_dir} does not exist: give a folder of UTKFace images")
    evaluation = evaluate_run(
        run_dir,
        data_dir=data_dir,
        min_age=args.min_age,
        max_age=args.max_age,
        progress=None if args.json else _progress_printer("evaluating"),
        on_phase=None if args.json else lambda name: print(f"{EVALUATION_PHASES[name]}...", file=sys.stderr),
    )
    print(json.dumps(evaluation.to_json_dict(), indent=2) if args.json else evaluation_text(evaluation))
    return 0


def _face_line(face: dict) -> str:
    x, y, w, h = face["box"]
    gender = max(face["gender_probs"], key=face["gender_probs"].get)
    race = max(face["race_probs"], key=face["race_probs"].get)
    return (
        f"  face {face['face']} at x={x} y={y} w={w} h={h}: age {face['age']:.1f} "
        f"({face['age_low']:.0f}-{face['age_high']:.0f}), {gender} {face['gender_probs'][gender]:.0%}, "
        f"{race} {face['race_probs'][race]:.0%}"
    )


def cmd_predict(args: argparse.Namespace) -> int:
    import json

    from utkface_core import runs
    from utkface_core.inference.prediction import NO_FACE_MESSAGE, load_model_cached, predict_image, to_json

    run_dir = _run_folder(args.run_dir)
    config = runs.read_config(run_dir, require=("image_size",))
    try:
        image_size = int(config["image_size"])
    except (ValueError, TypeError) as exc:
        raise ValueError(
            f"cannot read the image size from {runs.config_path(run_dir)} ({exc}); the run folder is damaged"
        ) from None
    age_mae = None
    try:
        age_mae = float((runs.read_metrics(run_dir) or {})["age_mae"])
    except (ValueError, KeyError, TypeError):
        age_mae = None  # without held-out metrics the age band only reflects the mirrored-pass spread
    model = load_model_cached(runs.model_path(run_dir), engine=args.engine)
    results = []
    for image in args.images:
        try:
            results.append(
                predict_image(model, image, image_size=image_size, detect=not args.no_detect, age_mae=age_mae)
            )
        except ValueError as exc:
            reason = getattr(exc, "reason", None) or str(exc)
            raise ValueError(f"{image}: {reason}") from None
    if args.json:
        print(json.dumps(to_json(results), indent=2))
        return 0
    for image, faces in zip(args.images, to_json(results), strict=False):
        print(f"{image}: {len(faces)} face(s)")
        if not faces:
            print(f"  {NO_FACE_MESSAGE}")
        for face in faces:
            print(_face_line(face))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from utkface_core.inference.export import write_export

    path, result = write_export(args.run_dir, args.format, args.out)
    print(f"wrote {path} ({len(result.data) / 2**20:.2f} MiB, {result.format})")
    print(f"max abs difference from Keras per head: {result.parity_text()}")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    import json
    import signal
    import threading

    from utkface_core.sweep import SweepSpec, pareto_table, run_sweep

    spec = SweepSpec(
        data=args.data,
        strategy=args.strategy,
        trials=args.trials,
        trial_budget_s=args.trial_budget if args.trial_budget else None,
        epochs=args.epochs,
        min_age=args.min_age,
        max_age=args.max_age,
        preset=args.preset,
        image_size=args.image_size,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        seed=args.seed,
        augment=not args.no_augment,
        split_method=args.split,
        sampler=args.sampler,
        tune_learning_rate=args.tune_lr,
        with_auto=args.with_auto,
        with_tutorial=args.with_tutorial,
        min_weight=args.min_weight,
        storage=args.storage,
        backend=args.backend,
        ray_address=args.ray_address,
        trial_cpus=args.trial_cpus,
        trial_gpus=args.trial_gpus,
        max_concurrent=args.max_concurrent,
    ).validate()
    if spec.trial_budget_s is None and spec.epochs is None:
        raise ValueError("give each trial a budget: --trial-budget SECONDS and/or --epochs N")
    stop = threading.Event()

    def request_stop(signum, frame) -> None:  # first Ctrl-C stops after the current batch; a second one kills
        if stop.is_set():
            raise KeyboardInterrupt
        print("\nstopping the sweep after the current batch (Ctrl-C again to abort)", file=sys.stderr, flush=True)
        stop.set()

    previous = signal.signal(signal.SIGINT, request_stop)
    quiet = args.json

    def report(event: dict) -> None:
        if quiet:
            return
        kind = event.get("kind")
        if kind == "decode":
            _progress_printer("decoding")(event["done"], event["total"])
        elif kind == "trial_start":
            weights = event.get("weights")
            shown = "auto (learned)" if weights is None else ",".join(f"{k}={v:.3f}" for k, v in weights.items())
            print(f"{event['trial']}: weights {shown}", file=sys.stderr, flush=True)
        elif kind == "trial":
            print(
                f"{event['name']}: {event['state']} val age MAE {_num(event.get('age_mae'))}, gender "
                f"{_pct(event.get('gender_accuracy'))}, race {_pct(event.get('race_accuracy'))}",
                file=sys.stderr,
                flush=True,
            )
        elif kind == "sweep" and event.get("message"):
            print(event["message"], file=sys.stderr, flush=True)

    try:
        result = run_sweep(spec, Path(args.out), report=report, stop_event=stop)
    finally:
        signal.signal(signal.SIGINT, previous)
    if args.json:
        keys = ("trials", "pareto", "hypervolume", "best", "state", "message", "sweep_dir", "objectives", "interrupted")
        print(json.dumps({k: result[k] for k in keys}, indent=2))
    else:
        print(f"Sweep {result['sweep_dir']}: {result['message']}")
        print("Pareto-optimal trials (validation metrics pick them; * marks the compromise nearest the ideal):")
        print(pareto_table(result))
        print(f"Hypervolume {result['hypervolume']:.4f} (of 1; larger is better)")
    if result["state"] == "stopped":
        return 130
    return 0 if any(t["state"] == "completed" for t in result["trials"]) else 1


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m utkface_core``."""
    from utkface_core.data.dataset import DUPLICATE_POLICIES

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
    p.add_argument("--preset", choices=PRESETS, default="fast")
    p.add_argument(
        "--time-budget",
        type=float,
        default=None,
        metavar="SECONDS",
        help="stop after this many seconds (the LR schedule fits it)",
    )
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=None, help="default: the preset's (fast 128, tutorial 64)")
    p.add_argument("--learning-rate", type=float, default=None)
    p.add_argument("--min-age", type=int, default=10)
    p.add_argument("--max-age", type=int, default=65)
    p.add_argument("--loss-weights", default=None, help="age=2,race=1.5,gender=1 or auto")
    p.add_argument("--image-size", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--split",
        choices=SPLIT_METHODS,
        default=None,
        help="default: 'final' (stratified 85/5/10, trains on train+valid) except 'tutorial' for that preset",
    )
    p.add_argument("--strategy", choices=("default", "mirrored"), default="default")
    p.add_argument(
        "--patience",
        type=int,
        default=None,
        help="early-stopping patience in epochs (default 8; off with --time-budget)",
    )
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="evaluate a run's model on its test split or on a folder")
    p.add_argument("run_dir", help="run folder (config.json, split.csv, model.keras)")
    p.add_argument(
        "--data", default=None, metavar="DIR", help="evaluate on every image of this folder instead of the test split"
    )
    p.add_argument("--min-age", type=int, default=None, help="lowest age kept (default: the run's)")
    p.add_argument("--max-age", type=int, default=None, help="highest age kept (default: the run's)")
    p.add_argument("--json", action="store_true", help="print a JSON object")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("predict", help="predict age, gender and race for the faces in images")
    p.add_argument("run_dir", help="run folder (config.json, model.keras)")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files (JPEG, PNG, WebP, ...)")
    p.add_argument("--no-detect", action="store_true", help="images are already cropped faces: skip face detection")
    p.add_argument("--json", action="store_true", help="print JSON: per image a list of faces")
    p.add_argument(
        "--engine",
        choices=("keras", "onnx"),
        default="keras",
        help="run the model in Keras (default) or in ONNX Runtime (converted and checked against Keras)",
    )
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("export", help="export a run's model as ONNX, TensorFlow Lite or .keras, checked against Keras")
    p.add_argument("run_dir", help="run folder (model.keras) or a .keras file")
    p.add_argument("--format", choices=("onnx", "tflite", "keras"), default="onnx", help="file format (default onnx)")
    p.add_argument(
        "--out",
        default=None,
        metavar="PATH",
        help="file or existing folder to write (default: <run name>.<format> in the current folder)",
    )
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("sweep", help="train one run per loss-weight setting and print the Pareto set")
    p.add_argument("--data", required=True, help="a UTKFace folder, or 'demo' for the synthetic demo set")
    p.add_argument(
        "--out", required=True, metavar="SWEEP_DIR", help="sweep folder (run the same command again to resume)"
    )
    p.add_argument(
        "--strategy",
        choices=("grid", "optuna", "auto"),
        default="grid",
        help="grid: even cover of the weight simplex; optuna: multi-objective search; auto: learned weights",
    )
    p.add_argument("--trials", type=int, default=9, help="weight settings to train (default 9)")
    p.add_argument("--trial-budget", type=float, default=None, metavar="SECONDS", help="wall-clock budget per trial")
    p.add_argument("--epochs", type=int, default=None, help="epochs per trial (a cap under --trial-budget)")
    p.add_argument("--min-age", type=int, default=10)
    p.add_argument("--max-age", type=int, default=65)
    p.add_argument("--preset", default="fast", help="training preset (default fast)")
    p.add_argument("--image-size", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--learning-rate", type=float, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--split",
        choices=("tutorial", "stratified", "select"),
        default="tutorial",
        help="split of every trial (default tutorial: 49/21/30); trials are picked on its valid part",
    )
    p.add_argument("--no-augment", action="store_true", help="train trials without data augmentation")
    p.add_argument("--sampler", choices=("tpe", "nsga2"), default="tpe", help="optuna strategy: sampler (default tpe)")
    p.add_argument("--tune-lr", action="store_true", help="optuna strategy: also search the learning rate")
    p.add_argument("--with-auto", action="store_true", help="add the learned-weights (Auto) baseline as one more trial")
    p.add_argument(
        "--with-tutorial", action="store_true", help="add the tutorial's fixed 2/1/1.5 weights as one more trial"
    )
    p.add_argument("--min-weight", type=float, default=0.05, help="smallest fraction any head gets (default 0.05)")
    p.add_argument("--storage", default=None, metavar="URL", help="Optuna storage URL (default: SQLite in SWEEP_DIR)")
    p.add_argument("--backend", choices=("local", "ray"), default="local", help="run trials here or as Ray tasks")
    p.add_argument(
        "--ray-address", default=None, metavar="A", help="'auto', ray://HOST:10001, or none for a local Ray cluster"
    )
    p.add_argument("--trial-cpus", type=float, default=1.0, help="ray: CPUs per trial (default 1)")
    p.add_argument("--trial-gpus", type=float, default=0.0, help="ray: GPUs per trial (default 0)")
    p.add_argument("--max-concurrent", type=int, default=None, help="ray: trials at once (default: what fits)")
    p.add_argument("--json", action="store_true", help="print JSON: trials, pareto (indices), hypervolume")
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("worker", help="run one job folder (started by the app; training, evaluation or sweep)")
    p.add_argument("job_dir", help="job folder holding job.json")
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("standby", help="a worker started ahead of its job (started by the app; see standby.py)")
    p.add_argument("--lock-fd", type=int, required=True, help="the inherited descriptor holding the pool lock")
    p.add_argument("--server", type=int, required=True, help="pid of the server: an idle standby ends with it")
    p.set_defaults(func=cmd_standby)
    return parser


def cmd_worker(args: argparse.Namespace) -> int:
    from utkface_core.worker import main as worker_main

    return worker_main(args.job_dir)


def cmd_standby(args: argparse.Namespace) -> int:
    from utkface_core.standby import main as standby_main

    return standby_main(args.lock_fd, args.server)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; return the exit code (2 with a one-line message on bad input)."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, NotADirectoryError, PermissionError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
