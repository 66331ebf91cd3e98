"""Keras JAX backend vs TensorFlow backend: images/s of the `fast` network's ``model.fit`` on this CPU (issue 9).

    python benchmarks/keras_backend.py [--python-jax PATH] [--python-tf PATH] [--seconds S] [--pairs N]

Each run is a subprocess with ``KERAS_BACKEND`` set: TensorFlow with this repo's venv (``.venv/bin/python``), JAX
with ``--python-jax`` (default ``/tmp/jaxvenv/bin/python``; jax is not a project dependency, see the message printed
when it is missing). Both train the same network, ``build_model("fast", min_age=10, max_age=65)`` imported from the
repo (it imports keras and numpy only), on the same seeded synthetic in-memory data (numpy arrays, batch 128) with
the `fast` preset's losses expressed as a plain ``compile`` loss dict (the project's ``MultiTaskModel`` imports
TensorFlow): DLDL age head = L1 on age scaled to 0..1 + 0.25 x KL to a Gaussian (sigma 2 y) over the age bins,
categorical cross-entropy with label smoothing 0.05, loss weights age 2 / gender 1 / race 1.5, AdamW at the preset's
rate (4.2e-3 at b128) and weight decay. No augmentation, no validation, no per-batch callbacks: the train step alone
(JAX's best case: nothing forces a host sync per step). The first epoch is a warm-up (tracing / XLA compilation,
reported separately); images/s are then timed over whole epochs for ``--seconds``. Runs are interleaved in pairs
(TF, JAX, then JAX, TF, ...). Finally, the network trained under JAX is saved to ``.keras`` and loaded under the
TensorFlow backend without custom objects, and its predictions are compared.
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

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PYTHON_JAX = "/tmp/jaxvenv/bin/python"
DEFAULT_PYTHON_TF = str(ROOT / ".venv" / "bin" / "python")
JAX_PIN = "jax[cpu]==0.10.2"  # the newest jax on the registry when this was measured (2026-11-30)
MIN_AGE, MAX_AGE = 10, 65
STEPS_PER_EPOCH = 40
SEED = 0
# Copies of utkface_core/training/lossweights.py's constants (it imports TensorFlow, so the JAX side cannot import
# it); the TensorFlow worker checks that they still agree.
DLDL_SIGMA_YEARS = 2.0
DLDL_KL_WEIGHT = 0.25


def load_average() -> str:
    """Return the 1/5/15-minute load averages as text."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def make_data(n: int, size: int, bins: int, seed: int = SEED):
    """Return seeded synthetic images (n, size, size, 3) float 0..255 and the targets dict of the DLDL model."""
    import numpy as np

    rng = np.random.default_rng(seed)
    images = rng.uniform(0.0, 255.0, size=(n, size, size, 3)).astype("float32")
    ages = rng.integers(MIN_AGE, MAX_AGE + 1, size=(n, 1)).astype("float32")
    gender = np.eye(2, dtype="float32")[rng.integers(0, 2, size=n)]
    race = np.eye(5, dtype="float32")[rng.integers(0, 5, size=n)]
    # The DLDL target as the trainer computes it in-graph (MultiTaskModel.age_distribution), precomputed here.
    span = float(MAX_AGE - MIN_AGE)
    centres = np.linspace(0.0, 1.0, bins, dtype="float32")[None, :]
    unit = (ages - MIN_AGE) / span
    logits = -np.square(centres - unit) / (2.0 * (DLDL_SIGMA_YEARS / span) ** 2)
    dist = np.exp(logits - logits.max(axis=1, keepdims=True))
    dist = (dist / dist.sum(axis=1, keepdims=True)).astype("float32")
    return images, {"age": ages, "age_dist": dist, "gender": gender, "race": race}


