"""Safe extraction: hostile archives are refused before anything is written; pairs survive."""

from __future__ import annotations

import errno
import io
import os
import stat
import struct
import tarfile
import tracemalloc
import warnings
import zipfile
from pathlib import Path
from typing import IO, Any

import pytest

from stages.dataset.extract import Source, detect_format, extract_dataset
from stages.dataset.folder import COMPLETE_MARKER, marker_matches
from stages.dataset.limits import ExtractLimits
from stages.errors import ArchiveRefused, StageFailed
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


# --- tar headers: bounded before tarfile reads them -----------------------------------------

END = b"\0" * 1024  # a tar's end-of-archive blocks
X, G = tarfile.XHDTYPE, tarfile.XGLTYPE


def _padded(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % tarfile.BLOCKSIZE)


def _block(kind: bytes, size: int, name: str = "././@PaxHeader") -> bytes:
    """One 512-byte header; GNU format writes a size past 8 GiB in base-256."""
    info = tarfile.TarInfo(name)
    info.type = kind
    info.size = size
    return info.tobuf(tarfile.GNU_FORMAT)


def _header(kind: bytes, payload: bytes) -> bytes:
    return _block(kind, len(payload)) + _padded(payload)


def _member(name: str, data: bytes) -> bytes:
    return _block(tarfile.REGTYPE, len(data), name) + _padded(data)


def _record(key: str, value: str) -> bytes:
    """A PAX record, "<length> <key>=<value>\\n", the length counting itself."""
    body = f" {key}={value}\n".encode()
    n = len(body) + 1
    while len(str(n)) + len(body) != n:
        n = len(str(n)) + len(body)
    return str(n).encode() + body


def _comment(size: int) -> bytes:
    """A PAX header payload of about `size` bytes: one long comment."""
    return _record("comment", "a" * (size - 20))


@pytest.mark.parametrize(
    "kind", [X, G, tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK], ids=["x", "g", "L", "K"]
)
def test_tar_header_refused_before_it_is_read(tmp_path: Path, kind: bytes) -> None:
    # The header claims 1 TiB: no read of it could succeed, so only a refusal made before the
    # read passes.
    data = _block(kind, 1 << 40) + _member("a.png", b"img") + END
    msg = _refused(tmp_path, data)
    assert "tar header" in msg
    assert "1.0 MiB limit" in msg


def test_tar_pax_header_memory_is_bounded(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", format=tarfile.PAX_FORMAT) as tf:
        info = tarfile.TarInfo("a.png")
        info.size = 3
        info.pax_headers = {"comment": "a" * (8 << 20)}
        tf.addfile(info, io.BytesIO(b"img"))
    data = buf.getvalue()
    assert len(data) < 64 << 10  # 8 MiB of header in a few KiB
    tracemalloc.start()
    try:
        msg = _refused(tmp_path, data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "tar header" in msg
    assert peak < 2 << 20, f"{peak} bytes traced: the header was read"


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        pytest.param(
            _header(X, _comment(3000)) + _header(X, _comment(3000)) + _member("a.png", b"i") + END,
            "tar headers of more than 4.0 KiB before one entry",
            id="chained",
        ),
        pytest.param(
            _header(G, _comment(3000))
            + _member("a.png", b"i")
            + _header(G, _comment(3000))
            + _member("b.png", b"i")
            + END,
            "tar global headers of more than 4.0 KiB",
            id="globals-in-all",
        ),
        pytest.param(
            _header(X, b"") * 9 + _member("a.png", b"i") + END,
            "more than 8 tar headers before one entry",
            id="chain-length",
        ),
        pytest.param(
            _header(G, b"".join(_record(f"k{i}", "v") for i in range(100)))
            + _member("a.png", b"i")
            + END,
            "a tar global header with more than 64 fields",
            id="global-fields",
        ),
    ],
)
def test_tar_header_chains_and_globals_are_bounded(
    tmp_path: Path, data: bytes, expected: str
) -> None:
    msg = _refused(tmp_path, data, limits=ExtractLimits(max_header_bytes=4096))
    assert expected in msg


def _old_sparse() -> bytes:
    return _block(tarfile.GNUTYPE_SPARSE, 0, "a.png") + END


