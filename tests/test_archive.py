"""Tests for utkface_core.data.archive: safe extraction of uploaded .zip/.tar/.tar.gz archives."""

from __future__ import annotations

import io
import stat
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from utkface_core.data import archive
from utkface_core.data.archive import ArchiveError, ExtractResult, extract_archive


@pytest.fixture(autouse=True)
def _app_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("UTKFACE_APP_DIR", str(tmp_path / "app"))
    monkeypatch.setenv("UTKFACE_RUNS_DIR", str(tmp_path / "runs"))


def _jpeg(seed: int = 0, size: int = 8) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


GOOD_MEMBERS = {
    "faces/25_0_1_2017.jpg.chip.jpg": _jpeg(1),
    "faces/sub/40_1_2_2017.jpg.chip.jpg": _jpeg(2),
    "top.png": _jpeg(3),
    "faces/README.txt": b"hello",
    "__MACOSX/faces/._25_0_1_2017.jpg.chip.jpg": b"junk",
    "faces/.DS_Store": b"junk",
}


def _zip_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(zipfile.ZipInfo(name), data)
    return buf.getvalue()


def _tar_bytes(members: dict[str, bytes], mode: str = "w") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _tar_with(info: tarfile.TarInfo) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        good = tarfile.TarInfo("ok.jpg")
        data = _jpeg()
        good.size = len(data)
        tf.addfile(good, io.BytesIO(data))
        tf.addfile(info)
    return buf.getvalue()


def _leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


def _check_good(result: ExtractResult, root: Path) -> None:
    assert result.dest.parent == root
    assert result.extracted == 3
    files = sorted(str(p.relative_to(result.dest)) for p in result.dest.rglob("*") if p.is_file())
    assert files == ["faces/25_0_1_2017.jpg.chip.jpg", "faces/sub/40_1_2_2017.jpg.chip.jpg", "top.png"]
    assert (result.dest / "faces/sub/40_1_2_2017.jpg.chip.jpg").read_bytes() == GOOD_MEMBERS[
        "faces/sub/40_1_2_2017.jpg.chip.jpg"
    ]
    assert [s["file"] for s in result.skipped] == ["faces/README.txt"]
    assert "not an image" in result.skipped[0]["reason"]


@pytest.mark.parametrize(
    "make", [_zip_bytes, _tar_bytes, lambda m: _tar_bytes(m, "w:gz")], ids=["zip", "tar", "tar.gz"]
)
def test_good_archive_extracts_images_only_with_folders(tmp_path, make):
    root = tmp_path / "uploads"
    result = extract_archive(make(GOOD_MEMBERS), dest_root=root)
    _check_good(result, root)


def test_kind_detected_by_content_not_name(tmp_path):
    upload = tmp_path / "faces.zip"  # really a tar.gz
    upload.write_bytes(_tar_bytes(GOOD_MEMBERS, "w:gz"))
    _check_good(extract_archive(upload, dest_root=tmp_path / "uploads"), tmp_path / "uploads")


def test_file_object_upload_with_name(tmp_path):
    upload = io.BytesIO(_zip_bytes(GOOD_MEMBERS))
    upload.name = "faces.zip"
    upload.read()  # someone already read it: extraction must still see the whole file
    _check_good(extract_archive(upload, dest_root=tmp_path / "u"), tmp_path / "u")


def test_dest_folder_named_by_content_hash(tmp_path):
    import hashlib

    data = _zip_bytes(GOOD_MEMBERS)
    result = extract_archive(data, dest_root=tmp_path)
    assert result.dest.name == hashlib.sha256(data).hexdigest()[:16]


def test_default_dest_root_is_uploads_data_dir(tmp_path):
    result = extract_archive(_zip_bytes(GOOD_MEMBERS))
    assert result.dest.parent == (tmp_path / "app" / "uploads").resolve()


def test_reextracting_reuses_folder(tmp_path, monkeypatch):
    data = _zip_bytes(GOOD_MEMBERS)
    first = extract_archive(data, dest_root=tmp_path)

    def boom(*args, **kwargs):
        raise AssertionError("archive was extracted again")

    monkeypatch.setattr(archive, "_write_members", boom)
    second = extract_archive(data, dest_root=tmp_path)
    assert second == first


@pytest.mark.parametrize(
    "name",
    ["../evil.jpg", "faces/../../evil.jpg", "/etc/evil.jpg", "C:/evil.jpg", "..\\evil.jpg", "a\\..\\..\\evil.jpg"],
)
def test_zip_path_traversal_rejected(tmp_path, name):
    data = _zip_bytes({"ok.jpg": _jpeg(), name: _jpeg(1)})
    with pytest.raises(ArchiveError, match="not safe to extract") as info:
        extract_archive(data, dest_root=tmp_path / "u")
    assert repr(name) in str(info.value)
    assert _leftovers(tmp_path / "u") == []
    assert not (tmp_path / "evil.jpg").exists()


