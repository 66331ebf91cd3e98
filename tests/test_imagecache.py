"""Tests for utkface_core.data.imagecache: robust decoding and the on-disk decoded-image cache."""

from __future__ import annotations

import io
import json
import os
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from utkface_core.data import imagecache
from utkface_core.data.imagecache import (
    CacheBuildCancelled,
    ImageCache,
    ImageDecodeError,
    build_image_cache,
    decode_image,
    image_cache_key,
    load_image_cache,
)


@pytest.fixture(autouse=True)
def _app_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("UTKFACE_APP_DIR", str(tmp_path / "app"))
    monkeypatch.setenv("UTKFACE_RUNS_DIR", str(tmp_path / "runs"))


def _save(img: Image.Image, path: Path, fmt: str | None = None, **kwargs) -> Path:
    img.save(path, fmt, **kwargs)
    return path


def _noise(seed: int, shape=(12, 12, 3)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def _jpeg_bytes(arr: np.ndarray, **kwargs) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", **kwargs)
    return buf.getvalue()


# ---- decode_image -------------------------------------------------------------------------------


def test_png_decodes_exactly(tmp_path):
    arr = _noise(0, (5, 7, 3))
    out = decode_image(_save(Image.fromarray(arr), tmp_path / "a.png"))
    assert out.dtype == np.uint8 and out.shape == (5, 7, 3)
    np.testing.assert_array_equal(out, arr)


def test_accepts_bytes_and_file_objects(tmp_path):
    data = _jpeg_bytes(np.full((6, 6, 3), 200, np.uint8))
    assert decode_image(data).shape == (6, 6, 3)
    assert decode_image(io.BytesIO(data)).shape == (6, 6, 3)


def test_random_bytes_named_jpg_rejected(tmp_path):
    path = tmp_path / "corrupt.jpg"
    path.write_bytes(np.random.default_rng(1).integers(0, 256, 2000, dtype=np.uint8).tobytes())
    with pytest.raises(ImageDecodeError, match="not an image file") as info:
        decode_image(path)
    assert "corrupt.jpg" in str(info.value)


def test_truncated_jpeg_rejected(tmp_path):
    data = _jpeg_bytes(_noise(2, (64, 64, 3)))
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageDecodeError, match="truncated or corrupt image"):
        decode_image(path)


@pytest.mark.parametrize("source", ["path", "bytes", "fileobj"])
def test_zero_byte_input_rejected(tmp_path, source):
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    arg = {"path": path, "bytes": b"", "fileobj": io.BytesIO(b"")}[source]
    with pytest.raises(ImageDecodeError, match=r"empty file \(0 bytes\)"):
        decode_image(arg)


def test_missing_file_rejected(tmp_path):
    with pytest.raises(ImageDecodeError, match="file not found"):
        decode_image(tmp_path / "nope.jpg")


def test_grayscale_l_becomes_rgb(tmp_path):
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    out = decode_image(_save(Image.fromarray(grey, "L"), tmp_path / "g.png"))
    assert out.shape == (3, 4, 3)
    for channel in range(3):
        np.testing.assert_array_equal(out[..., channel], grey)


def test_rgba_composited_on_neutral_background(tmp_path):
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[0, 0] = (255, 0, 0, 255)  # opaque red
    rgba[0, 1] = (255, 0, 0, 0)  # fully transparent
    rgba[1, :] = (0, 0, 255, 128)  # half-transparent blue
    out = decode_image(_save(Image.fromarray(rgba, "RGBA"), tmp_path / "a.png"))
    np.testing.assert_array_equal(out[0, 0], (255, 0, 0))
    np.testing.assert_array_equal(out[0, 1], imagecache.BACKGROUND)
    assert abs(int(out[1, 0, 2]) - 191) <= 2 and abs(int(out[1, 0, 0]) - 64) <= 2


def test_cmyk_jpeg_colours(tmp_path):
    cmyk = Image.new("CMYK", (8, 8), (0, 255, 255, 0))  # pure red in CMYK
    out = decode_image(_save(cmyk, tmp_path / "c.jpg", quality=95))
    r, g, b = out.reshape(-1, 3).mean(axis=0)
    assert r > 230 and g < 25 and b < 25


def test_sixteen_bit_png_scaled_not_clipped(tmp_path):
    values = np.array([[0, 1000, 32896, 65535]], dtype=np.uint16)
    path = _save(Image.fromarray(values), tmp_path / "deep.png")
    with Image.open(path) as check:
        assert check.mode.startswith("I")
    out = decode_image(path)
    np.testing.assert_array_equal(out[0, :, 0], [0, 4, 128, 255])
    np.testing.assert_array_equal(out[..., 0], out[..., 2])