def _pax_sparse_10() -> bytes:
    pax = b"".join(
        _record(k, v)
        for k, v in {
            "GNU.sparse.major": "1",
            "GNU.sparse.minor": "0",
            "GNU.sparse.name": "a.png",
            "GNU.sparse.realsize": "3",
        }.items()
    )
    body = _padded(b"1\n0\n3\n") + b"img"
    return _header(X, pax) + _member("GNUSparseFile.0/a.png", body) + END


def _pax_sparse_01() -> bytes:
    pax = _record("GNU.sparse.map", "0,3") + _record("GNU.sparse.size", "3")
    return _header(X, pax) + _member("a.png", b"img") + END


@pytest.mark.parametrize(
    "data", [_old_sparse(), _pax_sparse_10(), _pax_sparse_01()], ids=["gnu-S", "pax-1.0", "pax-0.1"]
)
def test_tar_sparse_members_refused(tmp_path: Path, data: bytes) -> None:
    # Their maps are read block by block with no bound; media files are never sparse.
    assert "sparse file" in _refused(tmp_path, data)


def test_tar_pax_headers_are_not_kept_per_member(tmp_path: Path) -> None:
    # tarfile keeps every member, each with a copy of its PAX header: 200 x 64 KiB here.
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for i in range(200):
            info = tarfile.TarInfo(f"{i}.png")
            info.size = 1
            info.pax_headers = {"comment": "a" * (64 << 10)}
            tf.addfile(info, io.BytesIO(b"i"))
    archive = _write(tmp_path, buf.getvalue(), "big.tar")
    tracemalloc.start()
    try:
        result = extract_dataset([Source(archive, "dataset.images_url")], tmp_path / "dataset")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(result.images) == 200
    assert peak < 6 << 20, f"{peak} bytes traced: the headers were kept"


@pytest.mark.parametrize("kind", [tarfile.REGTYPE, tarfile.DIRTYPE], ids=["files", "folders"])
def test_tar_headers_count_toward_the_ratio(tmp_path: Path, kind: bytes) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", format=tarfile.PAX_FORMAT) as tf:
        for i in range(8):
            info = tarfile.TarInfo(f"{i}.png")
            info.type = kind
            info.size = 1 if kind == tarfile.REGTYPE else 0
            info.pax_headers = {"comment": "a" * (512 << 10)}  # under the 1 MiB header cap
            tf.addfile(info, io.BytesIO(b"i") if kind == tarfile.REGTYPE else None)
    assert "expands more than 200x" in _refused(tmp_path, buf.getvalue())


def test_tar_folders_count_as_files(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for i in range(11):
            info = tarfile.TarInfo(f"d{i}")
            info.type = tarfile.DIRTYPE
            tf.addfile(info)
    msg = _refused(tmp_path, buf.getvalue(), limits=ExtractLimits(max_files=10))
    assert "more than 10 files" in msg


# --- zip central directory: counted before zipfile parses it --------------------------------


def _eocd_at(data: bytes) -> int:
    return data.rindex(b"PK\x05\x06")


def _zip64(entries: dict[str, bytes], monkeypatch: pytest.MonkeyPatch) -> bytes:
    """A zip with zip64 end records whose classic end record defers to them (0xFFFF...)."""
    with monkeypatch.context() as m:
        m.setattr(zipfile, "ZIP_FILECOUNT_LIMIT", 5)
        data = bytearray(make_zip(entries))
    assert b"PK\x06\x06" in data
    at = _eocd_at(bytes(data))
    data[at + 8 : at + 20] = struct.pack("<HHLL", 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF)
    return bytes(data)


def _lying_count(entries: dict[str, bytes]) -> bytes:
    data = bytearray(make_zip(entries))
    at = _eocd_at(bytes(data))
    data[at + 8 : at + 12] = struct.pack("<HH", 1, 1)  # 1 entry, says the end record
    return bytes(data)


def _no_zipfile(monkeypatch: pytest.MonkeyPatch) -> None:
    def parse(*args: object, **kwargs: object) -> zipfile.ZipFile:
        raise AssertionError("zipfile parsed a central directory that should have been refused")

    monkeypatch.setattr(zipfile, "ZipFile", parse)


@pytest.mark.parametrize("layout", ["end-record", "zip64", "lying-count", "folders"])
def test_zip_entry_count_refused_before_zipfile_parses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, layout: str
) -> None:
    entries = {f"{i}.txt": b"c" for i in range(11)}
    if layout == "folders":
        entries = {f"d{i}/": b"" for i in range(11)}
    data = {
        "zip64": lambda: _zip64(entries, monkeypatch),
        "lying-count": lambda: _lying_count(entries),
    }.get(layout, lambda: make_zip(entries))()
    _no_zipfile(monkeypatch)
    msg = _refused(tmp_path, data, limits=ExtractLimits(max_files=10))
    assert "more than 10 files" in msg