def worker(backend: str, seconds: float, out: Path, save: Path | None) -> None:
    """Train the `fast` net under the current KERAS_BACKEND; write images/s and timings as JSON to ``out``."""
    sys.path.insert(0, str(ROOT))
    import keras
    import numpy as np

    from utkface_core.config import TrainConfig
    from utkface_core.training.model import PRESET_SPECS, build_model

    if keras.backend.backend() != backend:
        raise SystemExit(f"worker wanted backend {backend!r} but keras runs {keras.backend.backend()!r}")
    versions = {"keras": keras.__version__, "python": sys.version.split()[0], "numpy": np.__version__}
    if backend == "tensorflow":
        import tensorflow as tf

        from utkface_core.training import lossweights

        versions["tensorflow"] = tf.__version__
        if (lossweights.DLDL_SIGMA_YEARS, lossweights.DLDL_KL_WEIGHT) != (DLDL_SIGMA_YEARS, DLDL_KL_WEIGHT):
            raise SystemExit("benchmarks/keras_backend.py's DLDL constants differ from lossweights.py: update them")
    else:
        import jax

        versions["jax"] = jax.__version__
        versions["jax_devices"] = str(jax.devices())

    config = TrainConfig(preset="fast", min_age=MIN_AGE, max_age=MAX_AGE)
    spec = PRESET_SPECS["fast"]
    batch = int(config.batch_size)
    weights = config.loss_weights
    keras.utils.set_random_seed(SEED)
    net = build_model("fast", min_age=MIN_AGE, max_age=MAX_AGE)
    size = int(net.input_shape[1])
    span = float(net.get_layer("age").scale)
    bins = int(net.get_layer("age_dist").output.shape[-1])
    images, targets = make_data(STEPS_PER_EPOCH * batch, size, bins)
    # The same layers with the bin probabilities as a fourth output, as MultiTaskModel trains them.
    outputs = {name: net.get_layer(name).output for name in ("age", "gender", "race", "age_dist")}
    model = keras.Model(net.inputs, outputs, name="fast_dldl")
    cce = {"label_smoothing": spec.label_smoothing}
    model.compile(
        optimizer=keras.optimizers.AdamW(learning_rate=config.resolved_learning_rate(), weight_decay=spec.weight_decay),
        loss={
            "age": keras.losses.MeanAbsoluteError(),  # in years: weight / span makes it L1 on 0..1
            "age_dist": keras.losses.KLDivergence(),
            "gender": keras.losses.CategoricalCrossentropy(**cce),
            "race": keras.losses.CategoricalCrossentropy(**cce),
        },
        loss_weights={
            "age": weights["age"] / span,
            "age_dist": weights["age"] * DLDL_KL_WEIGHT,
            "gender": weights["gender"],
            "race": weights["race"],
        },
        metrics={"age": ["mae"], "gender": ["accuracy"], "race": ["accuracy"]},
    )

    class Timer(keras.callbacks.Callback):
        # No on_train_batch_end: Keras then dispatches steps without a host sync each (matters for JAX).
        def __init__(self):
            super().__init__()
            self.t_begin = self.t0 = self.t1 = self.c0 = self.c1 = None
            self.batches = 0
            self.epochs = 0
            self.loss: list[float] = []

        def on_train_begin(self, logs=None):
            self.t_begin = time.monotonic()

        def on_train_batch_begin(self, batch, logs=None):
            if self.t0 is None:
                return  # warm-up epoch
            self.batches += 1  # this batch runs even when it is the last one
            if time.monotonic() - self.t0 >= seconds:
                self.model.stop_training = True

        def on_epoch_end(self, epoch, logs=None):
            # Epoch logs arrive as Python floats: every step dispatched so far has finished.
            now, cpu = time.monotonic(), time.process_time()
            self.loss.append(float((logs or {}).get("loss", float("nan"))))
            if self.t0 is None:
                self.t0, self.c0, self.warmup_s = now, cpu, now - self.t_begin
            else:
                self.t1, self.c1 = now, cpu
                self.epochs += 1

    timer = Timer()
    model.fit(images, targets, batch_size=batch, epochs=100_000, shuffle=True, verbose=0, callbacks=[timer])
    wall = timer.t1 - timer.t0
    n = timer.batches * batch
    step_s = wall / timer.batches
    result = {
        "backend": backend,
        "versions": versions,
        "images": n,
        "epochs": timer.epochs,
        "wall_s": wall,
        "images_per_s": n / wall,
        "images_per_cpu_s": n / (timer.c1 - timer.c0),
        "warmup_epoch_s": timer.warmup_s,
        # The warm-up epoch less what its steps cost once compiled: tracing and compilation.
        "compile_s": timer.warmup_s - STEPS_PER_EPOCH * step_s,
        "loss_first_epoch": timer.loss[0],
        "loss_last_epoch": timer.loss[-1],
        "params": int(net.count_params()),
    }
    if save is not None:
        net.save(save)
        probe = images[:16]
        pred = net.predict(probe, verbose=0)
        np.savez(save.with_suffix(".npz"), images=probe, **{k: np.asarray(v) for k, v in pred.items()})
    out.write_text(json.dumps(result))


