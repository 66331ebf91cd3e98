"""Indexing a UTKFace folder: labels from names, content hashes, duplicates, and a summary report."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from utkface_core import paths
from utkface_core.data.names import NameRejected, parse_name
from utkface_core.files import TEMP_PATTERN, sweep_stale_temp, write_atomic
from utkface_core.labels import GENDERS, HEADS, IMAGE_SUFFIXES, RACES

Progress = Callable[[int, int], None]
DUPLICATE_POLICIES = ("keep-one-drop-conflicts", "keep-one", "keep-all")
AGE_BINS = (0, 10, 20, 30, 40, 50, 60, 70, 80, 200)
INDEX_VERSION = 3
COLUMNS = ["path", "file", *HEADS, "gender_name", "race_name", "hash", "warning"]
_STALE_TMP_SECONDS = 3600  # an index is written in well under this


@dataclass
class DatasetIndex:
    """The labelled images of a folder plus everything that was wrong with it."""

    root: Path
    all_frame: pd.DataFrame  # one row per distinct labelled image, duplicates included
    frame: pd.DataFrame  # rows kept under the duplicate policy
    rejected: list[dict] = field(default_factory=list)
    warnings: list[dict] = field(default_factory=list)
    non_images: list[str] = field(default_factory=list)
    copies: int = 0  # the same file (name and bytes) found again in another subfolder
    duplicate_groups: list[dict] = field(default_factory=list)
    policy: str = DUPLICATE_POLICIES[0]
    _fingerprint: str = ""  # filled by index_folder: pages ask for it on every rerun

    @property
    def files(self) -> int:
        """Image files counted once each (rejected names included)."""
        return len(self.all_frame) + len(self.rejected)

    @property
    def label_conflicts(self) -> list[dict]:
        """Duplicate groups whose names disagree on a label."""
        return [g for g in self.duplicate_groups if g["conflict"]]

    def fingerprint(self) -> str:
        """A short hash of the kept images and their labels: identifies the data set in run configs."""
        if self._fingerprint:
            return self._fingerprint
        digest = hashlib.sha256()
        for row in self.frame[["file", *HEADS, "hash"]].itertuples(index=False):
            digest.update(f"{row.file}|{row.age}|{row.gender}|{row.race}|{row.hash}\n".encode())
        return digest.hexdigest()[:16]

    def summary(self) -> dict:
        """The JSON summary printed by ``python -m utkface_core index --json``."""
        kept = self.frame
        bins = pd.cut(kept["age"], bins=list(AGE_BINS), right=False)
        by_bin = {f"{int(iv.left)}-{int(iv.right) - 1}": int(n) for iv, n in bins.value_counts(sort=False).items()}
        return {
            "root": str(self.root),
            "files": self.files,
            "labelled": len(self.all_frame),
            "kept": len(kept),
            "rejected": self.rejected,
            "warnings": self.warnings,
            "non_images": len(self.non_images),
            "copies_in_other_folders": self.copies,
            "duplicate_policy": self.policy,
            "duplicate_groups": len(self.duplicate_groups),
            "duplicate_images": int(sum(g["size"] for g in self.duplicate_groups)),
            "label_conflicts": len(self.label_conflicts),
            "dropped_by_policy": len(self.all_frame) - len(kept),
            "by_gender": {name: int((kept["gender"] == i).sum()) for i, name in enumerate(GENDERS)},
            "by_race": {name: int((kept["race"] == i).sum()) for i, name in enumerate(RACES)},
            "by_age_bin": by_bin,
        }


def _walk(root: Path) -> tuple[list[Path], list[str]]:
    images: list[Path] = []
    others: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d != "__MACOSX")
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            full = Path(dirpath) / name
            if name.lower().endswith(IMAGE_SUFFIXES) or name.lower().endswith("jpg.chip.jpg"):
                images.append(full)
            else:
                others.append(str(full.relative_to(root)))
    return images, others


def hash_file(path: str | Path) -> str:
    """Return the SHA-1 hex digest of a file's bytes (identity of an image, not security)."""
    with open(path, "rb") as handle:
        return hashlib.sha1(handle.read()).hexdigest()


