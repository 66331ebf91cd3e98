"""tf.data input pipelines over a uint8 image array, with seeded on-the-fly augmentation.

Two feeds give the same batches: an in-memory one (the rows a dataset uses are copied once into a tensor; batches
are gathered and augmented inside the tf.data graph, no Python and no GIL per batch) and a streaming one that reads
only each batch's rows from a (memory-mapped) array through ``tf.numpy_function`` (for sets too big for memory).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

N_GENDERS = 2
N_RACES = 5
# Datasets whose rows take more than this are streamed from the (memory-mapped) array instead of held in memory:
# the fast presets' 48 px sets (~100 MB) fit, the tutorial's 198 px ones (~0.85 GB of training rows) stream.
IN_MEMORY_LIMIT_BYTES = 512 * 1024**2


class PipelineError(ValueError):
    """The arrays given to ``make_dataset`` do not fit together."""


def _check(images, indices, ages, genders, races, batch_size) -> np.ndarray:
    if images.ndim != 4 or images.shape[3] != 3 or images.shape[1] != images.shape[2]:
        raise PipelineError(f"images must have shape (N, S, S, 3), got {images.shape}")
    if images.dtype != np.uint8:
        raise PipelineError(f"images must be uint8, got {images.dtype}")
    n = images.shape[0]
    for name, arr in (("ages", ages), ("genders", genders), ("races", races)):
        if len(arr) != n:
            raise PipelineError(f"{name} has {len(arr)} entries but images has {n}: they must align row by row")
    idx = np.asarray(indices, dtype=np.int64).reshape(-1)
    if idx.size == 0:
        raise PipelineError("indices is empty: a dataset needs at least one image")
    if idx.min() < 0 or idx.max() >= n:
        raise PipelineError(f"indices must lie in [0, {n}), got values from {idx.min()} to {idx.max()}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise PipelineError(f"batch_size must be a positive integer, got {batch_size!r}")
    g, r = np.asarray(genders), np.asarray(races)
    if g.min() < 0 or g.max() >= N_GENDERS or r.min() < 0 or r.max() >= N_RACES:
        raise PipelineError("genders must be in 0..1 and races in 0..4")
    return idx


def augment_batch(images: tf.Tensor, seed: tf.Tensor, max_shift: float = 0.08, max_zoom: float = 0.1) -> tf.Tensor:
    """Randomly flip, shift, zoom and brighten a float32 batch (B,S,S,3) in 0..255 (stateless, seeded)."""
    batch = tf.shape(images)[0]
    size = tf.shape(images)[1]
    seeds = tf.random.experimental.stateless_split(seed, num=5)
    flip = tf.random.stateless_uniform([batch], seeds[0]) < 0.5
    images = tf.where(flip[:, None, None, None], tf.reverse(images, axis=[2]), images)
    # One crop_and_resize call does shift and zoom for the whole batch.
    scale = 1.0 - tf.random.stateless_uniform([batch], seeds[1], 0.0, max_zoom)
    dy = tf.random.stateless_uniform([batch], seeds[2], -max_shift, max_shift)
    dx = tf.random.stateless_uniform([batch], seeds[3], -max_shift, max_shift)
    y0 = (1.0 - scale) / 2.0 + dy
    x0 = (1.0 - scale) / 2.0 + dx
    boxes = tf.stack([y0, x0, y0 + scale, x0 + scale], axis=1)
    images = tf.image.crop_and_resize(images, boxes, tf.range(batch), tf.stack([size, size]), extrapolation_value=0.0)
    gain = tf.random.stateless_uniform([batch, 1, 1, 1], seeds[4], 0.8, 1.2)
    return tf.clip_by_value(images * gain, 0.0, 255.0)


def mixup_weights(seed: tf.Tensor, batch: tf.Tensor, alpha: float) -> tf.Tensor:
    """Return per-image mixup weights (B,) in [0.5, 1]: max(l, 1 - l), l ~ Beta(alpha, alpha) (stateless, seeded)."""
    seeds = tf.random.experimental.stateless_split(seed, num=2)
    a = tf.random.stateless_gamma([batch], seeds[0], alpha=alpha)
    b = tf.random.stateless_gamma([batch], seeds[1], alpha=alpha)
    lam = a / tf.maximum(a + b, 1e-12)
    # The image's own labels keep the larger share, so every image still mostly teaches its own face.
    return tf.maximum(lam, 1.0 - lam)


def mix_batch(images: tf.Tensor, targets: dict, lam: tf.Tensor) -> tuple[tf.Tensor, dict]:
    """Mix each image and its targets with the next one in the batch (rolled by 1) by weights ``lam`` (B,).

    Class targets and ``age`` are mixed linearly; ``age_pair`` (B,2) keeps both ages in years and ``mix`` (B,1)
    the weight, so a non-linear age loss can be mixed per label (see ``MultiTaskModel.head_losses``).
    """
    lam = tf.cast(lam, tf.float32)
    col = lam[:, None]
    mixed_images = lam[:, None, None, None] * images + (1.0 - lam[:, None, None, None]) * tf.roll(images, 1, axis=0)
    out = {key: col * value + (1.0 - col) * tf.roll(value, 1, axis=0) for key, value in targets.items()}
    out["age_pair"] = tf.concat([targets["age"], tf.roll(targets["age"], 1, axis=0)], axis=1)
    out["mix"] = col
    return mixed_images, out


def make_dataset(
    images: np.ndarray,
    indices: np.ndarray,
    ages: np.ndarray,
    genders: np.ndarray,
    races: np.ndarray,
    batch_size: int,
    *,
    training: bool,
    seed: int = 0,
    augment: bool = False,
    in_memory: bool | None = None,
    mixup_alpha: float = 0.0,
) -> tf.data.Dataset:
    """Return batches ({image float32 0..255}, {"age" (B,1) years, "gender" (B,2), "race" (B,5) one-hot}).

    ``in_memory`` (None: when the dataset's rows fit in ``IN_MEMORY_LIMIT_BYTES``) copies the rows of ``indices``
    once into a tensor and gathers batches from it inside the graph; otherwise only the rows of a batch are read
    from ``images`` (a memmap stays on disk). Both give the same batches for the same seed (the streaming feed
    sorts the rows within a batch). ``training`` reshuffles every epoch (seeded); ``augment`` applies only when
    training and is a function of ``seed`` alone. ``mixup_alpha`` > 0 mixes training batches (``mix_batch``,
    after augmentation); the targets then also hold ``age_pair`` and ``mix``.
    """
    idx = _check(images, indices, ages, genders, races, batch_size)
    if isinstance(mixup_alpha, bool) or not isinstance(mixup_alpha, (int, float)) or not 0 <= mixup_alpha < 100:
        raise PipelineError(f"mixup_alpha must be a number in [0, 100) (0: off), got {mixup_alpha!r}")
    size = images.shape[1]
    ages_arr = np.asarray(ages, dtype=np.float32)
    genders_arr = np.asarray(genders, dtype=np.int64)
    races_arr = np.asarray(races, dtype=np.int64)
    if in_memory is None:
        in_memory = len(idx) * int(np.prod(images.shape[1:])) <= IN_MEMORY_LIMIT_BYTES
    if in_memory:
        ds = _gather_in_graph(images, idx, ages_arr, genders_arr, races_arr, batch_size, training, seed)
    else:
        ds = _gather_by_numpy(images, idx, ages_arr, genders_arr, races_arr, batch_size, training, seed, size)
    return _finish(ds, training=training, seed=seed, augment=augment, mixup_alpha=float(mixup_alpha))


def _gather_in_graph(images, idx, ages_arr, genders_arr, races_arr, batch_size, training, seed) -> tf.data.Dataset:
    # Positions into the copied rows; shuffling positions gives the same order as shuffling the row ids.
    order = np.argsort(idx, kind="stable")
    rows = np.empty((len(idx), *images.shape[1:]), dtype=np.uint8)
    rows[order] = np.asarray(images[idx[order]])  # one ascending read (kind to a memmap), then the asked order
    table = tf.constant(rows)
    age_t = tf.constant(ages_arr[idx])
    gender_t = tf.constant(genders_arr[idx])
    race_t = tf.constant(races_arr[idx])
    ds = tf.data.Dataset.range(len(idx))
    if training:
        ds = ds.shuffle(len(idx), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)

    def load(pos):
        return tf.gather(table, pos), tf.gather(age_t, pos), tf.gather(gender_t, pos), tf.gather(race_t, pos)

    return ds.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def _gather_by_numpy(images, idx, ages_arr, genders_arr, races_arr, batch_size, training, seed, size):
    def gather(batch_idx: np.ndarray):
        order = np.sort(batch_idx)  # ascending reads are kinder to a memmap; labels follow the same order
        return (
            np.ascontiguousarray(images[order]),
            ages_arr[order],
            genders_arr[order],
            races_arr[order],
        )

    ds = tf.data.Dataset.from_tensor_slices(idx)
    if training:
        ds = ds.shuffle(len(idx), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)

    def load(batch_idx):
        image, age, gender, race = tf.numpy_function(
            gather, [batch_idx], [tf.uint8, tf.float32, tf.int64, tf.int64], stateful=False
        )
        image = tf.ensure_shape(image, [None, size, size, 3])
        age = tf.ensure_shape(age, [None])
        gender = tf.ensure_shape(gender, [None])
        race = tf.ensure_shape(race, [None])
        return image, age, gender, race

    return ds.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def _finish(ds: tf.data.Dataset, *, training: bool, seed: int, augment: bool, mixup_alpha: float) -> tf.data.Dataset:
    def to_model(image, age, gender, race):
        targets = {
            "age": tf.reshape(age, [-1, 1]),
            "gender": tf.one_hot(gender, N_GENDERS, dtype=tf.float32),
            "race": tf.one_hot(race, N_RACES, dtype=tf.float32),
        }
        return tf.cast(image, tf.float32), targets

    mixup = training and mixup_alpha > 0
    if (training and augment) or mixup:
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)

        def finish(batch, pair):
            image, targets = to_model(*batch)
            if augment:
                image = augment_batch(image, pair)
            if mixup:
                # A seed derived from the batch's pair: augmentation stays what it is without mixup.
                mix_seed = tf.random.experimental.stateless_fold_in(pair, 1)
                image, targets = mix_batch(image, targets, mixup_weights(mix_seed, tf.shape(image)[0], mixup_alpha))
            return image, targets

        ds = tf.data.Dataset.zip((ds, seeds))
    else:
        finish = to_model

    ds = ds.map(finish, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE)