@pytest.mark.parametrize("name", ["../evil.jpg", "/abs/evil.jpg"])
def test_tar_path_traversal_rejected(tmp_path, name):
    data = _tar_bytes({"ok.jpg": _jpeg(), name: _jpeg(1)})
    with pytest.raises(ArchiveError, match="not safe to extract"):
        extract_archive(data, dest_root=tmp_path / "u")
    assert _leftovers(tmp_path / "u") == []


def test_tar_symlink_rejected(tmp_path):
    link = tarfile.TarInfo("link.jpg")
    link.type = tarfile.SYMTYPE
    link.linkname = "/etc/passwd"
    with pytest.raises(ArchiveError, match="'link.jpg' is a symbolic link"):
        extract_archive(_tar_with(link), dest_root=tmp_path / "u")
    assert _leftovers(tmp_path / "u") == []


def test_tar_hardlink_rejected(tmp_path):
    link = tarfile.TarInfo("hard.jpg")
    link.type = tarfile.LNKTYPE
    link.linkname = "ok.jpg"
    with pytest.raises(ArchiveError, match="'hard.jpg' is a hard link"):
        extract_archive(_tar_with(link), dest_root=tmp_path / "u")


@pytest.mark.parametrize("kind, why", [(tarfile.FIFOTYPE, "FIFO"), (tarfile.CHRTYPE, "device")])
def test_tar_special_files_rejected(tmp_path, kind, why):
    special = tarfile.TarInfo("dev.jpg")
    special.type = kind
    with pytest.raises(ArchiveError, match=why):
        extract_archive(_tar_with(special), dest_root=tmp_path / "u")


