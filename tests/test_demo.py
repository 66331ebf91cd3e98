"""Tests of the synthetic demo data set (utkface_core.data.demo)."""

from __future__ import annotations

import io
import json
import threading
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from utkface_core.data import demo
from utkface_core.data.names import STRICT, parse_name

pytestmark = pytest.mark.usefixtures("app_dir")  # conftest: app data under tmp_path


def _images(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.jpg.chip.jpg"))


def test_names_follow_strict_utkface_format_with_labels_in_range(tmp_path):
    out = demo.generate_demo_dataset(tmp_path / "d", n=60, seed=1, size=64)
    names = [p.name for p in _images(out)]
    assert len(names) == 60
    stamps = set()
    for name in names:
        m = STRICT.match(name)
        assert m, name
        age, gender, race = int(m.group(1)), int(m.group(2)), int(m.group(3))
        assert 1 <= age <= 116 and gender in (0, 1) and race in range(5)
        stamps.add(m.group(4))
        parsed = parse_name(name)
        assert (parsed.age, parsed.gender, parsed.race, parsed.warning) == (age, gender, race, None)
    assert len(stamps) == 60  # timestamps are unique
    for stamp in stamps:
        datetime.strptime(stamp[:14], "%Y%m%d%H%M%S")  # a real date and time, as in UTKFace


def test_images_are_rgb_jpegs_of_the_requested_size(tmp_path):
    out = demo.generate_demo_dataset(tmp_path / "d", n=5, seed=0, size=48)
    for path in _images(out):
        with Image.open(path) as im:
            assert im.format == "JPEG" and im.mode == "RGB" and im.size == (48, 48)


def test_names_match_sampled_labels():
    labels = demo.sample_labels(50, seed=4)
    parsed = [parse_name(n) for n in demo.demo_file_names(50, seed=4)]
    assert np.array_equal(np.array([(p.age, p.gender, p.race) for p in parsed]), labels)


def test_same_seed_gives_identical_bytes_and_other_seed_differs(tmp_path):
    a = demo.generate_demo_dataset(tmp_path / "a", n=40, seed=3, size=64)
    b = demo.generate_demo_dataset(tmp_path / "b", n=40, seed=3, size=64)
    c = demo.generate_demo_dataset(tmp_path / "c", n=40, seed=4, size=64)
    files_a, files_b = _images(a), _images(b)
    assert [p.name for p in files_a] == [p.name for p in files_b]
    assert all(x.read_bytes() == y.read_bytes() for x, y in zip(files_a, files_b, strict=False))
    assert [p.name for p in _images(c)] != [p.name for p in files_a]
    assert files_a[0].read_bytes() != _images(c)[0].read_bytes()


def test_marker_file_describes_the_set(tmp_path):
    out = demo.generate_demo_dataset(tmp_path / "d", n=40, seed=2, size=64)
    marker = json.loads((out / ".utkface-demo.json").read_text())
    assert marker == {"synthetic": True, "n": 40, "seed": 2, "size": 64, "generator_version": demo.GENERATOR_VERSION}
    assert demo.is_demo_dataset(out)


def test_is_demo_dataset_false_for_plain_and_missing_folders(tmp_path):
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "1_0_0_20170101000000000.jpg.chip.jpg").write_bytes(b"x")
    assert not demo.is_demo_dataset(plain)
    assert not demo.is_demo_dataset(tmp_path / "missing")
    (plain / ".utkface-demo.json").write_text('{"synthetic": false}')
    assert not demo.is_demo_dataset(plain)


def test_complete_set_is_not_regenerated(tmp_path):
    out = demo.generate_demo_dataset(tmp_path / "d", n=40, seed=0, size=64)
    first = _images(out)[0]
    first.write_bytes(first.read_bytes() + b"touched")  # a regeneration would rewrite this file
    calls = []
    again = demo.generate_demo_dataset(out, n=40, seed=0, size=64, progress=lambda d, t: calls.append(d))
    assert again == out and calls == []
    assert first.read_bytes().endswith(b"touched")


def test_set_with_other_parameters_is_replaced(tmp_path):
    out = demo.generate_demo_dataset(tmp_path / "d", n=40, seed=0, size=64)
    demo.generate_demo_dataset(out, n=45, seed=0, size=64)
    assert len(_images(out)) == 45
    assert json.loads((out / ".utkface-demo.json").read_text())["n"] == 45
    assert [p.name for p in tmp_path.iterdir()] == ["d"]  # no temporary folders left


def test_incomplete_set_is_regenerated(tmp_path):
    out = demo.generate_demo_dataset(tmp_path / "d", n=40, seed=0, size=64)
    _images(out)[0].unlink()
    demo.generate_demo_dataset(out, n=40, seed=0, size=64)
    assert len(_images(out)) == 40


def test_failed_generation_leaves_no_folder(tmp_path):
    def explode(done: int, total: int) -> None:
        if done >= 20:
            raise RuntimeError("stop")

    with pytest.raises(RuntimeError):
        demo.generate_demo_dataset(tmp_path / "d", n=40, seed=0, size=64, progress=explode)
    assert list(tmp_path.iterdir()) == []


