"""Time to accuracy of the `fast` preset on 2 CPU cores, against the tutorial's recipe measured in the same run.

    python benchmarks/time_to_accuracy.py [--data DIR] [--budget 600] [--baseline-batches 6]

On $UTKFACE_DIR (ages 10-65, the tutorial's 70/30 then 70/30 split, seed 0):
- baseline: the tutorial network (198 px, RMSprop) fed by a tutorial-style generator that opens and
  resizes every JPEG with PIL for every batch, timed over a few batches (images/s);
- fast: the `fast` preset trained by the product's engine for --budget seconds (decoded-image cache,
  tf.data pipeline, schedule fitted to the budget).
Prints images/s of both and their ratio, the training time at which validation first reached the
tutorial's published test results (gender 87.5 %, race 71.7 %, age MAE 9 years), and the final
held-out test metrics of the best model.
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
from PIL import Image  # noqa: E402

TUTORIAL = {"gender_accuracy": 0.875, "race_accuracy": 0.717, "age_mae": 9.0}


def tutorial_generator(frame, batch_size: int = 32, size: int = 198, max_age: float = 116.0):
    """The tutorial's data feed: decode and resize every image with PIL for every batch."""
    while True:
        for start in range(0, len(frame) - batch_size + 1, batch_size):
            rows = frame.iloc[start : start + batch_size]
            images = np.stack([np.asarray(Image.open(p).convert("RGB").resize((size, size))) / 255.0 for p in rows["path"]])
            ages = rows["age"].to_numpy() / max_age
            genders = np.eye(2)[rows["gender"].to_numpy()]
            races = np.eye(5)[rows["race"].to_numpy()]
            yield images.astype("float32"), {"age": ages, "gender": genders, "race": races}


def baseline_images_per_s(frame, batches: int) -> float:
    """Images/s of the tutorial network trained with the tutorial generator (first batch excluded: tracing)."""
    import keras

    inputs = keras.Input((198, 198, 3))
    x = inputs
    for i, filters in enumerate((32, 64, 96, 128, 160, 192)):
        x = keras.layers.Conv2D(filters, 3, activation="relu")(x)
        if i:
            x = keras.layers.BatchNormalization()(x)
            x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.GlobalMaxPooling2D()(x)
    heads = {
        "age": keras.layers.Dense(1, activation="sigmoid", name="age")(keras.layers.Dense(128, activation="relu")(x)),
        "race": keras.layers.Dense(5, activation="softmax", name="race")(keras.layers.Dense(128, activation="relu")(x)),
        "gender": keras.layers.Dense(2, activation="softmax", name="gender")(keras.layers.Dense(128, activation="relu")(x)),
    }
    model = keras.Model(inputs, heads)
    model.compile(
        optimizer="rmsprop",
        loss={"age": "mse", "race": "categorical_crossentropy", "gender": "categorical_crossentropy"},
        loss_weights={"age": 2.0, "race": 1.5, "gender": 1.0},
    )
    gen = tutorial_generator(frame.sample(frac=1.0, random_state=0))
    x, y = next(gen)
    model.train_on_batch(x, y)
    start = time.perf_counter()
    for _ in range(batches):
        x, y = next(gen)
        model.train_on_batch(x, y)
    return batches * 32 / (time.perf_counter() - start)


def first_reach(history, key: str, target: float, higher: bool) -> float | None:
    col = f"val_{key}"
    if col not in history:
        return None
    hit = history[history[col] >= target] if higher else history[history[col] <= target]
    return None if hit.empty else float(hit["elapsed_s"].iloc[0])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=os.environ.get("UTKFACE_DIR"), help="UTKFace folder (default $UTKFACE_DIR)")
    parser.add_argument("--budget", type=float, default=600.0, help="training seconds for the fast preset (default 600)")
    parser.add_argument("--baseline-batches", type=int, default=6)
    parser.add_argument("--out", default=None, help="run folder to keep (default: a temporary one)")
    parser.add_argument("--preset", default="fast")
    args = parser.parse_args()
    if not args.data:
        parser.error("set UTKFACE_DIR or pass --data")

    from utkface_core import runs
    from utkface_core.config import TrainConfig
    from utkface_core.workflow import prepare_training_data, run_training

    # The schedule is fitted to the budget, so early stopping would cut it before the learning rate decays.
    config = TrainConfig(preset=args.preset, time_budget_s=args.budget, epochs=1000, min_age=10, max_age=65, seed=0,
                         early_stopping_patience=None)
    t0 = time.perf_counter()
    prepared = prepare_training_data(args.data, image_size=config.resolved_image_size(), min_age=10, max_age=65, seed=0)
    prep_s = time.perf_counter() - t0
    train_frame = prepared.frame[prepared.split == "train"]
    n_train = len(train_frame)
    print(f"data: {args.data}  ages 10-65: {len(prepared.frame):,} images  train/valid/test: "
          + "/".join(str(int((prepared.split == s).sum())) for s in ("train", "valid", "test"))
          + f"  (index + decode cache {prep_s:.1f} s)  cores: {os.cpu_count()}", flush=True)

    base_ips = baseline_images_per_s(train_frame, args.baseline_batches)
    print(f"baseline (tutorial net, 198 px, PIL generator): {base_ips:.1f} images/s "
          f"-> its 10 epochs would take {10 * n_train / base_ips / 60:.0f} min", flush=True)

    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="utkface-tta-")) / "run"
    result = run_training(config, args.data, out)
    history = runs.read_history(out)
    metrics = result.metrics or {}
    fast_ips = float(metrics.get("train_images_per_s") or 0.0)
    print(f"{args.preset} ({config.resolved_image_size()} px): {fast_ips:.1f} images/s  ratio vs baseline: {fast_ips / base_ips:.1f}x")
    print(f"state: {result.state} ({result.message}); epochs: {metrics.get('epochs_run')}, wall {metrics.get('wall_time_s')} s")
    reach = {
        "gender_accuracy": first_reach(history, "gender_accuracy", TUTORIAL["gender_accuracy"], True),
        "race_accuracy": first_reach(history, "race_accuracy", TUTORIAL["race_accuracy"], True),
        "age_mae": first_reach(history, "age_mae", TUTORIAL["age_mae"], False),
    }
    for key, seconds in reach.items():
        print(f"  validation reached tutorial {key} {TUTORIAL[key]}: " + (f"after {seconds:.0f} s of training" if seconds is not None else "not reached"))
    all_three = None if None in reach.values() else max(reach.values())
    print("  all three tutorial results on validation: " + (f"after {all_three:.0f} s" if all_three is not None else "not reached"))
    print("held-out test (best model): " + json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in metrics.items()
                                                        if k in ("n", "age_mae", "gender_accuracy", "race_accuracy")}))
    print(f"run folder: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