def test_zip_symlink_rejected(tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("ok.jpg", _jpeg())
        info = zipfile.ZipInfo("link.jpg")
        info.create_system = 3
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(ArchiveError, match="'link.jpg' is a symbolic link"):
        extract_archive(buf.getvalue(), dest_root=tmp_path / "u")
    assert _leftovers(tmp_path / "u") == []


def test_over_member_cap_rejected(tmp_path):
    data = _zip_bytes({f"{i}.jpg": _jpeg(i) for i in range(5)})
    with pytest.raises(ArchiveError, match="more than 3 members"):
        extract_archive(data, dest_root=tmp_path / "u", max_members=3)
    assert _leftovers(tmp_path / "u") == []


def test_over_declared_total_size_rejected(tmp_path):
    members = {f"{i}.jpg": _jpeg(i) for i in range(4)}
    cap = sum(len(d) for d in members.values()) - 1
    with pytest.raises(ArchiveError, match="expands to more than"):
        extract_archive(_tar_bytes(members, "w:gz"), dest_root=tmp_path / "u", max_total_bytes=cap)
    assert _leftovers(tmp_path / "u") == []


def test_over_member_size_rejected(tmp_path):
    data = _zip_bytes({"big.jpg": _jpeg(size=64), "small.jpg": _jpeg()})
    with pytest.raises(ArchiveError, match="'big.jpg' is .* limit for one image"):
        extract_archive(data, dest_root=tmp_path / "u", max_member_bytes=1000)


def test_zip_bomb_is_rejected_before_writing(tmp_path, monkeypatch):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("bomb.jpg", b"\0" * (8 * 1024 * 1024))
    assert len(buf.getvalue()) < 64 * 1024
    monkeypatch.setattr(archive, "_write_members", lambda *a, **k: pytest.fail("wrote a bomb"))
    with pytest.raises(ArchiveError, match="expands to more than 1.0 MiB"):
        extract_archive(buf.getvalue(), dest_root=tmp_path / "u", max_total_bytes=1024**2)


def _lying_zip() -> bytes:
    """A stored zip whose headers declare 10 bytes for a member that really holds 5000."""
    real = bytes(range(256)) * 20
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("liar.jpg", real)
    data = bytearray(buf.getvalue())
    true_size = len(real).to_bytes(4, "little")
    fake_size = (10).to_bytes(4, "little")
    # Uncompressed size sits at offset 22 of the local header and 24 of the central header.
    local = data.find(b"PK\x03\x04")
    central = data.find(b"PK\x01\x02")
    assert data[local + 22 : local + 26] == true_size and data[central + 24 : central + 28] == true_size
    data[local + 22 : local + 26] = fake_size
    data[central + 24 : central + 28] = fake_size
    return bytes(data)


def test_lying_zip_header_rejected_and_cleaned_up(tmp_path):
    with pytest.raises(ArchiveError, match="liar.jpg"):
        extract_archive(_lying_zip(), dest_root=tmp_path / "u", max_total_bytes=100)
    assert _leftovers(tmp_path / "u") == []


def test_real_bytes_counted_while_writing(tmp_path, monkeypatch):
    data = _zip_bytes({"a.jpg": _jpeg(1), "b.jpg": _jpeg(2)})
    real_plan = archive._plan

    def understate(*args, **kwargs):
        members, skipped = real_plan(*args, **kwargs)
        for member in members:
            member.size = 10  # as if the headers lied
        return members, skipped

    monkeypatch.setattr(archive, "_plan", understate)
    with pytest.raises(ArchiveError, match="more data than its header declares"):
        extract_archive(data, dest_root=tmp_path / "u")
    assert _leftovers(tmp_path / "u") == []


@pytest.mark.parametrize("content", [b"just some text\n" * 100, _jpeg(), b""], ids=["text", "jpeg", "empty"])
def test_non_archive_rejected_with_message(tmp_path, content):
    upload = tmp_path / "upload.zip"
    upload.write_bytes(content)
    with pytest.raises(ArchiveError, match=r"upload.zip is not a \.zip, \.tar or \.tar\.gz archive; upload one"):
        extract_archive(upload, dest_root=tmp_path / "u")
    assert _leftovers(tmp_path / "u") == []


def test_archive_without_images_rejected(tmp_path):
    with pytest.raises(ArchiveError, match="contains no image files"):
        extract_archive(_zip_bytes({"notes.txt": b"x"}), dest_root=tmp_path / "u")
    assert _leftovers(tmp_path / "u") == []


@pytest.mark.parametrize("mode", ["w", "w:gz"])
def test_truncated_tar_rejected_and_cleaned_up(tmp_path, mode):
    members = {f"d/{i}.jpg": _jpeg(i, size=32) for i in range(6)}
    data = _tar_bytes(members, mode)
    with pytest.raises(ArchiveError, match="truncated"):
        extract_archive(data[: len(data) // 2], dest_root=tmp_path / "u")
    assert _leftovers(tmp_path / "u") == []


def test_duplicate_member_keeps_first(tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("a/x.jpg", _jpeg(1))
        zf.writestr("a\\x.jpg", _jpeg(2))
    result = extract_archive(buf.getvalue(), dest_root=tmp_path)
    assert result.extracted == 1
    assert (result.dest / "a" / "x.jpg").read_bytes() == _jpeg(1)
    assert result.skipped == [{"file": "a/x.jpg", "reason": "duplicate entry; the first copy was kept"}]


def test_missing_path_and_folder_rejected(tmp_path):
    with pytest.raises(ArchiveError, match="does not exist"):
        extract_archive(tmp_path / "nope.zip", dest_root=tmp_path / "u")
    with pytest.raises(ArchiveError, match="is a folder"):
        extract_archive(tmp_path, dest_root=tmp_path / "u")


@pytest.mark.parametrize("arg", ["max_members", "max_total_bytes", "max_member_bytes"])
@pytest.mark.parametrize("value", [0, -1, 1.5, True])
def test_bad_limits_rejected(tmp_path, arg, value):
    with pytest.raises(ValueError, match=arg):
        extract_archive(_zip_bytes(GOOD_MEMBERS), dest_root=tmp_path, **{arg: value})


def test_bad_source_type_rejected(tmp_path):
    with pytest.raises(TypeError, match="source must be"):
        extract_archive(12345, dest_root=tmp_path)  # type: ignore[arg-type]


# --- issue 8: bounded disk (ratio, totals, free space, per-session uploads) -----------------------


@pytest.fixture(scope="module")
def disk_bomb(tmp_path_factory) -> Path:
    from tests.hostile import write_zip_bomb

    return write_zip_bomb(tmp_path_factory.mktemp("bomb") / "bomb.zip")


def test_disk_bomb_zip_is_refused_before_writing_100_mb(disk_bomb, tmp_path):
    """The 4 MB zip of 63 x 63 MiB zeros; a file-size rlimit of 100 MB kills a process that writes more."""
    import subprocess
    import sys

    from tests.hostile import REPO, folder_bytes

    assert disk_bomb.stat().st_size < 5 * 1024**2
    script = (
        "import resource, sys; resource.setrlimit(resource.RLIMIT_FSIZE, (100 * 2**20, 100 * 2**20));"
        "from utkface_core.data.archive import extract_archive, ArchiveError\n"
        "try:\n extract_archive(open(sys.argv[1], 'rb').read(), dest_root=sys.argv[2]); print('EXTRACTED')\n"
        "except ArchiveError as exc:\n print('REFUSED', exc)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, str(disk_bomb), str(tmp_path / "u")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, f"killed or failed (exit {proc.returncode}): {proc.stderr[-500:]}"
    assert proc.stdout.startswith("REFUSED") and "decompression bomb" in proc.stdout
    assert folder_bytes(tmp_path / "u") < 100 * 1024**2


def _deflated_zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def test_compression_ratio_cap_applies_to_one_member(tmp_path):
    data = _deflated_zip({"a.jpg": _jpeg(1), "zeros.jpg": b"\0" * (8 * 1024**2)})
    with pytest.raises(ArchiveError, match=r"zeros\.jpg.*100 times"):
        extract_archive(data, dest_root=tmp_path / "u")
    assert not any((tmp_path / "u").rglob("*.jpg"))
    assert extract_archive(data, dest_root=tmp_path / "v", max_ratio=10_000).extracted == 2


def test_compression_ratio_cap_applies_to_a_whole_tar_gz(tmp_path):
    data = _tar_bytes({f"{i}.jpg": b"\0" * (2 * 1024**2) for i in range(4)}, "w:gz")
    with pytest.raises(ArchiveError, match="decompression bomb"):
        extract_archive(data, dest_root=tmp_path / "u")


def test_total_cap_defaults_to_the_limit(tmp_path, monkeypatch):
    monkeypatch.setenv("UTKFACE_MAX_ARCHIVE_BYTES", str(1024))
    with pytest.raises(ArchiveError, match="expands to more than 1.0 KiB"):
        extract_archive(_zip_bytes({f"{i}.jpg": _jpeg(i, size=32) for i in range(3)}), dest_root=tmp_path / "u")


def test_not_enough_free_space_is_refused_before_writing(tmp_path, monkeypatch):
    import shutil as shutil_mod

    monkeypatch.setattr(archive.shutil, "disk_usage", lambda _: shutil_mod._ntuple_diskusage(10**9, 10**9 - 100, 100))
    with pytest.raises(ArchiveError, match="not enough free disk space"):
        extract_archive(_zip_bytes(GOOD_MEMBERS), dest_root=tmp_path / "u")
    assert not any((tmp_path / "u").iterdir())


def test_error_messages_hold_no_server_path(tmp_path, monkeypatch):
    monkeypatch.setattr(archive.shutil, "disk_usage", lambda _: (_ for _ in ()).throw(OSError("x")))
    root = tmp_path / "secret-server-folder"
    for data in (_deflated_zip({"zeros.jpg": b"\0" * (8 * 1024**2)}), b"not an archive"):
        with pytest.raises(ArchiveError) as info:
            extract_archive(data, dest_root=root)
        assert "secret-server-folder" not in str(info.value)


def test_twenty_rapid_uploads_of_one_archive_keep_disk_flat(tmp_path):
    from tests.hostile import folder_bytes
    from utkface_core import paths
    from utkface_core.data import sources

    data = _zip_bytes({f"{20 + i}_0_0_2017.jpg.chip.jpg": _jpeg(i, size=64) for i in range(20)})
    uploads = paths.data_subdir("uploads")
    first = sources.archive_source(data, "faces.zip", session_id="session-one")
    after_one = folder_bytes(uploads)
    for _ in range(19):
        again = sources.archive_source(data, "faces.zip", session_id="session-one")
    assert again.path == first.path and folder_bytes(uploads) == after_one
    assert str(uploads) not in first.label


def test_uploads_are_per_session_and_released(tmp_path):
    from tests.hostile import folder_bytes
    from utkface_core import paths
    from utkface_core.data import sources

    a = sources.archive_source(_zip_bytes({"1.jpg": _jpeg(1)}), "a.zip", session_id="session-aaa")
    b = sources.archive_source(_zip_bytes({"2.jpg": _jpeg(2)}), "b.zip", session_id="session-aaa")
    other = sources.archive_source(_zip_bytes({"1.jpg": _jpeg(1)}), "a.zip", session_id="session-bbb")
    assert other.path != a.path and other.path.parent != a.path.parent
    assert sources.release_uploads("session-aaa", keep=b.path) == 1
    assert not a.path.exists() and b.path.exists()
    sources.release_uploads("session-aaa")
    sources.release_uploads("session-bbb")
    assert folder_bytes(paths.data_subdir("uploads")) == 0
    with pytest.raises(ValueError, match="session_id"):
        sources.session_upload_root("../x")
