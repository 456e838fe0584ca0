"""Safe extraction: hostile archives are refused before anything is written; pairs survive."""

from __future__ import annotations

import io
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest

from stages.dataset.extract import Source, detect_format, extract_dataset
from stages.dataset.folder import COMPLETE_MARKER, marker_matches
from stages.dataset.limits import ExtractLimits
from stages.errors import ArchiveRefused
from tests.support.media import make_zip


def _write(tmp: Path, data: bytes, name: str = "in.bin") -> Path:
    path = tmp / name
    path.write_bytes(data)
    return path


def _everything(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def _refused(tmp: Path, data: bytes, *, limits: ExtractLimits | None = None) -> str:
    job = tmp / "job"
    job.mkdir()
    archive = _write(tmp, data)
    before = _everything(tmp)
    with pytest.raises(ArchiveRefused) as exc:
        extract_dataset([Source(archive, "dataset.images_url")], job / "dataset", limits=limits)
    assert _everything(tmp) == before, "nothing may be written when an archive is refused"
    assert "dataset.images_url" in str(exc.value)
    return str(exc.value)


def test_zip_slip_dotdot(tmp_path: Path) -> None:
    msg = _refused(tmp_path, make_zip({"ok.jpg": b"x", "../evil.jpg": b"x"}))
    assert '"../evil.jpg" points outside the archive' in msg


def test_absolute_path(tmp_path: Path) -> None:
    msg = _refused(tmp_path, make_zip({"/etc/evil.jpg": b"x"}))
    assert "absolute path" in msg


def test_zip_symlink_entry(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        info = zipfile.ZipInfo("link.jpg")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, "/etc/passwd")
    assert "symbolic link" in _refused(tmp_path, buf.getvalue())


def test_ratio_bomb(tmp_path: Path) -> None:
    data = make_zip({"bomb.png": b"\0" * (8 << 20)}, method=zipfile.ZIP_DEFLATED)
    assert "compression bomb" in _refused(tmp_path, data)


def test_too_many_files(tmp_path: Path) -> None:
    data = make_zip({f"{i}.txt": b"c" for i in range(11)})
    assert "more than 10 files" in _refused(tmp_path, data, limits=ExtractLimits(max_files=10))


def test_total_size_cap(tmp_path: Path) -> None:
    data = make_zip({"a.jpg": b"x" * 2000})
    msg = _refused(tmp_path, data, limits=ExtractLimits(max_total_bytes=1000))
    assert "unpacks to more than" in msg


def test_truncated_zip(tmp_path: Path) -> None:
    data = make_zip({"a.jpg": b"x" * 5000, "a.txt": b"cap"})
    assert "damaged or truncated" in _refused(tmp_path, data[: len(data) // 2])


def test_not_an_archive(tmp_path: Path) -> None:
    assert "not a zip or tar archive" in _refused(tmp_path, b"<html>login</html>")


def test_tar_with_device_file(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        info = tarfile.TarInfo("dev/null.jpg")
        info.type = tarfile.CHRTYPE
        tf.addfile(info)
    assert "device file" in _refused(tmp_path, buf.getvalue())


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
        assert "is a link" in _refused(sub, buf.getvalue())


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
    archive = _write(tmp_path, data, "weird-name.dat")  # the extension means nothing
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
    tar = _write(tmp_path, buf.getvalue(), "one.zip")  # misnamed on purpose
    zip_ = _write(tmp_path, make_zip({"x.jpg": b"zip-img", "x.txt": b"zip cap"}), "two")
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
    first = _write(tmp_path, make_zip({"old.jpg": b"o"}), "1")
    extract_dataset([Source(first, "f")], dataset)
    second = _write(tmp_path, make_zip({"new.jpg": b"n"}), "2")
    extract_dataset([Source(second, "f")], dataset)
    assert [p.name for p in (dataset / "images").iterdir()] == ["new.jpg"]
    assert sorted(p.name for p in dataset.iterdir()) == [COMPLETE_MARKER, "images", "videos"]