def test_zip64_end_records_are_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = _zip64({f"{i}.png": b"i" for i in range(11)}, monkeypatch)
    result = extract_dataset([Source(_write(tmp_path, data), "f")], tmp_path / "dataset")
    assert len(result.images) == 11


def test_zip_central_directory_size_is_bounded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # zipfile reads the whole central directory into memory: 9 entries of 128 KiB each here.
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for i in range(9):
            info = zipfile.ZipInfo(f"{i}.png")
            info.comment = b"c" * 65535
            info.extra = struct.pack("<HH", 0xCAFE, 65531) + b"e" * 65531
            zf.writestr(info, b"i")
    data = buf.getvalue()
    _no_zipfile(monkeypatch)
    msg = _refused(tmp_path, data, limits=ExtractLimits(max_files=10))
    assert "central directory" in msg


def test_zip_ratio_counts_small_entries(tmp_path: Path) -> None:
    # Each entry is under the per-entry floor; together 4 MiB come from a few KiB.
    data = make_zip(
        {f"{i}.png": b"\0" * (512 << 10) for i in range(8)}, method=zipfile.ZIP_DEFLATED
    )
    assert "expands more than 200x" in _refused(tmp_path, data)


def test_zip_ratio_spares_small_and_honest_archives(tmp_path: Path) -> None:
    tiny = make_zip({f"{i}.png": b"\0" * (64 << 10) for i in range(8)}, method=zipfile.ZIP_DEFLATED)
    honest = make_zip(
        {f"{i}.png": os.urandom(1 << 20) for i in range(3)}, method=zipfile.ZIP_DEFLATED
    )
    for name, data, count in (("tiny", tiny, 8), ("honest", honest, 3)):
        archive = _write(tmp_path, data, f"{name}.zip")
        result = extract_dataset([Source(archive, "f")], tmp_path / name / "dataset")
        assert len(result.images) == count


# --- names ----------------------------------------------------------------------------------


def _zip_with_duplicates(names: list[str]) -> bytes:
    buf = io.BytesIO()
    with warnings.catch_warnings(), zipfile.ZipFile(buf, "w") as zf:
        warnings.simplefilter("ignore")  # zipfile warns of a duplicate name, and writes it
        for i, name in enumerate(names):
            zf.writestr(name, f"img{i}".encode())
    return buf.getvalue()


def _tar_with_duplicates(names: list[str]) -> bytes:
    return b"".join(_member(name, b"img") for name in names) + END


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
def test_duplicate_entries_refused(tmp_path: Path, data: bytes, shown: str) -> None:
    msg = _refused(tmp_path, data)
    assert f'entry "{shown}" is in the archive twice' in msg


def test_names_spelled_differently_are_opened_as_spelled(tmp_path: Path) -> None:
    # The planned name is normalised ("./x.png" -> "x.png"); the archive still holds the raw one.
    zip_ = _write(tmp_path, make_zip({"./x.png": b"zx", "d\\y.png": b"zy"}), "a.zip")
    tar = _write(tmp_path, _tar_with_duplicates(["./t.png"]), "b.tar")
    result = extract_dataset([Source(zip_, "f"), Source(tar, "g")], tmp_path / "dataset")
    assert sorted(result.images) == ["t.png", "x.png", "y.png"]
    assert (tmp_path / "dataset" / "images" / "y.png").read_bytes() == b"zy"