def _hash_all(paths_: list[str], progress: Progress | None, workers: int | None) -> list[str]:
    out: list[str] = [""] * len(paths_)
    total = len(paths_)
    step = max(1, total // 100)

    def one(i: int) -> None:
        try:
            out[i] = hash_file(paths_[i])
        except OSError:
            out[i] = ""  # unreadable: the image cache reports it

    with ThreadPoolExecutor(max_workers=workers or min(8, (os.cpu_count() or 1) * 2)) as pool:
        for done, _ in enumerate(pool.map(one, range(total)), start=1):
            if progress and (done % step == 0 or done == total):
                progress(done, total)
    return out


def _stat_key(root: Path, files: list[Path], hash_contents: bool) -> str:
    digest = hashlib.sha256(f"{INDEX_VERSION}|{root}|{hash_contents}".encode())
    for path in files:
        st = path.stat()
        digest.update(f"{path}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:24]


def index_folder(
    root: str | Path,
    *,
    hash_contents: bool = True,
    policy: str = DUPLICATE_POLICIES[0],
    progress: Progress | None = None,
    workers: int | None = None,
    use_cache: bool = True,
) -> DatasetIndex:
    """Index a folder of UTKFace images recursively.

    Labels come from file names (defects recovered with a warning, unusable names rejected with a
    reason); non-image files are counted and ignored; a file met again in another subfolder with the
    same name and bytes counts once; byte-identical images under different names form duplicate
    groups, handled by ``policy``. With ``use_cache`` the hashed index is reused while no file changed.
    """
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise FileNotFoundError(f"data folder {root} does not exist or is not a folder; check the path")
    if policy not in DUPLICATE_POLICIES:
        raise ValueError(f"unknown duplicate policy {policy!r}; choose one of {', '.join(DUPLICATE_POLICIES)}")
    files, others = _walk(root)
    cache_file = None
    if use_cache:
        cache_file = paths.data_subdir("index") / f"{_stat_key(root, files, hash_contents)}.pkl"
        if cache_file.exists():
            try:
                with open(cache_file, "rb") as handle:
                    cached: DatasetIndex = pickle.load(handle)
                if cached.policy != policy:
                    cached.frame = _apply_policy(cached.all_frame, cached.duplicate_groups, policy)
                    cached.policy = policy
                    cached._fingerprint = ""
                    cached._fingerprint = cached.fingerprint()
                return cached
            except Exception:  # noqa: BLE001 - a damaged cache is rebuilt, never fatal
                cache_file.unlink(missing_ok=True)

    rows: list[dict] = []
    rejected: list[dict] = []
    warnings: list[dict] = []
    for path in files:
        rel = str(path.relative_to(root))
        try:
            parsed = parse_name(path.name)
        except NameRejected as exc:
            rejected.append({"file": rel, "reason": str(exc)})
            continue
        if parsed.warning:
            warnings.append({"file": rel, "reason": parsed.warning})
        rows.append(
            {
                "path": str(path),
                "file": path.name,
                "age": parsed.age,
                "gender": parsed.gender,
                "race": parsed.race,
                "gender_name": GENDERS[parsed.gender],
                "race_name": RACES[parsed.race],
                "hash": "",
                "warning": parsed.warning or "",
            }
        )
    frame = pd.DataFrame(rows, columns=COLUMNS)
    frame = frame.astype({"age": "int16", "gender": "int8", "race": "int8"})
    if hash_contents and len(frame):
        frame["hash"] = _hash_all(frame["path"].tolist(), progress, workers)
        identity = frame["file"] + "|" + frame["hash"]
    else:
        identity = frame["file"]
    # The Kaggle layout ships the same files in several subfolders: count each once.
    copies = int(identity.duplicated().sum())
    frame = frame[~identity.duplicated()].reset_index(drop=True)
    rejected = _dedupe_reports(rejected)
    warnings = _dedupe_reports(warnings)
    groups = _duplicate_groups(frame) if hash_contents else []
    result = DatasetIndex(
        root=root,
        all_frame=frame,
        frame=_apply_policy(frame, groups, policy),
        rejected=rejected,
        warnings=warnings,
        non_images=others,
        copies=copies,
        duplicate_groups=groups,
        policy=policy,
    )
    result._fingerprint = result.fingerprint()
    if cache_file is not None and hash_contents:

        def save(tmp: Path) -> None:
            with open(tmp, "wb") as handle:
                pickle.dump(result, handle)

        sweep_stale_temp(cache_file.parent, TEMP_PATTERN, _STALE_TMP_SECONDS)  # left by killed writers
        write_atomic(cache_file, save)
    return result


def _dedupe_reports(reports: list[dict]) -> list[dict]:
    seen: set[str] = set()
    out = []
    for report in reports:
        name = Path(report["file"]).name
        if name not in seen:
            seen.add(name)
            out.append(report)
    return out


def _duplicate_groups(frame: pd.DataFrame) -> list[dict]:
    hashed = frame[frame["hash"] != ""]
    dup = hashed[hashed["hash"].duplicated(keep=False)]
    groups = []
    for digest, members in dup.groupby("hash", sort=True):
        labels = members[list(HEADS)].drop_duplicates()
        groups.append(
            {
                "hash": digest,
                "size": len(members),
                "files": members["file"].tolist(),
                "rows": members.index.tolist(),
                "conflict": len(labels) > 1,
                "conflicting_fields": [c for c in HEADS if members[c].nunique() > 1],
            }
        )
    return groups


def _apply_policy(frame: pd.DataFrame, groups: list[dict], policy: str) -> pd.DataFrame:
    if policy == "keep-all" or not groups:
        return frame
    drop: list[int] = []
    for group in groups:
        rows = group["rows"]
        if group["conflict"] and policy == "keep-one-drop-conflicts":
            drop.extend(rows)
        else:
            drop.extend(rows[1:])
    return frame.drop(index=drop).reset_index(drop=True)


def summary_text(index: DatasetIndex) -> str:
    """A human-readable summary for the terminal."""
    s = index.summary()
    lines = [
        f"Data set: {s['root']}",
        f"  image files: {s['files']}  labelled: {s['labelled']}  kept: {s['kept']}  "
        f"non-image files ignored: {s['non_images']}",
        f"  rejected names: {len(s['rejected'])}  lenient warnings: {len(s['warnings'])}",
        f"  duplicate groups: {s['duplicate_groups']} ({s['duplicate_images']} images), "
        f"label conflicts: {s['label_conflicts']},"
        f" dropped by policy '{s['duplicate_policy']}': {s['dropped_by_policy']}",
        "  by gender: " + ", ".join(f"{k} {v}" for k, v in s["by_gender"].items()),
        "  by race: " + ", ".join(f"{k} {v}" for k, v in s["by_race"].items()),
        "  by age: " + ", ".join(f"{k}: {v}" for k, v in s["by_age_bin"].items()),
    ]
    for item in s["rejected"]:
        lines.append(f"  REJECTED {item['file']}: {item['reason']}")
    for item in s["warnings"]:
        lines.append(f"  WARNING  {item['file']}: {item['reason']}")
    return "\n".join(lines)


def summary_json(index: DatasetIndex) -> str:
    """The summary as a JSON string."""
    return json.dumps(index.summary(), indent=2)