def test_palette_image_becomes_rgb(tmp_path):
    img = Image.new("P", (3, 2))
    img.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    img.putdata([0, 1, 0, 1, 0, 1])
    out = decode_image(_save(img, tmp_path / "p.png"))
    np.testing.assert_array_equal(out[0, 0], (255, 0, 0))
    np.testing.assert_array_equal(out[0, 1], (0, 255, 0))


def test_bilevel_and_float_modes(tmp_path):
    bilevel = Image.new("1", (4, 4), 1)
    assert decode_image(_save(bilevel, tmp_path / "b.png")).min() == 255
    floats = Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32), "F")
    out = decode_image(_save(floats, tmp_path / "f.tiff"))
    np.testing.assert_array_equal(out[0, :, 1], [0, 128, 255])


def test_exif_orientation_6_rotates_non_square(tmp_path):
    arr = np.zeros((20, 40, 3), np.uint8)  # 40 wide, 20 high
    arr[:, :20] = (255, 0, 0)  # left half red
    arr[:, 20:] = (0, 0, 255)  # right half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: display rotated 90 degrees clockwise
    path = _save(Image.fromarray(arr), tmp_path / "rot.jpg", exif=exif, quality=95)
    out = decode_image(path)
    assert out.shape == (40, 20, 3)
    # A clockwise turn brings the stored left (red) side to the top.
    assert out[5, 10, 0] > 200 and out[5, 10, 2] < 60
    assert out[35, 10, 2] > 200 and out[35, 10, 0] < 60


def test_resize_centre_crops_to_square(tmp_path):
    arr = np.zeros((30, 90, 3), np.uint8)
    arr[:, 30:60] = 255  # only the centre third is white
    out = decode_image(_save(Image.fromarray(arr), tmp_path / "wide.png"), size=16)
    assert out.shape == (16, 16, 3)
    assert out.min() >= 250


def test_resize_large_jpeg_uses_draft_and_keeps_content(tmp_path):
    arr = np.zeros((400, 400, 3), np.uint8)
    arr[:200] = (250, 250, 250)
    out = decode_image(_jpeg_bytes(arr, quality=95), size=20)
    assert out.shape == (20, 20, 3)
    assert out[:8].mean() > 230 and out[12:].mean() < 20


def test_decompression_bomb_guarded(tmp_path, monkeypatch):
    path = _save(Image.fromarray(_noise(3, (40, 40, 3))), tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(ImageDecodeError, match="too large"):
        decode_image(path)


@pytest.mark.parametrize("size", [0, -3, 2.5, True, "64", imagecache.MAX_SIZE + 1])
def test_bad_size_rejected(tmp_path, size):
    path = _save(Image.fromarray(_noise(4)), tmp_path / "a.png")
    with pytest.raises(ValueError, match="size must be an integer"):
        decode_image(path, size=size)


def test_bad_source_type_rejected():
    with pytest.raises(TypeError, match="source must be"):
        decode_image(12345)  # type: ignore[arg-type]


# ---- build_image_cache ------------------------------------------------------------------------


def _images(tmp_path: Path, n: int) -> list[Path]:
    folder = tmp_path / "imgs"
    folder.mkdir(exist_ok=True)
    return [_save(Image.fromarray(_noise(i, (10, 14, 3))), folder / f"{i}.png") for i in range(n)]


def test_build_mixed_good_and_bad(tmp_path):
    good = _images(tmp_path, 3)
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"not an image at all")
    items = [good[0], empty, good[1], junk, tmp_path / "missing.jpg", good[2]]
    cache = build_image_cache(items, 8, cache_root=tmp_path / "c", workers=2)
    assert isinstance(cache, ImageCache)
    assert cache.images.shape == (6, 8, 8, 3) and cache.images.dtype == np.uint8
    assert cache.ok.tolist() == [True, False, True, False, False, True]
    assert [e["file"] for e in cache.errors] == [str(empty), str(junk), str(tmp_path / "missing.jpg")]
    assert "empty file" in cache.errors[0]["reason"] and "not an image" in cache.errors[1]["reason"]
    assert not cache.images[1].any() and not cache.images[3].any()
    np.testing.assert_array_equal(cache.images[2], decode_image(good[1], 8))
    assert cache.paths == [str(p) for p in items]


