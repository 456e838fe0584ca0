"""Safe extraction: hostile archives are refused before anything is written; pairs survive."""

from __future__ import annotations

import errno
import io
import os
import stat
import struct
import tarfile
import warnings
import zipfile
from pathlib import Path

import pytest

from stages.dataset.extract import Source, detect_format, extract_dataset
from stages.dataset.folder import COMPLETE_MARKER, marker_matches
from stages.dataset.limits import ExtractLimits
from stages.errors import StageFailed
from tests.support.archives import (
    TAR_END,
    files_under,
    refusal,
    tar_member,
    write_input,
)
from tests.support.full_disk import fill_volume, written
from tests.support.media import make_zip


def test_zip_slip_dotdot(tmp_path: Path) -> None:
    msg = refusal(tmp_path, make_zip({"ok.jpg": b"x", "../evil.jpg": b"x"}))
    assert '"../evil.jpg" points outside the archive' in msg


def test_absolute_path(tmp_path: Path) -> None:
    msg = refusal(tmp_path, make_zip({"/etc/evil.jpg": b"x"}))
    assert "absolute path" in msg


def test_zip_symlink_entry(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        info = zipfile.ZipInfo("link.jpg")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, "/etc/passwd")
    assert "symbolic link" in refusal(tmp_path, buf.getvalue())


def test_ratio_bomb(tmp_path: Path) -> None:
    data = make_zip({"bomb.png": b"\0" * (8 << 20)}, method=zipfile.ZIP_DEFLATED)
    assert "compression bomb" in refusal(tmp_path, data)


def test_too_many_files(tmp_path: Path) -> None:
    data = make_zip({f"{i}.txt": b"c" for i in range(11)})
    assert "more than 10 files" in refusal(tmp_path, data, limits=ExtractLimits(max_files=10))


def test_total_size_cap(tmp_path: Path) -> None:
    data = make_zip({"a.jpg": b"x" * 2000})
    msg = refusal(tmp_path, data, limits=ExtractLimits(max_total_bytes=1000))
    assert "unpacks to more than" in msg


