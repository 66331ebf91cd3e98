"""Checks on the real UTKFace development copy named by UTKFACE_DIR (skipped without it)."""

import os
from pathlib import Path

import pytest

from utkface_core.data.dataset import index_folder

UTK = os.environ.get("UTKFACE_DIR")
pytestmark = [
    pytest.mark.realdata,
    pytest.mark.skipif(not UTK or not Path(UTK).is_dir(), reason="UTKFACE_DIR is not set to the UTKFace folder"),
]


@pytest.fixture(scope="module")
def index():
    return index_folder(UTK)


def test_real_set_has_18911_files(index):
    assert index.files == 18911


def test_real_set_rejects_exactly_the_two_names_without_race(index):
    assert sorted(r["file"] for r in index.rejected) == [
        "39_1_20170116174525125.jpg.chip.jpg",
        "61_1_20170109150557335.jpg.chip.jpg",
    ]


def test_real_set_warns_on_exactly_the_four_known_defects(index):
    assert sorted(w["file"] for w in index.warnings) == [
        "24_0_1_20170116220224657 .jpg.chip.jpg",
        "28_1_2_201701161846515488.jpg.chip.jpg",
        "38_0_1_201701162330572788.jpg.chip.jpg",
        "55_0_0_20170116232725357jpg.chip.jpg",
    ]


def test_real_set_has_duplicate_groups_with_label_conflicts(index):
    assert len(index.duplicate_groups) > 100
    assert 0 < len(index.label_conflicts) < len(index.duplicate_groups)
    assert all(g["size"] >= 2 for g in index.duplicate_groups)