def test_colon_in_a_name_is_not_a_drive(tmp_path: Path) -> None:
    archive = _write(tmp_path, make_zip({"a:b.png": b"img", "a:b.txt": b"cap"}))
    result = extract_dataset([Source(archive, "f")], tmp_path / "dataset")
    assert result.images == ["a_b.png"]
    assert (tmp_path / "dataset" / "images" / "a_b.txt").read_bytes() == b"cap"


@pytest.mark.parametrize("name", ["C:\\x.png", "C:/x.png", "c:\\d\\x.png", "\\x.png", "/x.png"])
def test_drive_absolute_names_refused(tmp_path: Path, name: str) -> None:
    assert "has an absolute path" in _refused(tmp_path, make_zip({name: b"img"}))


def test_overlong_name_refused(tmp_path: Path) -> None:
    assert "longer than 4096" in _refused(tmp_path, make_zip({"a" * 5000 + ".png": b"i"}))


# --- what the archive holds -----------------------------------------------------------------


def test_archive_of_archives_says_so(tmp_path: Path) -> None:
    inner = make_zip({"a.png": b"img", "a.txt": b"cap"})
    msg = _refused(tmp_path, make_zip({"inner.zip": inner, "more.tar.gz": b"x", "read.md": b"x"}))
    assert (
        "dataset.images_url: the archive holds no images or videos, only other archives "
        "(inner.zip, more.tar.gz); nested archives are not unpacked: put the media files in "
        "one archive"
    ) in msg


def test_nested_archive_next_to_media_is_ignored(tmp_path: Path) -> None:
    data = make_zip({"a.png": b"img", "old.zip": make_zip({"b.png": b"img"})})
    result = extract_dataset([Source(_write(tmp_path, data), "f")], tmp_path / "dataset")
    assert result.images == ["a.png"]
    assert result.ignored == ["old.zip"]


def test_zip_of_an_unknown_version_refused(tmp_path: Path) -> None:
    data = bytearray(make_zip({"a.png": b"img"}))
    central = data.index(b"PK\x01\x02")
    data[central + 6 : central + 8] = struct.pack("<H", 99)  # "needs version 9.9 to extract"
    assert "uses a format this worker cannot read" in _refused(tmp_path, bytes(data))


def test_read_error_does_not_name_the_workers_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = make_zip({"a.png": b"img"})

    def fail(path: Path, *args: object, **kwargs: object) -> zipfile.ZipFile:
        raise OSError(errno.EIO, os.strerror(errno.EIO), str(path))

    monkeypatch.setattr(zipfile, "ZipFile", fail)
    msg = _refused(tmp_path, data)
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
def test_unreadable_entry_data_refused(tmp_path: Path, data: bytes) -> None:
    msg = _refused(tmp_path, data)
    assert 'entry "a.png" cannot be read' in msg


# --- a full disk ----------------------------------------------------------------------------


class _FullDisk:
    """A file that takes a few bytes and then finds the volume full."""

    def __init__(self, real: IO[Any], code: int) -> None:
        self.real, self.code = real, code

    def write(self, data: bytes) -> int:
        self.real.write(data[:2])
        raise OSError(self.code, os.strerror(self.code), self.real.name)

    def __enter__(self) -> _FullDisk:
        return self

    def __exit__(self, *exc: object) -> None:
        self.real.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT], ids=["ENOSPC", "EDQUOT"])
def test_full_disk_is_a_stage_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    archive = _write(tmp_path, make_zip({"a.png": b"img-a", "a.txt": b"cap", "b.png": b"img"}))
    dataset = tmp_path / "job" / "dataset"
    dataset.parent.mkdir()
    before = _everything(tmp_path)
    real_open = Path.open

    def open_(path: Path, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        f = real_open(path, mode, *args, **kwargs)
        if dataset in path.parents and ("w" in mode or "x" in mode):
            return _FullDisk(f, code)
        return f

    monkeypatch.setattr(Path, "open", open_)
    with pytest.raises(StageFailed) as exc:
        extract_dataset([Source(archive, "dataset.images_url")], dataset)
    msg = str(exc.value)
    assert msg.startswith("dataset.images_url: ")
    assert "disk is full" in msg
    assert "free space" in msg
    assert str(tmp_path) not in msg
    assert "staging" not in msg
    assert _everything(tmp_path) == before, "a half-written file or folder was left"