def test_truncated_zip(tmp_path: Path) -> None:
    data = make_zip({"a.jpg": b"x" * 5000, "a.txt": b"cap"})
    assert "damaged or truncated" in refusal(tmp_path, data[: len(data) // 2])


def test_not_an_archive(tmp_path: Path) -> None:
    assert "not a zip or tar archive" in refusal(tmp_path, b"<html>login</html>")


def test_tar_with_device_file(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        info = tarfile.TarInfo("dev/null.jpg")
        info.type = tarfile.CHRTYPE
        tf.addfile(info)
    assert "device file" in refusal(tmp_path, buf.getvalue())


def test_tar_symlink_and_hardlink(tmp_path: Path) -> None:
    for kind in (tarfile.SYMTYPE, tarfile.LNKTYPE):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as tf:
            info = tarfile.TarInfo("x.jpg")
            info.type = kind
            info.linkname = "/etc/passwd"
            tf.addfile(info)
        sub = tmp_path / str(kind[0])
        sub.mkdir()
        assert "is a link" in refusal(sub, buf.getvalue())


def test_flatten_keeps_pairs_and_drops_junk(tmp_path: Path) -> None:
    data = make_zip(
        {
            "a/x.jpg": b"A-img",
            "a/x.txt": b"caption a",
            "b/x.jpg": b"B-img",
            "b/x.TXT": b"caption b",
            "top.png": b"T",
            "clip.MP4": b"V",
            "clip.txt": b"a clip",
            "__MACOSX/a/._x.jpg": b"junk",
            "a/.DS_Store": b"junk",
            ".hidden.jpg": b"junk",
            "notes.pdf": b"pdf",
            "orphan.txt": b"no media",
        }
    )
    archive = write_input(tmp_path, data, "weird-name.dat")  # the extension means nothing
    assert detect_format(archive) == "zip"
    result = extract_dataset(
        [Source(archive, "dataset.images_url")],
        tmp_path / "dataset",
        caption_fn=lambda text: "T, " + text,
    )
    images = tmp_path / "dataset" / "images"
    videos = tmp_path / "dataset" / "videos"
    assert sorted(p.name for p in images.iterdir()) == [
        "a__x.jpg",
        "a__x.txt",
        "b__x.jpg",
        "b__x.txt",
        "top.png",
    ]
    assert (images / "a__x.jpg").read_bytes() == b"A-img"
    assert (images / "a__x.txt").read_text() == "T, caption a"
    assert (images / "b__x.jpg").read_bytes() == b"B-img"
    assert (images / "b__x.txt").read_text() == "T, caption b"
    assert sorted(p.name for p in videos.iterdir()) == ["clip.MP4", "clip.txt"]
    assert result.dropped == 3
    assert result.ignored == ["notes.pdf"]
    assert result.orphan_captions == ["orphan.txt"]
    assert marker_matches(tmp_path / "dataset")
    # What later stages add does not make the extraction stale: a generated caption, and
    # diffusion-pipe's latent cache in each dataset folder.
    (images / "top.txt").write_text("T, a generated caption")
    (images / "cache" / "wan").mkdir(parents=True)
    (videos / "cache").mkdir()
    assert marker_matches(tmp_path / "dataset")
    (images / "top.png").unlink()
    assert not marker_matches(tmp_path / "dataset")


def test_tar_gz_and_second_archive_collisions(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in {"x.jpg": b"tar-img", "x.txt": b"tar cap"}.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    tar = write_input(tmp_path, buf.getvalue(), "one.zip")  # misnamed on purpose
    zip_ = write_input(tmp_path, make_zip({"x.jpg": b"zip-img", "x.txt": b"zip cap"}), "two")
    extract_dataset(
        [Source(tar, "dataset.images_url"), Source(zip_, "dataset.videos_url")],
        tmp_path / "dataset",
    )
    images = tmp_path / "dataset" / "images"
    pairs = {
        (images / f"{stem}.jpg").read_bytes(): (images / f"{stem}.txt").read_bytes()
        for stem in ("x", "x_2")
    }
    assert pairs == {b"tar-img": b"tar cap", b"zip-img": b"zip cap"}


def test_reextract_replaces_atomically(tmp_path: Path) -> None:
    dataset = tmp_path / "dataset"
    first = write_input(tmp_path, make_zip({"old.jpg": b"o"}), "1")
    extract_dataset([Source(first, "f")], dataset)
    second = write_input(tmp_path, make_zip({"new.jpg": b"n"}), "2")
    extract_dataset([Source(second, "f")], dataset)
    assert [p.name for p in (dataset / "images").iterdir()] == ["new.jpg"]
    assert sorted(p.name for p in dataset.iterdir()) == [COMPLETE_MARKER, "images", "videos"]


# --- names ----------------------------------------------------------------------------------


def _zip_with_duplicates(names: list[str]) -> bytes:
    buf = io.BytesIO()
    with warnings.catch_warnings(), zipfile.ZipFile(buf, "w") as zf:
        warnings.simplefilter("ignore")  # zipfile warns of a duplicate name, and writes it
        for i, name in enumerate(names):
            zf.writestr(name, f"img{i}".encode())
    return buf.getvalue()


def _tar_with_duplicates(names: list[str]) -> bytes:
    return b"".join(tar_member(name, b"img") for name in names) + TAR_END


@pytest.mark.parametrize(
    ("data", "shown"),
    [
        (_zip_with_duplicates(["x.png", "x.png"]), "x.png"),
        (_zip_with_duplicates(["d/x.png", "d\\x.png"]), "d\\\\x.png"),
        (_zip_with_duplicates(["x.png", "./x.png"]), "./x.png"),
        (_tar_with_duplicates(["x.png", "x.png"]), "x.png"),
    ],
    ids=["zip-twice", "zip-backslash", "zip-dot-slash", "tar-twice"],
)
def test_duplicate_entriesrefusal(tmp_path: Path, data: bytes, shown: str) -> None:
    msg = refusal(tmp_path, data)
    assert f'entry "{shown}" is in the archive twice' in msg


def test_names_spelled_differently_are_opened_as_spelled(tmp_path: Path) -> None:
    # The planned name is normalised ("./x.png" -> "x.png"); the archive still holds the raw one.
    zip_ = write_input(tmp_path, make_zip({"./x.png": b"zx", "d\\y.png": b"zy"}), "a.zip")
    tar = write_input(tmp_path, _tar_with_duplicates(["./t.png"]), "b.tar")
    result = extract_dataset([Source(zip_, "f"), Source(tar, "g")], tmp_path / "dataset")
    assert sorted(result.images) == ["t.png", "x.png", "y.png"]
    assert (tmp_path / "dataset" / "images" / "y.png").read_bytes() == b"zy"


def test_colon_in_a_name_is_not_a_drive(tmp_path: Path) -> None:
    archive = write_input(tmp_path, make_zip({"a:b.png": b"img", "a:b.txt": b"cap"}))
    result = extract_dataset([Source(archive, "f")], tmp_path / "dataset")
    assert result.images == ["a_b.png"]
    assert (tmp_path / "dataset" / "images" / "a_b.txt").read_bytes() == b"cap"


@pytest.mark.parametrize("name", ["C:\\x.png", "C:/x.png", "c:\\d\\x.png", "\\x.png", "/x.png"])
def test_drive_absolute_namesrefusal(tmp_path: Path, name: str) -> None:
    assert "has an absolute path" in refusal(tmp_path, make_zip({name: b"img"}))


def test_overlong_namerefusal(tmp_path: Path) -> None:
    assert "longer than 4096" in refusal(tmp_path, make_zip({"a" * 5000 + ".png": b"i"}))


# --- what the archive holds -----------------------------------------------------------------


def test_archive_of_archives_says_so(tmp_path: Path) -> None:
    inner = make_zip({"a.png": b"img", "a.txt": b"cap"})
    msg = refusal(tmp_path, make_zip({"inner.zip": inner, "more.tar.gz": b"x", "read.md": b"x"}))
    assert (
        "dataset.images_url: the archive holds no images or videos, only other archives "
        "(inner.zip, more.tar.gz); nested archives are not unpacked: put the media files in "
        "one archive"
    ) in msg


def test_nested_archive_next_to_media_is_ignored(tmp_path: Path) -> None:
    data = make_zip({"a.png": b"img", "old.zip": make_zip({"b.png": b"img"})})
    result = extract_dataset([Source(write_input(tmp_path, data), "f")], tmp_path / "dataset")
    assert result.images == ["a.png"]
    assert result.ignored == ["old.zip"]


def test_zip_of_an_unknown_versionrefusal(tmp_path: Path) -> None:
    data = bytearray(make_zip({"a.png": b"img"}))
    central = data.index(b"PK\x01\x02")
    data[central + 6 : central + 8] = struct.pack("<H", 99)  # "needs version 9.9 to extract"
    assert "uses a format this worker cannot read" in refusal(tmp_path, bytes(data))


def test_read_error_does_not_name_the_workers_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = make_zip({"a.png": b"img"})

    def fail(path: Path, *args: object, **kwargs: object) -> zipfile.ZipFile:
        raise OSError(errno.EIO, os.strerror(errno.EIO), str(path))

    monkeypatch.setattr(zipfile, "ZipFile", fail)
    msg = refusal(tmp_path, data)
    assert "damaged or truncated (OSError: Input/output error)" in msg
    assert str(tmp_path) not in msg


def _corrupt_crc() -> bytes:
    data = make_zip({"a.png": b"hello image"})
    return data.replace(b"hello image", b"jello image")


def _deflate64() -> bytes:
    data = bytearray(make_zip({"a.png": b"hello image"}))
    local, central = data.index(b"PK\x03\x04"), data.index(b"PK\x01\x02")
    data[local + 8 : local + 10] = data[central + 10 : central + 12] = struct.pack("<H", 9)
    return bytes(data)


@pytest.mark.parametrize("data", [_corrupt_crc(), _deflate64()], ids=["bad-crc", "deflate64"])
def test_unreadable_entry_datarefusal(tmp_path: Path, data: bytes) -> None:
    msg = refusal(tmp_path, data)
    assert 'entry "a.png" cannot be read' in msg


# --- a full disk ----------------------------------------------------------------------------


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT], ids=["ENOSPC", "EDQUOT"])
def test_full_disk_is_a_stage_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    archive = write_input(tmp_path, make_zip({"a.png": b"img-a", "a.txt": b"cap", "b.png": b"img"}))
    dataset = tmp_path / "job" / "dataset"
    dataset.parent.mkdir()
    before = files_under(tmp_path)
    fill_volume(monkeypatch, code, lambda path, mode: dataset in path.parents and written(mode))
    with pytest.raises(StageFailed) as exc:
        extract_dataset([Source(archive, "dataset.images_url")], dataset)
    msg = str(exc.value)
    assert msg.startswith("dataset.images_url: ")
    assert "disk is full" in msg
    assert "free space" in msg
    assert str(tmp_path) not in msg
    assert "staging" not in msg
    assert files_under(tmp_path) == before, "a half-written file or folder was left"
