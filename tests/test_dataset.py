import json
import shutil

import pytest

from tests.conftest import write_jpeg
from utkface_core.data.dataset import index_folder


def test_index_counts_labels_rejections_and_warnings(utk_folder):
    index = index_folder(utk_folder)
    summary = index.summary()
    assert summary["files"] == 20
    assert summary["labelled"] == 19
    assert [r["file"] for r in summary["rejected"]] == ["39_1_20170116174525125.jpg.chip.jpg"]
    assert len(summary["warnings"]) == 3
    assert summary["non_images"] == 1


def test_frame_has_the_contract_columns(utk_folder):
    frame = index_folder(utk_folder).frame
    assert {"path", "file", "age", "gender", "race", "gender_name", "race_name", "hash"} <= set(frame.columns)
    row = frame[frame["file"] == "24_0_1_20170116220224657 .jpg.chip.jpg"].iloc[0]
    assert (row.age, row.gender_name, row.race_name) == (24, "male", "Black")


def test_duplicates_are_grouped_and_conflicts_flagged(utk_folder):
    index = index_folder(utk_folder)
    assert len(index.duplicate_groups) == 2
    assert len(index.label_conflicts) == 1
    assert index.label_conflicts[0]["conflicting_fields"] == ["age", "race"]


def test_default_policy_keeps_one_agreeing_and_drops_conflicts(utk_folder):
    index = index_folder(utk_folder)
    files = set(index.frame["file"])
    assert len(index.frame) == 19 - 1 - 2
    assert not {"40_1_1_20170101000000003.jpg.chip.jpg", "45_1_3_20170101000000004.jpg.chip.jpg"} & files


def test_keep_all_policy_keeps_everything(utk_folder):
    assert len(index_folder(utk_folder, policy="keep-all").frame) == 19


def test_same_image_in_two_subfolders_counts_once(tmp_path, app_dir):
    for sub in ("UTKFace", "utkface_aligned_cropped/UTKFace"):
        write_jpeg(tmp_path / "kaggle" / sub / "25_0_0_20170116174525125.jpg.chip.jpg", seed=1)
    write_jpeg(tmp_path / "kaggle" / "crop_part1" / "26_1_0_20170116174525126.jpg.chip.jpg", seed=2)
    index = index_folder(tmp_path / "kaggle")
    assert index.files == 2
    assert index.copies == 1
    assert index.duplicate_groups == []


def test_names_only_index_skips_hashing(utk_folder):
    index = index_folder(utk_folder, hash_contents=False)
    assert (index.all_frame["hash"] == "").all()
    assert index.duplicate_groups == []


def test_cached_index_is_rebuilt_when_a_file_changes(utk_folder):
    first = index_folder(utk_folder)
    write_jpeg(utk_folder / "33_0_2_20170101000000099.jpg.chip.jpg", seed=999)
    second = index_folder(utk_folder)
    assert len(second.all_frame) == len(first.all_frame) + 1


def test_summary_is_json_with_the_cli_keys(utk_folder):
    summary = json.loads(json.dumps(index_folder(utk_folder).summary()))
    for key in (
        "files",
        "labelled",
        "rejected",
        "warnings",
        "duplicate_groups",
        "label_conflicts",
        "by_gender",
        "by_race",
        "by_age_bin",
    ):
        assert key in summary


def test_fingerprint_changes_with_content(utk_folder):
    before = index_folder(utk_folder).fingerprint()
    shutil.move(utk_folder / "20_0_0_20170116174520000.jpg.chip.jpg", utk_folder.parent / "moved.jpg")
    assert index_folder(utk_folder).fingerprint() != before


def test_missing_folder_raises_with_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        index_folder(tmp_path / "nope")


def test_unknown_policy_raises(utk_folder):
    with pytest.raises(ValueError, match="duplicate policy"):
        index_folder(utk_folder, policy="random")
