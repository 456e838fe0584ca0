"""Archive headers are bounded before the standard library reads them (stages/dataset/headers.py):
tar header members (PAX, GNU long names, globals, sparse maps) and a zip's central directory."""

from __future__ import annotations

import io
import os
import struct
import tarfile
import tracemalloc
import zipfile
from pathlib import Path

import pytest

from stages.dataset.extract import Source, extract_dataset
from stages.dataset.limits import ExtractLimits
from tests.support.archives import (
    TAR_END,
    pax_record,
    refusal,
    tar_block,
    tar_header,
    tar_member,
    tar_padded,
    write_input,
)
from tests.support.media import make_zip

# --- tar headers: bounded before tarfile reads them -----------------------------------------

X, G = tarfile.XHDTYPE, tarfile.XGLTYPE


def _comment(size: int) -> bytes:
    """A PAX header payload of about `size` bytes: one long comment."""
    return pax_record("comment", "a" * (size - 20))


@pytest.mark.parametrize(
    "kind", [X, G, tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK], ids=["x", "g", "L", "K"]
)
def test_tar_header_refused_before_it_is_read(tmp_path: Path, kind: bytes) -> None:
    # The header claims 1 TiB: no read of it could succeed, so only a refusal made before the
    # read passes.
    data = tar_block(kind, 1 << 40) + tar_member("a.png", b"img") + TAR_END
    msg = refusal(tmp_path, data)
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
        msg = refusal(tmp_path, data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "tar header" in msg
    assert peak < 2 << 20, f"{peak} bytes traced: the header was read"


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        pytest.param(
            tar_header(X, _comment(3000))
            + tar_header(X, _comment(3000))
            + tar_member("a.png", b"i")
            + TAR_END,
            "tar headers of more than 4.0 KiB before one entry",
            id="chained",
        ),
        pytest.param(
            tar_header(G, _comment(3000))
            + tar_member("a.png", b"i")
            + tar_header(G, _comment(3000))
            + tar_member("b.png", b"i")
            + TAR_END,
            "tar global headers of more than 4.0 KiB",
            id="globals-in-all",
        ),
        pytest.param(
            tar_header(X, b"") * 9 + tar_member("a.png", b"i") + TAR_END,
            "more than 8 tar headers before one entry",
            id="chain-length",
        ),
        pytest.param(
            tar_header(G, b"".join(pax_record(f"k{i}", "v") for i in range(100)))
            + tar_member("a.png", b"i")
            + TAR_END,
            "a tar global header with more than 64 fields",
            id="global-fields",
        ),
    ],
)
def test_tar_header_chains_and_globals_are_bounded(
    tmp_path: Path, data: bytes, expected: str
) -> None:
    msg = refusal(tmp_path, data, limits=ExtractLimits(max_header_bytes=4096))
    assert expected in msg


def _old_sparse() -> bytes:
    return tar_block(tarfile.GNUTYPE_SPARSE, 0, "a.png") + TAR_END


def _pax_sparse_10() -> bytes:
    pax = b"".join(
        pax_record(k, v)
        for k, v in {
            "GNU.sparse.major": "1",
            "GNU.sparse.minor": "0",
            "GNU.sparse.name": "a.png",
            "GNU.sparse.realsize": "3",
        }.items()
    )
    body = tar_padded(b"1\n0\n3\n") + b"img"
    return tar_header(X, pax) + tar_member("GNUSparseFile.0/a.png", body) + TAR_END


def _pax_sparse_01() -> bytes:
    pax = pax_record("GNU.sparse.map", "0,3") + pax_record("GNU.sparse.size", "3")
    return tar_header(X, pax) + tar_member("a.png", b"img") + TAR_END


@pytest.mark.parametrize(
    "data", [_old_sparse(), _pax_sparse_10(), _pax_sparse_01()], ids=["gnu-S", "pax-1.0", "pax-0.1"]
)
def test_tar_sparse_membersrefusal(tmp_path: Path, data: bytes) -> None:
    # Their maps are read block by block with no bound; media files are never sparse.
    assert "sparse file" in refusal(tmp_path, data)


def test_tar_pax_headers_are_not_kept_per_member(tmp_path: Path) -> None:
    # tarfile keeps every member, each with a copy of its PAX header: 200 x 64 KiB here.
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for i in range(200):
            info = tarfile.TarInfo(f"{i}.png")
            info.size = 1
            info.pax_headers = {"comment": "a" * (64 << 10)}
            tf.addfile(info, io.BytesIO(b"i"))
    archive = write_input(tmp_path, buf.getvalue(), "big.tar")
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
    assert "expands more than 200x" in refusal(tmp_path, buf.getvalue())


def test_tar_folders_count_as_files(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for i in range(11):
            info = tarfile.TarInfo(f"d{i}")
            info.type = tarfile.DIRTYPE
            tf.addfile(info)
    msg = refusal(tmp_path, buf.getvalue(), limits=ExtractLimits(max_files=10))
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
    msg = refusal(tmp_path, data, limits=ExtractLimits(max_files=10))
    assert "more than 10 files" in msg


def test_zip64_end_records_are_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = _zip64({f"{i}.png": b"i" for i in range(11)}, monkeypatch)
    result = extract_dataset([Source(write_input(tmp_path, data), "f")], tmp_path / "dataset")
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
    msg = refusal(tmp_path, data, limits=ExtractLimits(max_files=10))
    assert "central directory" in msg


def test_zip_ratio_counts_small_entries(tmp_path: Path) -> None:
    # Each entry is under the per-entry floor; together 4 MiB come from a few KiB.
    data = make_zip(
        {f"{i}.png": b"\0" * (512 << 10) for i in range(8)}, method=zipfile.ZIP_DEFLATED
    )
    assert "expands more than 200x" in refusal(tmp_path, data)


def test_zip_ratio_spares_small_and_honest_archives(tmp_path: Path) -> None:
    tiny = make_zip({f"{i}.png": b"\0" * (64 << 10) for i in range(8)}, method=zipfile.ZIP_DEFLATED)
    honest = make_zip(
        {f"{i}.png": os.urandom(1 << 20) for i in range(3)}, method=zipfile.ZIP_DEFLATED
    )
    for name, data, count in (("tiny", tiny, 8), ("honest", honest, 3)):
        archive = write_input(tmp_path, data, f"{name}.zip")
        result = extract_dataset([Source(archive, "f")], tmp_path / name / "dataset")
        assert len(result.images) == count