def test_failed_regeneration_keeps_the_previous_set(tmp_path):
    out = demo.generate_demo_dataset(tmp_path / "d", n=40, seed=0, size=64)
    before = {p.name: p.read_bytes() for p in _images(out)}

    def explode(done: int, total: int) -> None:
        raise RuntimeError("stop")

    with pytest.raises(RuntimeError):
        demo.generate_demo_dataset(out, n=50, seed=0, size=64, progress=explode)
    assert {p.name: p.read_bytes() for p in _images(out)} == before
    assert [p.name for p in tmp_path.iterdir()] == ["d"]


def test_progress_reports_up_to_total(tmp_path):
    calls = []
    demo.generate_demo_dataset(tmp_path / "d", n=40, seed=0, size=64, progress=lambda d, t: calls.append((d, t)))
    assert calls[-1] == (40, 40)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)


def test_refuses_to_write_into_a_folder_with_other_files(tmp_path):
    target = tmp_path / "mine"
    target.mkdir()
    (target / "photo.jpg").write_bytes(b"precious")
    with pytest.raises(demo.DemoDataError, match="not a synthetic demo"):
        demo.generate_demo_dataset(target, n=40, seed=0, size=64)
    assert (target / "photo.jpg").read_bytes() == b"precious"
    assert [p.name for p in target.iterdir()] == ["photo.jpg"]


def test_empty_existing_folder_is_filled(tmp_path):
    target = tmp_path / "empty"
    target.mkdir()
    demo.generate_demo_dataset(target, n=40, seed=0, size=64)
    assert len(_images(target)) == 40


@pytest.mark.parametrize(
    "kwargs",
    [{"n": 0}, {"n": -5}, {"size": 31}, {"size": 8}, {"seed": -1}, {"n": 2.5}, {"n": True}, {"size": "64"}],
)
def test_bad_arguments_raise_value_error(tmp_path, kwargs):
    args = {"n": 40, "seed": 0, "size": 64} | kwargs
    with pytest.raises(ValueError):
        demo.generate_demo_dataset(tmp_path / "d", **args)
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize(
    "args", [(117, 0, 0, 64), (-1, 0, 0, 64), (30, 2, 0, 64), (30, 0, 5, 64), (30, 0, 0, 16), (30.5, 0, 0, 64)]
)
def test_render_demo_image_rejects_bad_labels(args):
    with pytest.raises(ValueError):
        demo.render_demo_image(*args)


def test_refuses_a_file_as_target(tmp_path):
    target = tmp_path / "file.txt"
    target.write_text("keep")
    with pytest.raises(demo.DemoDataError, match="not a folder"):
        demo.generate_demo_dataset(target, n=40, seed=0, size=64)
    assert target.read_text() == "keep"


def test_bad_arguments_to_sample_labels_raise():
    with pytest.raises(ValueError, match="n"):
        demo.sample_labels(0, seed=0)
    with pytest.raises(ValueError, match="seed"):
        demo.sample_labels(10, seed=-3)


def test_default_demo_dir_lives_in_app_data(tmp_path):
    path = demo.default_demo_dir(n=120, seed=7)
    assert path == tmp_path.joinpath("app").resolve() / "demo" / "synthetic_n120_seed7"


def test_ensure_demo_dataset_generates_once(tmp_path):
    first = demo.ensure_demo_dataset(n=40, seed=0)
    assert first == demo.default_demo_dir(40, 0) and len(_images(first)) == 40
    calls = []
    assert demo.ensure_demo_dataset(n=40, seed=0, progress=lambda d, t: calls.append(d)) == first
    assert calls == []


def test_ensure_demo_dataset_from_two_threads(tmp_path):
    results, errors = [], []

    def worker() -> None:
        try:
            results.append(demo.ensure_demo_dataset(n=40, seed=1))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(set(results)) == 1
    folder = results[0]
    assert len(_images(folder)) == 40 and demo.is_demo_dataset(folder)
    assert [p.name for p in folder.parent.iterdir()] == [folder.name]


def test_publish_tolerates_a_process_that_won_the_race(tmp_path, monkeypatch):
    # Simulate another process publishing the same set while this one was generating.
    target = tmp_path / "d"
    original_publish = demo._publish

    def publish_after_rival(tmp, out_dir, n, seed, size):
        rival = tmp_path / "rival"
        rival.mkdir()
        for name in demo.demo_file_names(n, seed):
            (rival / name).write_bytes(b"rival")
        (rival / demo.MARKER_NAME).write_text(json.dumps(demo._marker(n, seed, size)))
        rival.rename(out_dir)
        original_publish(tmp, out_dir, n, seed, size)

    monkeypatch.setattr(demo, "_publish", publish_after_rival)
    assert demo.generate_demo_dataset(target, n=40, seed=0, size=64) == target
    assert all(p.read_bytes() == b"rival" for p in _images(target))
    assert [p.name for p in tmp_path.iterdir()] == ["d"]


