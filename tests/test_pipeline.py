"""Input pipeline: the in-memory feed gathers the same rows as the streaming one; augmentation is seeded."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from utkface_core.training import pipeline  # noqa: E402
from utkface_core.training.pipeline import make_dataset  # noqa: E402

N, SIZE = 40, 12


def _arrays(seed: int = 0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (N, SIZE, SIZE, 3), dtype=np.uint8)
    ages = np.arange(N) + 10.0  # distinct: the age names the row a sample came from
    return images, ages, np.arange(N) % 2, np.arange(N) % 5


def _batches(ds):
    return [(x.numpy(), {k: v.numpy() for k, v in y.items()}) for x, y in ds]


def test_in_graph_gather_equals_the_numpy_rows():
    images, ages, genders, races = _arrays()
    indices = np.array([31, 2, 7, 7, 19, 0, 25, 13, 38, 4, 11])  # unsorted, with a repeat
    ds = make_dataset(images, indices, ages, genders, races, 4, training=True, seed=3, in_memory=True)
    seen = []
    for x, y in _batches(ds):
        rows = y["age"][:, 0].astype(int) - 10
        np.testing.assert_array_equal(x, images[rows].astype(np.float32))
        np.testing.assert_array_equal(y["gender"].argmax(1), genders[rows])
        np.testing.assert_array_equal(y["race"].argmax(1), races[rows])
        seen.extend(rows)
    assert sorted(seen) == sorted(indices)


@pytest.mark.parametrize("training", [True, False])
def test_in_memory_and_streaming_feeds_give_the_same_batches(training):
    images, ages, genders, races = _arrays()
    indices = np.random.default_rng(1).permutation(N)[:30]
    kwargs = {"training": training, "seed": 5}
    graph = _batches(make_dataset(images, indices, ages, genders, races, 8, in_memory=True, **kwargs))
    stream = _batches(make_dataset(images, indices, ages, genders, races, 8, in_memory=False, **kwargs))
    assert len(graph) == len(stream) == 4
    for (xg, yg), (xs, ys) in zip(graph, stream, strict=True):
        # The streaming feed sorts rows within a batch (kinder to a memmap): compare in row order.
        og, os_ = np.argsort(yg["age"][:, 0]), np.argsort(ys["age"][:, 0])
        np.testing.assert_array_equal(xg[og], xs[os_])
        for key in ("age", "gender", "race"):
            np.testing.assert_array_equal(yg[key][og], ys[key][os_])


def test_in_memory_is_chosen_below_the_size_limit(monkeypatch):
    images, ages, genders, races = _arrays()
    calls = []
    real = pipeline._gather_in_graph

    def spy(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(pipeline, "_gather_in_graph", spy)
    make_dataset(images, np.arange(N), ages, genders, races, 8, training=False)
    assert calls == [1]
    monkeypatch.setattr(pipeline, "IN_MEMORY_LIMIT_BYTES", SIZE * SIZE * 3 * (N - 1))
    make_dataset(images, np.arange(N), ages, genders, races, 8, training=False)
    assert calls == [1]  # over the limit: streamed


@pytest.mark.parametrize("in_memory", [True, False])
def test_augmentation_is_seeded_and_deterministic(in_memory):
    images, ages, genders, races = _arrays()

    def first_epoch(seed):
        ds = make_dataset(
            images, np.arange(N), ages, genders, races, 8, training=True, seed=seed, augment=True, in_memory=in_memory
        )
        return _batches(ds)

    a, b, c = first_epoch(7), first_epoch(7), first_epoch(8)
    for (xa, ya), (xb, yb) in zip(a, b, strict=True):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya["age"], yb["age"])
    assert not all(np.array_equal(xa, xc) for (xa, _), (xc, _) in zip(a, c, strict=True))
    # Augmentation changed the pixels (flip, shift, zoom, brightness) but kept the range.
    x, y = a[0]
    rows = y["age"][:, 0].astype(int) - 10
    assert not np.allclose(x, images[rows])
    assert x.min() >= 0.0 and x.max() <= 255.0


def test_augmentation_differs_between_epochs_but_repeats_per_seed():
    images, ages, genders, races = _arrays()
    ds = make_dataset(images, np.arange(N), ages, genders, races, N, training=True, seed=2, augment=True)
    epoch1, epoch2 = (_batches(ds)[0][0] for _ in range(2))
    assert not np.array_equal(epoch1, epoch2)
    again = make_dataset(images, np.arange(N), ages, genders, races, N, training=True, seed=2, augment=True)
    np.testing.assert_array_equal(_batches(again)[0][0], epoch1)
