"""Which point estimate of a DLDL age head: the expectation of its bins or their median? Same model, same test rows.

    python benchmarks/age_estimate.py RUN_DIR [--data DIR]

RUN_DIR is a run trained with ``age_loss="dldl"`` (the ``fast`` preset), e.g. one that
``benchmarks/time_to_accuracy.py`` keeps. The run's own data, age range and split are used (``--data`` overrides
the data folder, e.g. ``$UTKFACE_DIR``). Prints the test MAE of the expectation, the discrete median (the first
bin whose cumulative probability reaches one half), the median the saved network outputs (``age``), and each
with test-time flip averaging (the bin probabilities of the image and its mirror averaged first), plus gender
and race accuracy for reference. No timing: this is about accuracy only.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path, help="a run folder with a DLDL model (model.keras, config.json)")
    parser.add_argument("--data", default=None, help="the data folder (default: the run's own data source)")
    args = parser.parse_args()

    import keras

    from utkface_core import runs
    from utkface_core.workflow import prepare_training_data

    config = runs.read_config(args.run_dir)
    if not isinstance(config, dict):
        parser.error(f"{args.run_dir} holds no readable config.json")
    source = args.data or (config.get("data") or {}).get("source") or config.get("data_source")
    if not source:
        parser.error("the run does not say its data folder: pass --data DIR")
    data = prepare_training_data(
        source,
        image_size=int(config["image_size"]),
        min_age=config["min_age"],
        max_age=config["max_age"],
        seed=config["seed"],
        split_method=config["split_method"],
    )
    test = np.flatnonzero(data.split.to_numpy() == "test")
    images = np.asarray(data.images[test]).astype("float32")
    truth = data.frame.iloc[test]
    ages = truth["age"].to_numpy("float64")
    net = keras.saving.load_model(runs.model_path(args.run_dir), compile=False)
    try:
        dist_layer = net.get_layer("age_dist")
    except ValueError:
        parser.error("this model has no DLDL age head (layer age_dist): train it with age_loss='dldl'")
    probe = keras.Model(net.input, {"age_dist": dist_layer.output, **net.output})
    low, high = float(config["min_age"]), float(config["max_age"])
    print(f"run {args.run_dir}  test images: {len(test):,}  ages {low:g}-{high:g}")
    for name, views in (("plain", [images]), ("flip ", [images, images[:, :, ::-1]])):
        outs = [probe.predict(v, batch_size=512, verbose=0) for v in views]
        probs = np.mean([o["age_dist"] for o in outs], axis=0).astype("float64")
        centres = np.linspace(low, high, probs.shape[1])
        expectation = probs @ centres
        median = centres[np.argmax(np.cumsum(probs, axis=1) >= 0.5, axis=1)]
        output = np.mean([o["age"][:, 0] for o in outs], axis=0)
        gender = np.mean([o["gender"] for o in outs], axis=0).argmax(1)
        race = np.mean([o["race"] for o in outs], axis=0).argmax(1)
        figures = {
            "mae_expectation": np.mean(np.abs(expectation - ages)),
            "mae_median": np.mean(np.abs(median - ages)),
            "mae_age_output": np.mean(np.abs(output - ages)),
            "gender_accuracy": np.mean(gender == truth["gender"].to_numpy()),
            "race_accuracy": np.mean(race == truth["race"].to_numpy()),
        }
        print(f"{name}  " + json.dumps({k: round(float(v), 4) for k, v in figures.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
