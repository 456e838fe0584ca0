"""The fake CAS's Xet hashing, chunking and xorb format against the real hf_xet client."""

from __future__ import annotations

import random
from pathlib import Path

import hf_xet  # type: ignore[import-untyped]
import lz4.frame  # type: ignore[import-untyped]
import pytest

from tests.support.xet import chunking, hashing, xorb


def _mine(data: bytes) -> tuple[str, int]:
    pieces = chunking.chunks(data)
    nodes = [(hashing.chunk_hash(p), len(p)) for p in pieces]
    return hashing.to_hex(hashing.file_hash(nodes)), len(pieces)


CASES = {
    "empty": b"",
    "one byte": b"x",
    "one chunk": random.Random(1).randbytes(20_000),
    "many chunks": random.Random(2).randbytes(1_200_000),
    "repetitive": b"abcdefgh" * 200_000,  # forced 128 KiB cuts and a deep tree
    "zeros": bytes(300_000),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_file_hash_matches_hf_xet(name: str, tmp_path: Path) -> None:
    data = CASES[name]
    path = tmp_path / "f"
    path.write_bytes(data)
    (theirs,) = hf_xet.hash_files([str(path)])
    ours, _ = _mine(data)
    assert ours == theirs.hash


def test_many_chunks_really_are_many() -> None:
    lengths = chunking.chunk_lengths(CASES["many chunks"])
    assert len(lengths) > 8
    assert all(chunking.MIN_CHUNK <= n <= chunking.MAX_CHUNK for n in lengths[:-1])
    assert set(chunking.chunk_lengths(CASES["repetitive"])[:-1]) == {chunking.MAX_CHUNK}


def test_hash_string_round_trip() -> None:
    raw = bytes(range(32))
    text = hashing.to_hex(raw)
    assert text.startswith("0706050403020100")  # each 8-byte word as a little-endian u64
    assert hashing.from_hex(text) == raw
    with pytest.raises(ValueError, match="64 hex digits"):
        hashing.from_hex("abc")


def _bg4(data: bytes) -> bytes:
    return b"".join(data[g::4] for g in range(4))


def test_xorb_parses_every_compression_scheme() -> None:
    pieces = [b"a" * 9000, bytes(range(256)) * 40, b"tail!"]
    bodies = [pieces[0], lz4.frame.compress(pieces[1]), lz4.frame.compress(_bg4(pieces[2]))]
    raw = b"".join(
        bytes([0]) + len(b).to_bytes(3, "little") + bytes([s]) + len(p).to_bytes(3, "little") + b
        for s, p, b in zip((xorb.NONE, xorb.LZ4, xorb.BG4_LZ4), pieces, bodies, strict=True)
    )
    parsed = xorb.parse(raw)
    assert [c.data for c in parsed.chunks] == pieces
    assert parsed.hash == hashing.xorb_hash([(hashing.chunk_hash(p), len(p)) for p in pieces])
    assert parsed.chunks[1].start == parsed.chunks[0].end


@pytest.mark.parametrize(
    ("mangle", "message"),
    [
        (lambda r: b"\x01" + r[1:], "header version 1"),
        (lambda r: r[:-3], "header says"),
        (lambda r: r[:4] + b"\x07" + r[5:], "unknown compression scheme 7"),
        (lambda r: r[:5] + (5).to_bytes(3, "little") + r[8:], "decompresses to"),
        (lambda r: b"", "no chunks"),
    ],
)
def test_xorb_format_faults_are_named(mangle: object, message: str) -> None:
    raw = xorb.build([b"z" * 100])
    with pytest.raises(xorb.XorbError, match=message):
        xorb.parse(mangle(raw))  # type: ignore[operator]
