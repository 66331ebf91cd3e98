"""Quality levers of issue 9, one at a time: accuracy per epoch on validation, and test with and without flip TTA.

    python benchmarks/levers.py VARIANT[,VARIANT...] [--epochs 24] [--split stratified] [--data DIR]

A variant is ``+``-joined tokens: ``mae`` | ``dldl`` | ``dldl:W`` (KL weight W) | ``mixup`` | ``mixup:ALPHA`` |
``seedN``; e.g. ``mae,dldl:0.25,mixup:0.2,dldl:0.25+seed1``. Each trains the `fast` preset with the product's
engine (``trainer.train``, early stopping off) on $UTKFACE_DIR (ages 10-65; the `stratified` split: 49/21/30,
validation 3,088 images, never trained on), then prints per-epoch validation metrics, images per CPU-second of this
process (robust to other processes, unlike wall time), and test metrics plain and with flip averaging.
Accuracy per epoch does not depend on the machine's load; compare images/CPU-s only between runs made back to back.
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

import numpy as np  # noqa: E402


def parse_variant(variant: str) -> tuple[dict, float]:
    """Return (TrainConfig overrides, DLDL KL weight) for a variant string."""
    overrides: dict = {"age_loss": "mae", "mixup_alpha": 0.0, "seed": 0}
    kl_weight = 0.25
    for token in variant.split("+"):
        name, _, value = token.partition(":")
        if name == "mae":
            overrides["age_loss"] = "mae"
        elif name == "dldl":
            overrides["age_loss"] = "dldl"
            kl_weight = float(value) if value else kl_weight
        elif name == "mixup":
            overrides["mixup_alpha"] = float(value) if value else 0.2
        elif name.startswith("seed") and name[4:].isdigit():
            overrides["seed"] = int(name[4:])
        else:
            raise SystemExit(f"unknown token {token!r} in variant {variant!r}")
    return overrides, kl_weight


def test_metrics(net, data, rows: np.ndarray, flip: bool) -> dict:
    from utkface_core.inference.prediction import predict_arrays

    out = predict_arrays(net, np.asarray(data.images[rows]), flip=flip)
    sub = data.frame.iloc[rows]
    race_true, race = sub["race"].to_numpy(), out["race"].argmax(1)
    f1 = [
        2.0 * np.sum((race == c) & (race_true == c)) / max(1, np.sum(race == c) + np.sum(race_true == c))
        for c in range(5)
    ]
    age = sub["age"].to_numpy(float)
    err = np.abs(out["age"] - age)
    return {
        "gender": round(float(np.mean(out["gender"].argmax(1) == sub["gender"].to_numpy())) * 100, 2),
        "race": round(float(np.mean(race == race_true)) * 100, 2),
        "age_mae": round(float(err.mean()), 3),
        "age_mae_over_50": round(float(err[age > 50].mean()), 3),
        "race_macro_f1": round(float(np.mean(f1)), 4),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("variants", help="comma-separated variants, e.g. mae,dldl:0.25")
    parser.add_argument("--epochs", type=int, default=24)
    parser.add_argument("--split", default="stratified")
    parser.add_argument("--data", default=os.environ.get("UTKFACE_DIR"), help="UTKFace folder (default $UTKFACE_DIR)")
    parser.add_argument("--out", default=None, help="folder to keep the runs in (default: a temporary one)")
    args = parser.parse_args()
    if not args.data:
        parser.error("set UTKFACE_DIR or pass --data")
    variants = [(v, *parse_variant(v)) for v in args.variants.split(",")]

    from utkface_core import runs
    from utkface_core.config import TrainConfig
    from utkface_core.inference.prediction import load_model
    from utkface_core.labels import SPLITS
    from utkface_core.training import lossweights, trainer
    from utkface_core.workflow import prepare_training_data

    data = prepare_training_data(args.data, image_size=48, min_age=10, max_age=65, seed=0, split_method=args.split)
    labels = np.asarray(data.split).astype(str)
    test, n_train = np.flatnonzero(labels == "test"), int((labels == "train").sum())
    print(f"split {args.split}: " + json.dumps({s: int((labels == s).sum()) for s in SPLITS}))
    out_root = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="utkface-levers-"))
    for name, overrides, kl_weight in variants:
        lossweights.DLDL_KL_WEIGHT = kl_weight
        config = TrainConfig(
            preset="fast",
            epochs=args.epochs,
            min_age=10,
            max_age=65,
            split_method=args.split,
            early_stopping_patience=None,
            **overrides,
        )
        run_dir = out_root / f"{name.replace(':', '_')}-{int(time.time())}"
        cpu0 = time.process_time()
        result = trainer.train(config, data.images, data.frame, data.split, run_dir)
        cpu = time.process_time() - cpu0
        history = runs.read_history(run_dir)
        print(
            f"== {name}: {result.state} ({result.message}); images/CPU-s {n_train * args.epochs / cpu:.0f}; "
            f"load average {os.getloadavg()[0]:.1f}"
        )
        for i, row in history.iterrows():
            print(
                f"   epoch {i + 1}: val gender {row['val_gender_accuracy']:.4f} race {row['val_race_accuracy']:.4f} "
                f"MAE {row['val_age_mae']:.3f}"
            )
        net = load_model(run_dir / runs.MODEL_FILE)
        print("   test plain:", json.dumps(test_metrics(net, data, test, False)))
        print("   test flip :", json.dumps(test_metrics(net, data, test, True)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
