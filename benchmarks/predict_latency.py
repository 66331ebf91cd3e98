"""Warm latency of one-photo prediction with face detection, against a naive baseline measured in the same run.

    python benchmarks/predict_latency.py [--run RUN_DIR | --preset fast|tutorial] [--repeats 30] [--memory 1000]

Without --run, an untrained model of the preset's architecture ("fast" by default) is built (weights do not change
latency). The photo is 640x480 with one face: a real UTKFace image pasted into a background when
UTKFACE_DIR is set, else a drawn face. A second, phone-sized photo (2048x1536) shows the effect of
downscaling before detection. The baseline is what a straightforward implementation does: mtcnn's
own ``MTCNN().detect_faces`` on the full-resolution photo, a box crop, and ``model.predict``.
``--memory N`` also runs N predictions and prints the process RSS before and after.
The engine section runs the same model in Keras (the traced ``tf.function`` of ``prediction.run_model``) and in
ONNX Runtime (converted with tf2onnx, as ``predict --engine onnx`` does): model-only latency for one face (the
face and its mirror, batch 2) and for a batch of 64, and ``predict_image`` end to end on the 640x480 photo.
``--engines-only`` skips the MTCNN baseline.
``--alignment N`` (needs UTKFACE_DIR) pastes N UTKFace crops, randomly scaled 0.8-1.6x and rotated
+-12 degrees, into 640x480 photos, re-crops them with detect_faces + align_face and prints the mean
absolute pixel error and correlation against the originals (and for a plain box crop).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
from PIL import Image, ImageDraw, ImageFilter  # noqa: E402

from utkface_core import runs  # noqa: E402
from utkface_core.inference import export, prediction  # noqa: E402

REFERENCE_FACE = "34_0_0_20170117190336724.jpg.chip.jpg"


def drawn_face(size: int = 220) -> np.ndarray:
    """A blurred cartoon face MTCNN detects (about 0.96 confidence): used when UTKFace is not available."""
    img = Image.new("RGB", (size, size), (90, 70, 60))
    draw = ImageDraw.Draw(img)
    s = size / 200
    draw.rectangle([75 * s, 150 * s, 125 * s, 200 * s], fill=(200, 150, 120))  # neck
    draw.ellipse([32 * s, 5 * s, 168 * s, 120 * s], fill=(50, 35, 25))  # hair
    draw.ellipse([40 * s, 25 * s, 160 * s, 185 * s], fill=(224, 172, 140))  # face
    for cx in (75, 125):
        draw.ellipse([(cx - 15) * s, 72 * s, (cx + 15) * s, 88 * s], fill=(250, 250, 250))
        draw.ellipse([(cx - 7) * s, 73 * s, (cx + 7) * s, 87 * s], fill=(60, 40, 30))
        draw.line([(cx - 18) * s, 62 * s, (cx + 16) * s, 60 * s], fill=(70, 50, 40), width=max(1, int(5 * s)))
    draw.polygon([(100 * s, 90 * s), (90 * s, 125 * s), (110 * s, 125 * s)], fill=(200, 140, 110))
    draw.ellipse([78 * s, 140 * s, 122 * s, 156 * s], fill=(170, 70, 70))
    return np.asarray(img.filter(ImageFilter.GaussianBlur(2 * s)))


def face_image() -> tuple[np.ndarray, str]:
    root = os.environ.get("UTKFACE_DIR")
    if root and Path(root).is_dir():
        path = Path(root) / REFERENCE_FACE
        if not path.is_file():
            path = sorted(p for p in Path(root).iterdir() if p.name.endswith(".jpg"))[0]
        face = Image.open(path).convert("RGB").resize((220, 220), Image.Resampling.BILINEAR)
        return np.asarray(face), f"UTKFace {path.name}"
    return drawn_face(220), "drawn face (UTKFACE_DIR not set)"


def photo(width: int, height: int, face: np.ndarray) -> np.ndarray:
    """A background gradient with seeded noise and the face pasted (scaled with the photo) left of centre."""
    rng = np.random.default_rng(0)
    ramp = np.linspace(60, 190, width, dtype=np.float32)
    canvas = np.repeat(ramp[None, :, None], height, axis=0).repeat(3, axis=2) + rng.normal(0, 8, (height, width, 3))
    canvas = np.clip(canvas, 0, 255).astype(np.uint8)
    side = int(face.shape[0] * height / 480)
    scaled = np.asarray(Image.fromarray(face).resize((side, side), Image.Resampling.BILINEAR))
    top, left = (height - side) // 2, int(width * 0.3)
    canvas[top : top + side, left : left + side] = scaled
    return canvas


def tiny_model(size: int = 64):
    import keras
    from keras import layers

    inputs = keras.Input((size, size, 3))
    x = layers.Rescaling(1 / 255.0)(inputs)
    for filters in (32, 64, 128):
        x = layers.Conv2D(filters, 3, strides=2, padding="same", activation="relu")(x)
    x = layers.GlobalAveragePooling2D()(x)
    outputs = {
        "age": layers.Rescaling(116.0, name="age")(layers.Dense(1, activation="sigmoid")(x)),
        "gender": layers.Dense(2, activation="softmax", name="gender")(x),
        "race": layers.Dense(5, activation="softmax", name="race")(x),
    }
    return keras.Model(inputs, outputs)


def load(run_dir: str | None, preset: str):
    """Return (model, image_size, age_mae, description)."""
    if run_dir:
        run = Path(run_dir)
        config = runs.read_config(run, require=("image_size",))
        mae = (runs.read_metrics(run) or {}).get("age_mae")
        model = prediction.load_model_cached(runs.model_path(run))
        return model, int(config["image_size"]), mae, f"run {run}"
    try:
        from utkface_core.training.model import build_model

        model = build_model(preset)
        return model, prediction.model_input_size(model), None, f"untrained build_model({preset!r})"
    except ImportError:
        return tiny_model(), 64, None, "untrained tiny functional model"


def rss_mib() -> float:
    with open("/proc/self/statm") as fh:
        pages = int(fh.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def timed(fn, repeats: int, warmup: int = 3) -> list[float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return times


def summary(times: list[float]) -> tuple[float, float]:
    ordered = sorted(times)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]


def naive_predict(detector, model, image: np.ndarray, size: int):
    faces = detector.detect_faces(image)
    crops = []
    for face in faces:
        x, y, w, h = face["box"]
        crop = Image.fromarray(image).crop((x, y, x + w, y + h)).resize((size, size))
        arr = np.asarray(crop)
        crops += [arr, arr[:, ::-1]]
    if crops:
        model.predict(np.stack(crops).astype(np.float32), verbose=0)
    return faces


def onnx_engine(run_dir: str | None, model):
    """Return (OnnxModel, per-head max abs difference from Keras) for the benchmarked model."""
    if run_dir:
        result = export.export_model(runs.model_path(run_dir), "onnx")
        return prediction.OnnxModel(result.data), result.max_abs_diff
    data = export.to_onnx(model)
    return prediction.OnnxModel(data), export.parity(model, data, "onnx")


def interleaved(first, second, repeats: int, warmup: int = 3) -> tuple[list[float], list[float]]:
    """Time two calls alternately, so that both see the same load on a shared machine; return ms lists."""
    for _ in range(warmup):
        first(), second()
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeats):
        for fn, out in ((first, times[0]), (second, times[1])):
            start = time.perf_counter()
            fn()
            out.append((time.perf_counter() - start) * 1000)
    return times


def engine_comparison(model, onnx_model, size: int, image: np.ndarray, mae, repeats: int) -> None:
    """Print Keras vs ONNX Runtime latency: model only (batch 2 and 64) and predict_image end to end."""
    rng = np.random.default_rng(0)
    cases = []
    for batch in (2, 64):
        images = rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8)
        cases.append(
            (
                f"model only, batch {batch}",
                lambda im=images: prediction.run_model(model, im, size),
                lambda im=images: prediction.run_model(onnx_model, im, size),
            )
        )
    cases.append(
        (
            "predict_image 640x480",
            lambda: prediction.predict_image(model, image, image_size=size, age_mae=mae),
            lambda: prediction.predict_image(onnx_model, image, image_size=size, age_mae=mae),
        )
    )
    print(
        f"engines (median of {repeats}, calls alternated): Keras tf.function vs ONNX Runtime {onnx_runtime_version()}"
    )
    for name, keras_fn, onnx_fn in cases:
        keras_times, onnx_times = interleaved(keras_fn, onnx_fn, repeats)
        (k, kp), (o, op) = summary(keras_times), summary(onnx_times)
        print(
            f"  {name:24s} keras {k:8.2f} ms (p95 {kp:7.2f})  onnx {o:8.2f} ms (p95 {op:7.2f})  keras/onnx x{k / o:.2f}"
        )


def onnx_runtime_version() -> str:
    import onnxruntime

    return onnxruntime.__version__


def alignment_check(count: int) -> None:
    """Print how closely detect_faces + align_face reproduce real UTKFace crops pasted into photos."""
    import random

    from utkface_core.inference import detection

    root = os.environ.get("UTKFACE_DIR")
    if not root or not Path(root).is_dir():
        print("alignment: skipped, UTKFACE_DIR is not set")
        return
    files = sorted(p for p in Path(root).iterdir() if p.name.endswith(".jpg"))
    # Seed 0's first 300 picks were used to measure the template; evaluate on the next ones.
    picks = random.Random(0).sample(files, 300 + count)[300:]
    rng = np.random.default_rng(1)
    scores: dict[str, list[tuple[float, float]]] = {"align_face": [], "box crop": []}
    missed = 0
    for path in picks:
        original = np.asarray(Image.open(path).convert("RGB"))
        scale, angle = rng.uniform(0.8, 1.6), np.radians(rng.uniform(-12, 12))
        cx, cy = rng.uniform(200, 440), rng.uniform(180, 300)
        rot = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        forward = np.vstack([np.hstack([rot, (np.array([cx, cy]) - rot @ [100.0, 100.0])[:, None]]), [0, 0, 1]])
        coeffs = tuple(np.linalg.inv(forward)[:2].ravel())
        layer = np.asarray(
            Image.fromarray(original).transform((640, 480), Image.Transform.AFFINE, coeffs, Image.Resampling.BILINEAR)
        )
        mask = (
            np.asarray(
                Image.new("L", (200, 200), 255).transform(
                    (640, 480), Image.Transform.AFFINE, coeffs, Image.Resampling.BILINEAR
                )
            )[..., None]
            / 255.0
        )
        background = np.clip(rng.uniform(60, 200, 3) + rng.normal(0, 10, (480, 640, 3)), 0, 255)
        canvas = (layer * mask + background * (1 - mask)).astype(np.uint8)
        faces = detection.detect_faces(canvas)
        if not faces:
            missed += 1
            continue
        face = min(faces, key=lambda f: np.hypot(f.box[0] + f.box[2] / 2 - cx, f.box[1] + f.box[3] / 2 - cy))
        x, y, w, h = face.box
        crops = {
            "align_face": detection.align_face(canvas, face, 200),
            "box crop": np.asarray(Image.fromarray(canvas).crop((x, y, x + w, y + h)).resize((200, 200))),
        }
        for name, crop in crops.items():
            a, b = crop.astype(float).ravel(), original.astype(float).ravel()
            scores[name].append((float(np.abs(a - b).mean()), float(np.corrcoef(a, b)[0, 1])))
    print(f"alignment: {len(picks) - missed} of {len(picks)} UTKFace crops re-detected")
    for name, values in scores.items():
        arr = np.array(values)
        print(
            f"  {name:10s} mean abs error {arr[:, 0].mean():5.1f} grey levels (median {np.median(arr[:, 0]):.1f}), "
            f"correlation {arr[:, 1].mean():.3f} (median {np.median(arr[:, 1]):.3f})"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", help="a training run folder (config.json + model.keras); default: untrained model")
    parser.add_argument(
        "--preset", default="fast", help="architecture of the untrained model without --run (fast or tutorial)"
    )
    parser.add_argument("--repeats", type=int, default=30, help="timed predictions per case (default 30)")
    parser.add_argument("--baseline-repeats", type=int, default=10, help="timed baseline calls per case (default 10)")
    parser.add_argument("--memory", type=int, default=0, help="also run N predictions and report RSS (e.g. 1000)")
    parser.add_argument(
        "--alignment", type=int, default=0, help="also check align_face on N real UTKFace crops (e.g. 100)"
    )
    parser.add_argument(
        "--engines-only", action="store_true", help="only compare Keras and ONNX Runtime (no MTCNN baseline)"
    )
    args = parser.parse_args(argv)

    from mtcnn import MTCNN

    model, size, mae, what = load(args.run, args.preset)
    face, source = face_image()
    print(f"model: {what}, input {size}px; face: {source}; CPUs: {os.cpu_count()}")
    naive_detector = MTCNN()
    cases = [("640x480", photo(640, 480, face)), ("2048x1536", photo(2048, 1536, face))]
    onnx_model, diffs = onnx_engine(args.run, model)
    print("ONNX vs Keras, max abs difference per head: " + ", ".join(f"{k} {v:.2g}" for k, v in diffs.items()))
    engine_comparison(model, onnx_model, size, cases[0][1], mae, args.repeats)
    for name, image in [] if args.engines_only else cases:
        result = prediction.predict_image(model, image, image_size=size, age_mae=mae)
        naive_faces = naive_predict(naive_detector, model, image, size)
        fast = timed(lambda im=image: prediction.predict_image(model, im, image_size=size, age_mae=mae), args.repeats)
        slow = timed(lambda im=image: naive_predict(naive_detector, model, im, size), args.baseline_repeats, warmup=2)
        (fm, fp), (sm, sp) = summary(fast), summary(slow)
        print(
            f"{name}: faces found {len(result.faces)} (baseline {len(naive_faces)})\n"
            f"  predict_image     median {fm:7.1f} ms  p95 {fp:7.1f} ms  (n={len(fast)})\n"
            f"  naive baseline    median {sm:7.1f} ms  p95 {sp:7.1f} ms  (n={len(slow)})\n"
            f"  speed-up (median) x{sm / fm:.1f}"
        )
    if args.alignment > 0:
        alignment_check(args.alignment)
    if args.memory > 0:
        image = cases[0][1]
        for _ in range(20):
            prediction.predict_image(model, image, image_size=size)
        before = rss_mib()
        start = time.perf_counter()
        for _ in range(args.memory):
            prediction.predict_image(model, image, image_size=size)
        elapsed = time.perf_counter() - start
        after = rss_mib()
        print(
            f"memory: RSS {before:.1f} MiB after warm-up, {after:.1f} MiB after {args.memory} more predictions "
            f"({after - before:+.1f} MiB; {elapsed / args.memory * 1000:.1f} ms each)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