def test_build_writes_npy_and_json_under_default_root(tmp_path):
    cache = build_image_cache(_images(tmp_path, 2), 8, workers=1)
    root = tmp_path / "app" / "images"
    assert sorted(p.name for p in root.iterdir()) == [f"{cache.key}.json", f"{cache.key}.npy"]
    assert cache.path == root.resolve() / f"{cache.key}.npy"
    assert isinstance(cache.images, np.memmap) and not cache.images.flags.writeable


def test_warm_build_does_not_decode_again(tmp_path, monkeypatch):
    items = _images(tmp_path, 4)
    cold = build_image_cache(items, 8, cache_root=tmp_path / "c", workers=2)

    def refuse(*args, **kwargs):
        raise AssertionError("decoded again")

    monkeypatch.setattr(imagecache, "decode_image", refuse)
    warm = build_image_cache(items, 8, cache_root=tmp_path / "c", workers=2)
    assert warm.key == cold.key and warm.ok.all() and warm.errors == []
    np.testing.assert_array_equal(warm.images, cold.images)


def test_load_image_cache(tmp_path):
    items = _images(tmp_path, 2)
    assert load_image_cache(image_cache_key(items, 8), tmp_path / "c") is None
    built = build_image_cache(items, 8, cache_root=tmp_path / "c", workers=1)
    loaded = load_image_cache(built.key, tmp_path / "c")
    assert loaded is not None and loaded.paths == built.paths
    np.testing.assert_array_equal(loaded.images, built.images)
    with pytest.raises(ValueError, match="key must be"):
        load_image_cache("../../etc", tmp_path / "c")


def test_changed_file_gives_new_key(tmp_path):
    items = _images(tmp_path, 2)
    before = build_image_cache(items, 8, cache_root=tmp_path / "c", workers=1)
    Image.fromarray(_noise(99, (10, 14, 3))).save(items[0])
    stamp = os.stat(items[0]).st_mtime_ns + 5_000_000_000
    os.utime(items[0], ns=(stamp, stamp))
    after = build_image_cache(items, 8, cache_root=tmp_path / "c", workers=1)
    assert after.key != before.key
    assert not np.array_equal(after.images[0], before.images[0])
    np.testing.assert_array_equal(after.images[1], before.images[1])


def test_key_depends_on_size_and_order(tmp_path):
    items = _images(tmp_path, 2)
    key = image_cache_key(items, 8)
    assert key == image_cache_key([str(p) for p in items], 8)
    assert key != image_cache_key(items, 9)
    assert key != image_cache_key(items[::-1], 8)


def test_stop_event_cancels_without_committing(tmp_path):
    items = _images(tmp_path, 30)
    stop = threading.Event()

    def progress(done, total):
        stop.set()

    with pytest.raises(CacheBuildCancelled):
        build_image_cache(items, 8, cache_root=tmp_path / "c", workers=1, progress=progress, stop=stop)
    assert list((tmp_path / "c").iterdir()) == []
    assert load_image_cache(image_cache_key(items, 8), tmp_path / "c") is None


def test_stop_set_before_start_cancels(tmp_path):
    stop = threading.Event()
    stop.set()
    with pytest.raises(CacheBuildCancelled, match="cancelled"):
        build_image_cache(_images(tmp_path, 3), 8, cache_root=tmp_path / "c", stop=stop)
    assert list((tmp_path / "c").iterdir()) == []


def test_interrupted_build_never_loads_as_complete(tmp_path):
    items = _images(tmp_path, 5)

    def crash(done, total):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_image_cache(items, 8, cache_root=tmp_path / "c", workers=1, progress=crash)
    assert list((tmp_path / "c").iterdir()) == []
    # A .npy without its .json (a kill between the two renames) is not a cache.
    key = image_cache_key(items, 8)
    np.save(tmp_path / "c" / f"{key}.npy", np.zeros((5, 8, 8, 3), np.uint8))
    assert load_image_cache(key, tmp_path / "c") is None
    assert build_image_cache(items, 8, cache_root=tmp_path / "c", workers=1).images.any()


def test_corrupt_json_is_rebuilt(tmp_path):
    items = _images(tmp_path, 2)
    built = build_image_cache(items, 8, cache_root=tmp_path / "c", workers=1)
    (tmp_path / "c" / f"{built.key}.json").write_text("{not json")
    assert load_image_cache(built.key, tmp_path / "c") is None
    again = build_image_cache(items, 8, cache_root=tmp_path / "c", workers=1)
    assert again.ok.all()
    assert json.loads((tmp_path / "c" / f"{built.key}.json").read_text())["count"] == 2