def test_label_frequencies_match_utkface():
    labels = demo.sample_labels(4000, seed=0)
    ages, genders, races = labels[:, 0], labels[:, 1], labels[:, 2]
    assert ages.min() >= 1 and ages.max() <= 116
    assert 0.07 <= np.mean(ages <= 4) <= 0.12  # the toddler peak
    assert 0.45 <= np.mean((ages >= 20) & (ages <= 39)) <= 0.57
    assert 0.035 <= np.mean(ages > 70) <= 0.075
    assert np.mean(ages > 90) > 0
    assert 0.44 <= genders.mean() <= 0.52
    shares = np.bincount(races, minlength=5) / len(races)
    assert np.allclose(shares, [0.42, 0.19, 0.145, 0.17, 0.075], atol=0.025)


def test_sample_labels_is_deterministic_by_seed():
    assert np.array_equal(demo.sample_labels(100, 5), demo.sample_labels(100, 5))
    assert not np.array_equal(demo.sample_labels(100, 5), demo.sample_labels(100, 6))


def test_labels_are_learnable_from_pixels():
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    n, size = 300, 48
    labels = demo.sample_labels(n, seed=11)
    feats = []
    for i, (age, gender, race) in enumerate(labels.tolist()):
        with Image.open(io.BytesIO(demo.render_demo_image(age, gender, race, size, seed=11, index=i))) as im:
            feats.append(np.asarray(im.reduce(4), dtype=np.float32).ravel() / 255.0)  # 12x12 RGB
    x = np.stack(feats)
    for column, threshold in ((1, 0.70), (2, 0.65)):
        y = labels[:, column]
        majority = np.bincount(y).max() / n  # about 0.52 for gender, 0.42 for race
        clf = make_pipeline(StandardScaler(), LogisticRegression(C=0.05, max_iter=2000))
        accuracy = cross_val_score(clf, x, y, cv=3).mean()
        assert accuracy >= threshold and accuracy >= majority + 0.15, (column, accuracy, majority)


def test_age_is_visible_in_pixels():
    """Children and old people differ systematically from young adults (proportions, wrinkles, grey hair)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(0)
    groups = rng.integers(0, 3, size=240)
    ages = np.choose(groups, [rng.integers(1, 8, 240), rng.integers(22, 32, 240), rng.integers(70, 90, 240)])
    feats = []
    for i, age in enumerate(ages.tolist()):
        data = demo.render_demo_image(age, int(rng.integers(0, 2)), int(rng.integers(0, 5)), 48, seed=2, index=i)
        with Image.open(io.BytesIO(data)) as im:
            feats.append(np.asarray(im.reduce(4), dtype=np.float32).ravel() / 255.0)
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=0.05, max_iter=2000))
    accuracy = cross_val_score(clf, np.stack(feats), groups, cv=3).mean()
    assert accuracy >= 0.6, accuracy  # chance is about 0.33


# --- the demo set before its faces are drawn (the app shows it at once) -------------------------------


def test_demo_index_from_names_equals_the_index_of_the_drawn_folder():
    from utkface_core.data.dataset import index_folder

    early = demo.demo_index(n=40, seed=3)
    assert not early.root.exists()  # nothing drawn yet
    drawn = index_folder(demo.ensure_demo_dataset(n=40, seed=3))
    assert early.root == drawn.root
    assert (early.frame["hash"] == "").all() and (drawn.frame["hash"] != "").all()
    cols = [c for c in early.frame.columns if c != "hash"]
    assert early.frame[cols].equals(drawn.frame[cols])
    assert early.summary() | {"root": None} == drawn.summary() | {"root": None}


def test_render_demo_file_draws_the_same_bytes_as_the_folder_holds():
    folder = demo.ensure_demo_dataset(n=12, seed=5)
    for path in _images(folder)[:3]:
        assert demo.render_demo_file(path.name, n=12, seed=5) == path.read_bytes()
    with pytest.raises(KeyError):
        demo.render_demo_file("30_0_0_20170101000000000.jpg.chip.jpg", n=12, seed=5)


def test_demo_build_draws_in_the_background_and_reports_progress():
    build = demo.DemoBuild(n=30, seed=2)
    assert not build.ready and build.done == 0 and build.total == 30
    build.start()
    build.start()  # a second start while drawing is a no-op
    assert build.wait(timeout=300)
    assert build.ready and build.error is None and build.done == 30
    assert demo.is_demo_dataset(build.path) and len(_images(build.path)) == 30
    assert demo.DemoBuild(n=30, seed=2).ready  # a later server finds the set complete


def test_demo_build_reports_a_failure_instead_of_raising():
    target = demo.default_demo_dir(10, 0)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("a file where the demo folder should go")
    build = demo.DemoBuild(n=10, seed=0).start()
    assert not build.wait(timeout=300)
    assert not build.ready and "is not a folder" in build.error