def check_load(path: Path, out: Path) -> None:
    """Load a ``.keras`` file without custom objects under this backend; write the largest prediction gaps."""
    import keras
    import numpy as np

    net = keras.saving.load_model(path)  # no custom_objects, safe_mode on
    saved = np.load(path.with_suffix(".npz"))
    pred = net.predict(saved["images"], verbose=0)
    gaps = {k: float(np.max(np.abs(np.asarray(pred[k]) - saved[k]))) for k in ("age", "gender", "race")}
    out.write_text(json.dumps({"backend": keras.backend.backend(), "params": int(net.count_params()), "gaps": gaps}))


def run_worker(python: str, backend: str, args: list[str], out: Path) -> dict:
    """Run this file as a worker under ``python`` with KERAS_BACKEND=backend; return its JSON result."""
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(ROOT))
    cmd = [python, str(Path(__file__).resolve()), *args, "--out", str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0 or not out.exists():
        tail = (proc.stderr or proc.stdout)[-3000:]
        raise SystemExit(f"the {backend} run failed (exit {proc.returncode}): {' '.join(cmd)}\n{tail}")
    return json.loads(out.read_text())


def probe_python(python: str, backend: str, code: str) -> str | None:
    """Return the stdout of ``python -c code`` under KERAS_BACKEND=backend, or None when it is missing or fails."""
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="2")
    try:
        proc = subprocess.run([python, "-c", code], env=env, capture_output=True, text=True, timeout=300, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python-jax", default=DEFAULT_PYTHON_JAX, help="interpreter with jax and keras installed")
    parser.add_argument("--python-tf", default=DEFAULT_PYTHON_TF, help="interpreter with tensorflow (the repo venv)")
    parser.add_argument("--seconds", type=float, default=30.0, help="timed seconds per run, after the warm-up epoch")
    parser.add_argument("--pairs", type=int, default=2, help="interleaved TF/JAX pairs")
    parser.add_argument("--worker", choices=("tensorflow", "jax"), help=argparse.SUPPRESS)
    parser.add_argument("--check-load", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--save", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.worker, args.seconds, args.out, args.save)
        return 0
    if args.check_load:
        check_load(args.check_load, args.out)
        return 0
    if args.seconds <= 0 or args.pairs < 1:
        parser.error("need --seconds > 0 and --pairs >= 1")

    tf_keras = probe_python(args.python_tf, "tensorflow", "import tensorflow, keras; print(keras.__version__)")
    if tf_keras is None:
        print(f"error: {args.python_tf} cannot import tensorflow and keras; run `make install` (or pass --python-tf)")
        return 2
    jax_versions = probe_python(args.python_jax, "jax", "import jax, keras; print(jax.__version__, keras.__version__)")
    if jax_versions is None:
        print(
            f"error: {args.python_jax} cannot import jax and keras. jax is not a project dependency; make a separate "
            "venv for it (about 0.7 GB):\n"
            f"  python3.11 -m venv /tmp/jaxvenv && /tmp/jaxvenv/bin/pip install '{JAX_PIN}' keras=={tf_keras} numpy\n"
            "then rerun (or pass --python-jax PATH)."
        )
        return 2

    sys.path.insert(0, str(ROOT))
    from benchmarks.time_to_accuracy import cpu_flags  # AVX-512 flags, or "avx2 (no avx512)"

    print(f"cores: {os.cpu_count()}  CPU flags: {cpu_flags()}  load average at start: {load_average()}")
    print(f"TF side: {args.python_tf} (keras {tf_keras})  JAX side: {args.python_jax} (jax, keras: {jax_versions})")
    print(
        f"the `fast` net, DLDL head, b128, AdamW; {STEPS_PER_EPOCH * 128} synthetic images in memory; "
        f"1 warm-up epoch, then {args.seconds:g} s timed; {args.pairs} interleaved pair(s)",
        flush=True,
    )
    results: dict[str, list[dict]] = {"tensorflow": [], "jax": []}
    pythons = {"tensorflow": args.python_tf, "jax": args.python_jax}
    with tempfile.TemporaryDirectory(prefix="keras-backend-") as tmp:
        saved = Path(tmp) / "jax_net.keras"
        for pair in range(args.pairs):
            order = ("tensorflow", "jax") if pair % 2 == 0 else ("jax", "tensorflow")
            for backend in order:
                cmd = ["--worker", backend, "--seconds", str(args.seconds)]
                cmd += ["--save", str(saved)] if backend == "jax" and pair == 0 else []
                res = run_worker(pythons[backend], backend, cmd, Path(tmp) / f"{backend}-{pair}.json")
                results[backend].append(res)
                print(
                    f"pair {pair + 1} {backend:10s} {res['images_per_s']:8.1f} images/s  "
                    f"{res['images_per_cpu_s']:7.1f} images/CPU-s  ({res['images']} images in {res['wall_s']:.1f} s, "
                    f"{res['epochs']} epochs)  warm-up epoch {res['warmup_epoch_s']:.1f} s, of which compile "
                    f"~{res['compile_s']:.1f} s  loss {res['loss_first_epoch']:.3f} -> {res['loss_last_epoch']:.3f}  "
                    f"load {load_average()}",
                    flush=True,
                )
        loaded = run_worker(args.python_tf, "tensorflow", ["--check-load", str(saved)], Path(tmp) / "load.json")

    tf_runs, jax_runs = results["tensorflow"], results["jax"]
    print()
    print("versions:", json.dumps(tf_runs[0]["versions"]), json.dumps(jax_runs[0]["versions"]))
    for key, unit in (("images_per_s", "images/s"), ("images_per_cpu_s", "images/CPU-s")):
        ratios = [j[key] / t[key] for t, j in zip(tf_runs, jax_runs, strict=True)]
        tf_med = statistics.median(r[key] for r in tf_runs)
        jax_med = statistics.median(r[key] for r in jax_runs)
        print(
            f"{unit:13s} TF median {tf_med:8.1f}  JAX median {jax_med:8.1f}  JAX/TF {jax_med / tf_med:.2f}x  "
            f"(per pair: {', '.join(f'{r:.2f}x' for r in ratios)})"
        )
    for key, label in (("warmup_epoch_s", "warm-up epoch"), ("compile_s", "compile/trace (estimate)")):
        tf_med = statistics.median(r[key] for r in tf_runs)
        jax_med = statistics.median(r[key] for r in jax_runs)
        print(f"{label:26s} TF median {tf_med:6.1f} s  JAX median {jax_med:6.1f} s")
    gaps = ", ".join(f"{k} {v:.2g}" for k, v in loaded["gaps"].items())
    print(
        f"save/load: the net trained under JAX saved to .keras loads under {loaded['backend']} without custom objects "
        f"({loaded['params']} params); max |prediction gap| {gaps}"
    )
    print(f"load average at the end: {load_average()}  (other processes share the cores: compare ratios)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