def test_progress_reports_final_total_and_is_throttled(tmp_path):
    items = _images(tmp_path, 3) * 150  # 450 entries
    calls: list[tuple[int, int]] = []
    build_image_cache(items, 4, cache_root=tmp_path / "c", workers=2, progress=lambda d, t: calls.append((d, t)))
    assert calls[-1] == (450, 450)
    assert len(calls) <= 201
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)


def test_empty_path_list(tmp_path):
    cache = build_image_cache([], 8, cache_root=tmp_path / "c")
    assert cache.images.shape == (0, 8, 8, 3) and cache.ok.shape == (0,)
    assert build_image_cache([], 8, cache_root=tmp_path / "c").key == cache.key


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"size": 0}, "size must be"),
        ({"workers": 0}, "workers must be"),
        ({"paths": "one/path.jpg"}, "list of image paths"),
        ({"paths": [1, 2]}, "file paths"),
    ],
)
def test_build_bad_arguments_rejected(tmp_path, kwargs, match):
    args = {"paths": _images(tmp_path, 1), "size": 8, "cache_root": tmp_path / "c", **kwargs}
    with pytest.raises(ValueError, match=match):
        build_image_cache(**args)


# --- issue 8: bounded memory for hostile images -------------------------------------------------------


@pytest.fixture(scope="module")
def pixel_bomb(tmp_path_factory):
    from tests.hostile import write_png_bomb

    return write_png_bomb(tmp_path_factory.mktemp("bomb") / "bomb.png")


@pytest.fixture(scope="module")
def big_jpeg(tmp_path_factory):
    from tests.hostile import write_big_jpeg

    return write_big_jpeg(tmp_path_factory.mktemp("big") / "big.jpg")


def test_pixel_bomb_is_refused_from_its_header(pixel_bomb):
    assert pixel_bomb.stat().st_size < 1024**2
    with pytest.raises(ImageDecodeError, match=r"13,000 x 13,000 pixels \(169 Mpx\), over the 40 Mpx limit"):
        decode_image(pixel_bomb)
    with pytest.raises(ImageDecodeError, match="over the 40 Mpx limit"):
        decode_image(pixel_bomb.read_bytes(), 64)


def test_pixel_cap_is_overridable(tmp_path, monkeypatch):
    path = tmp_path / "a.png"
    Image.new("RGB", (100, 50)).save(path)
    monkeypatch.setenv("UTKFACE_MAX_IMAGE_PIXELS", "4999")
    with pytest.raises(ImageDecodeError, match="100 x 50 pixels"):
        decode_image(path)
    monkeypatch.setenv("UTKFACE_MAX_IMAGE_PIXELS", "5000")
    assert decode_image(path).shape == (50, 100, 3)


def test_max_side_downscales_jpeg_while_decoding(big_jpeg):
    arr = decode_image(big_jpeg, max_side=1600)
    assert arr.shape == (1200, 1600, 3)
    # The gradient survives downscaling: red grows left to right, green top to bottom.
    assert arr[600, 10, 0] < arr[600, 1590, 0] and arr[10, 800, 1] < arr[1190, 800, 1]


def test_max_side_downscales_other_formats_and_keeps_small_images(tmp_path):
    big = tmp_path / "big.png"
    Image.new("RGBA", (3000, 1000), (255, 0, 0, 255)).save(big)
    arr = decode_image(big, max_side=600)
    assert arr.shape == (200, 600, 3) and tuple(arr[100, 300]) == (255, 0, 0)
    small = tmp_path / "small.png"
    Image.new("RGB", (30, 20)).save(small)
    assert decode_image(small, max_side=600).shape == (20, 30, 3)
    with pytest.raises(ValueError, match="max_side"):
        decode_image(small, max_side=0)


@pytest.mark.parametrize("which", ["pixel_bomb", "big_jpeg"])
@pytest.mark.parametrize("mode", ["decode", "prepare"])
def test_hostile_image_peak_rss_stays_within_300_mb(request, tmp_path, which, mode):
    """Measured in a fresh interpreter (ru_maxrss): a refused bomb, or a photo downscaled as it decodes."""
    from tests.hostile import probe

    result = probe(mode, request.getfixturevalue(which), tmp_path / "app")
    assert result["delta_mb"] < 300, result
    if which == "big_jpeg" and mode == "prepare":  # the Predict page's path: decoded at 1/4 scale, then 1600 px
        assert result["outcome"] == "ok" and result["shape"] == [1200, 1600, 3]
    else:  # a full-resolution decode of 169 or 48 Mpx is refused from the header
        assert "Mpx limit" in result["outcome"]
