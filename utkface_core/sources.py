"""Data sources the app can work on: the synthetic demo set, a folder, or an uploaded archive."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

DEMO_N = 3000
DEMO_SEED = 0


@dataclass(frozen=True)
class DataSource:
    """A resolved data set folder and how to label it in the UI."""

    kind: str  # "demo", "folder" or "archive"
    path: Path
    label: str

    @property
    def synthetic(self) -> bool:
        """True for the generated demo set."""
        return self.kind == "demo"


def demo_source(n: int = DEMO_N, seed: int = DEMO_SEED, progress: Callable[[int, int], None] | None = None) -> DataSource:
    """The synthetic demo set, generated on first use into the app data directory."""
    from .demo import ensure_demo_dataset

    path = ensure_demo_dataset(n=n, seed=seed, progress=progress)
    return DataSource("demo", path, f"Synthetic demo faces ({n} generated images, not real people)")


def folder_source(path: str | Path) -> DataSource:
    """A folder of UTKFace images; raise FileNotFoundError with advice when it is not there."""
    folder = Path(str(path).strip()).expanduser()
    if not str(path).strip():
        raise FileNotFoundError("no folder given: type the path of a folder holding UTKFace images")
    if not folder.exists():
        raise FileNotFoundError(f"folder {folder} does not exist: check the path (or set UTKFACE_DIR)")
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is a file, not a folder: give the folder that holds the images, or upload an archive")
    return DataSource("folder", folder.resolve(), f"Folder {folder.resolve()}")


def archive_source(data: bytes, name: str) -> DataSource:
    """An uploaded .zip/.tar/.tar.gz archive, safely extracted into the app data directory."""
    from .archive import extract_archive

    result = extract_archive(data)
    return DataSource("archive", result.dest, f"Archive {name} ({result.extracted} images extracted)")
