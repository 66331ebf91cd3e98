"""From a data source to a training run: index, filter, decode once, split, train. Shared by CLI, pages, benchmarks."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from utkface_core.access import display_path
from utkface_core.data.dataset import DatasetIndex, index_folder
from utkface_core.data.splits import filter_frame, split_frame

Report = Callable[[dict], None]


class RowView:
    """Selected rows of a (memory-mapped) image array, read lazily: nothing is copied until indexed."""

    def __init__(self, base: np.ndarray, rows: np.ndarray) -> None:
        self.base = base
        self.rows = np.asarray(rows, dtype=np.int64)

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.rows), *self.base.shape[1:])

    @property
    def dtype(self) -> np.dtype:
        return self.base.dtype

    @property
    def ndim(self) -> int:
        return self.base.ndim

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, key: Any) -> np.ndarray:
        picked = self.rows[key]
        if np.ndim(picked) == 0:
            return np.asarray(self.base[int(picked)])
        # Sorted reads are much faster on a memory map; restore the asked order afterwards.
        order = np.argsort(picked, kind="stable")
        out = np.empty((len(picked), *self.base.shape[1:]), dtype=self.base.dtype)
        out[order] = self.base[picked[order]]
        return out

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self[np.arange(len(self.rows))]
        return out.astype(dtype) if dtype is not None else out


@dataclass
class TrainingData:
    """Everything ``trainer.train`` needs, plus what was left out and why."""

    root: Path
    index: DatasetIndex
    frame: pd.DataFrame  # rows in the age range that decoded, index 0..n-1
    images: RowView  # aligned with frame
    split: pd.Series  # train/valid/test, aligned with frame
    excluded: list[dict]  # images that could not be decoded
    fingerprint: str


def resolve_data_dir(data: str | Path) -> Path:
    """``"demo"`` gives the synthetic demo folder (generated if needed); anything else must be a folder."""
    from utkface_core.data.sources import demo_source, folder_source

    if str(data) == "demo":
        return demo_source().path
    return folder_source(data).path


def prepare_training_data(
    data: str | Path,
    *,
    image_size: int,
    min_age: int,
    max_age: int,
    seed: int = 0,
    split_method: str = "tutorial",
    progress: Callable[[int, int], None] | None = None,
    stop: threading.Event | None = None,
) -> TrainingData:
    """Index ``data``, decode every image once at ``image_size`` (cached on disk), filter to the age range and split."""
    from utkface_core.data.imagecache import build_image_cache

    root = resolve_data_dir(data)
    index = index_folder(root)
    # Decode the whole kept set, not the filtered rows, so other age ranges reuse the same cache.
    all_paths = index.frame["path"].tolist()
    cache = build_image_cache(all_paths, image_size, progress=progress, stop=stop)
    row_of = {path: i for i, path in enumerate(all_paths)}
    frame = filter_frame(index.frame, min_age, max_age).reset_index(drop=True)
    rows = frame["path"].map(row_of).to_numpy(dtype=np.int64)
    ok = cache.ok[rows]
    bad = set(frame["path"][~ok])
    excluded = [e for e in cache.errors if e.get("file") in bad or str(Path(root) / str(e.get("file"))) in bad]
    frame = frame[ok].reset_index(drop=True)
    rows = rows[ok]
    if len(frame) < 10:
        raise ValueError(
            f"only {len(frame)} usable images with ages {min_age}-{max_age} in {display_path(root)}: "
            "widen the age range or pick another data set"
        )
    split = split_frame(frame, seed=seed, method=split_method)
    return TrainingData(root, index, frame, RowView(cache.images, rows), split, excluded, index.fingerprint())


def prepare_config_data(
    config: Any,
    data: str | Path,
    *,
    progress: Callable[[int, int], None] | None = None,
    stop: threading.Event | None = None,
) -> TrainingData:
    """``prepare_training_data`` with the image size, age range, seed and split method of a ``TrainConfig``."""
    return prepare_training_data(
        data,
        image_size=config.resolved_image_size(),
        min_age=config.min_age,
        max_age=config.max_age,
        seed=config.seed,
        split_method=config.split_method,
        progress=progress,
        stop=stop,
    )


def run_training(
    config: Any,
    data: str | Path,
    run_dir: str | Path | None = None,
    *,
    report: Report | None = None,
    stop_event: threading.Event | None = None,
    loss_weights: Any = None,
    control: Callable[[], dict | None] | None = None,
    extra_config: dict | None = None,
    warm: Any = None,
) -> Any:
    """Prepare the data for ``config`` and train into ``run_dir`` (a new run folder when None); return the TrainResult.

    ``control``, ``extra_config`` and ``warm`` are passed to ``trainer.train`` (live weight requests; extra config
    fields; a model traced ahead by ``warm_training``).
    """
    from utkface_core import runs
    from utkface_core.training.trainer import train

    config.validate()
    emit = report or (lambda event: None)

    def decoded(done: int, total: int) -> None:
        emit({"kind": "decode", "done": done, "total": total})

    prepared = prepare_config_data(config, data, progress=decoded, stop=stop_event)
    config = _job_config(config, data, prepared)
    run_dir = Path(run_dir) if run_dir is not None else runs.create_run_dir()
    if prepared.excluded:
        emit({"kind": "status", "message": f"{len(prepared.excluded)} images could not be decoded and were left out"})
    return train(
        config,
        prepared.images,
        prepared.frame,
        prepared.split,
        run_dir,
        report=report,
        stop_event=stop_event,
        loss_weights=loss_weights,
        control=control,
        extra_config=extra_config,
        warm=warm,
    )


def _job_config(config: Any, data: str | Path, prepared: TrainingData) -> Any:
    # What the trainer is given: the config with its data named and fingerprinted (config.json says what was used).
    return dataclasses.replace(config, data_source=str(data), data_fingerprint=prepared.fingerprint)


def warm_training(config: Any, data: str | Path, *, stop: threading.Event | None = None) -> Any:
    """Decode the data of ``config`` and trace its model ahead (``trainer.warm_up``); None if ``stop`` came first.

    ``run_training`` of the same configuration and data given the result starts with its first batch.
    """
    from utkface_core.training.trainer import warm_up

    config.validate()
    prepared = prepare_config_data(config, data, stop=stop)
    if stop is not None and stop.is_set():
        return None
    return warm_up(_job_config(config, data, prepared), prepared.images, prepared.frame, prepared.split)


def start_training_job(
    config: Any, data: str | Path, *, owner: str | None, label: str | None = None, spawn: bool = True
) -> Any:
    """Start a training in its own worker process; return its ``jobs.JobInfo`` (the run folder is ``job.dir``).

    The run folder appears at once with a valid config.json (the starting weights, the owner) and a
    "preparing" status. One active training per owner: a second request while the first is active returns
    the first. Trainings of all owners queue for one slot. ``config`` is first clamped to the server's limits
    (``limits.clamp_train_config``: in public mode every run gets a time budget).
    """
    from utkface_core import runs
    from utkface_core.jobs import submit_job
    from utkface_core.limits import clamp_train_config

    config.validate()
    config, _ = clamp_train_config(config)  # the server's limits hold for every caller, not only the page's
    args = {"config": config.to_dict(), "data": str(data)}
    saved = {
        **config.to_dict(),
        "image_size": config.resolved_image_size(),
        "owner": owner,
        "data": {"source": str(data), "fingerprint": ""},
    }
    # Every visitor sees the label (the queue): it never names a folder.
    return submit_job(
        "train",
        args,
        owner,
        label=label or f"Training ({config.preset} preset)",
        files={runs.CONFIG_FILE: saved},
        spawn=spawn,
    )


def start_decode_job(index: DatasetIndex, size: int, *, registry: Any = None) -> Any:
    """Decode every kept image of ``index`` into the on-disk cache in the background; the job's result is its cache.

    The same cache serves training at that image size, so this work is done once.
    """
    from utkface_core.data.imagecache import build_image_cache
    from utkface_core.jobs import registry as default_registry

    paths = index.frame["path"].tolist()
    registry = registry or default_registry()

    def work(job: Any) -> Any:
        def progress(done: int, total: int) -> None:
            job.report(done / max(total, 1), f"decoded {done:,}/{total:,} images")

        return build_image_cache(paths, size, progress=progress, stop=job.stop_event)

    return registry.submit(
        "decode", f"Checking {len(paths):,} images", work, key=f"decode:{index.root}:{size}:{len(paths)}"
    )


def start_batch_prediction(
    model: Any,
    uploads: list[tuple[str, bytes]],
    *,
    run_name: str,
    image_size: int,
    detect: bool = True,
    age_mae: float | None = None,
    registry: Any = None,
) -> Any:
    """Predict uploaded photos and archives in a background job; the uploads are deleted when it ends.

    The job's result is ``prediction.predict_uploads``' frame (one row per face or per file in error).
    """
    import shutil
    import tempfile

    from utkface_core.inference.prediction import predict_uploads
    from utkface_core.jobs import registry as default_registry
    from utkface_core.paths import data_subdir

    registry = registry or default_registry()
    folder = Path(tempfile.mkdtemp(prefix="batch-", dir=data_subdir("uploads")))

    def work(job: Any) -> Any:
        def progress(done: int, total: int) -> None:
            job.report(done / max(total, 1), f"{done:,}/{total:,} images")

        try:
            return predict_uploads(
                model, uploads, folder, image_size=image_size, detect=detect, age_mae=age_mae, progress=progress
            )
        finally:
            shutil.rmtree(folder, ignore_errors=True)  # uploaded photos are not kept

    return registry.submit("predict", f"Predicting {len(uploads)} upload(s) with {run_name}", work)


def evaluation_job_key(run_dir: str | Path, model_mtime_ns: int, data_tag: str) -> str:
    """The key that makes one evaluation job per run, model file and data set, shared by every visitor."""
    return f"evaluate:{Path(run_dir)}:{model_mtime_ns}:{data_tag}"


def evaluation_job(
    run_dir: str | Path,
    model_mtime_ns: int,
    *,
    data_dir: str | Path | None,
    data_tag: str,
    owner: str | None,
    label: str,
    restart: bool = False,
    spawn: bool = True,
) -> Any:
    """The worker job evaluating a run's model (on its test split, or on every image of ``data_dir``).

    Returns the latest job of that run, model and data when there is one (whatever its state), else starts one.
    A stopped or interrupted job, or ``restart=True`` (after a failure), starts a new one.
    """
    from utkface_core import jobs

    key = evaluation_job_key(run_dir, model_mtime_ns, data_tag)
    job = next((j for j in reversed(jobs.list_jobs("evaluate")) if j.key == key), None)
    if job is None or restart or job.state in ("stopped", "interrupted"):
        args = {"run_dir": str(run_dir), "data_dir": str(data_dir) if data_dir is not None else None}
        job = jobs.submit_job("evaluate", args, owner, label=label, key=key, spawn=spawn)
    return job
