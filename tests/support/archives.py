"""Hostile archives in tests: write one, extract it, and check that a refusal wrote nothing."""

from __future__ import annotations

import tarfile
from pathlib import Path

import pytest

from stages.dataset.extract import Source, extract_dataset
from stages.dataset.limits import ExtractLimits
from stages.errors import ArchiveRefused


def write_input(tmp: Path, data: bytes, name: str = "in.bin") -> Path:
    path = tmp / name
    path.write_bytes(data)
    return path


def files_under(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def refusal(tmp: Path, data: bytes, *, limits: ExtractLimits | None = None) -> str:
    job = tmp / "job"
    job.mkdir()
    archive = write_input(tmp, data)
    before = files_under(tmp)
    with pytest.raises(ArchiveRefused) as exc:
        extract_dataset([Source(archive, "dataset.images_url")], job / "dataset", limits=limits)
    assert files_under(tmp) == before, "nothing may be written when an archive is refused"
    assert "dataset.images_url" in str(exc.value)
    return str(exc.value)


# --- tar members built block by block (tarfile itself would not write hostile ones) ----------

TAR_END = b"\0" * 1024  # a tar's end-of-archive blocks


def tar_padded(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % tarfile.BLOCKSIZE)


def tar_block(kind: bytes, size: int, name: str = "") -> bytes:
    """One 512-byte header; GNU format writes a size past 8 GiB in base-256. A header member's
    name defaults to the one GNU tar and pax writers give it."""
    long_name = kind in (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK)
    info = tarfile.TarInfo(name or ("././@LongLink" if long_name else "././@PaxHeader"))
    info.type = kind
    info.size = size
    return info.tobuf(tarfile.GNU_FORMAT)


def tar_header(kind: bytes, payload: bytes) -> bytes:
    return tar_block(kind, len(payload)) + tar_padded(payload)


def tar_member(name: str, data: bytes) -> bytes:
    return tar_block(tarfile.REGTYPE, len(data), name) + tar_padded(data)


def pax_record(key: str, value: str) -> bytes:
    """A PAX record, "<length> <key>=<value>\\n", the length counting itself."""
    body = f" {key}={value}\n".encode()
    n = len(body) + 1
    while len(str(n)) + len(body) != n:
        n = len(str(n)) + len(body)
    return str(n).encode() + body
