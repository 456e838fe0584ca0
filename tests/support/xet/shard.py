"""Shards: parse (and, for tests, build) the spec's MDB shard (huggingface.co/docs/xet/shard).

Layout read here: a 48-byte header (32-byte tag, version u64 = 2, footer size u64); the File
Info section (per file a 48-byte header: file hash, flags u32, entry count u32, 8 unused bytes;
then its 48-byte terms: xorb hash, flags u32, unpacked bytes u32, chunk index start and end u32;
then, if flag bit 31, one 48-byte verification entry per term; if bit 30, a 48-byte metadata
extension holding the file's SHA-256, in the hash-string byte order of a Xet hash), closed by a
bookend header (hash all 0xFF); the Xorb (CAS) Info section (per xorb a 48-byte header: xorb
hash, flags, chunk count, bytes in xorb, bytes on disk; then 48-byte chunk entries: chunk hash,
byte offset, unpacked bytes, flags, unused), closed by a bookend. The lookup tables and footer
that follow are not needed by the CAS and are not read.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

from tests.support.xet import hashing

TAG = b"HFRepoMetaData\x00" + bytes(
    [85, 105, 103, 69, 106, 123, 129, 87, 131, 165, 189, 217, 92, 205, 209, 74, 169]
)
VERSION = 2
ENTRY = 48
BOOKEND = b"\xff" * 32
WITH_VERIFICATION = 1 << 31
WITH_METADATA_EXT = 1 << 30


class ShardError(ValueError):
    """A shard that breaks the format; the message says where."""


@dataclass(frozen=True)
class Term:
    xorb_hash: bytes
    unpacked_bytes: int
    chunk_start: int
    chunk_end: int  # exclusive


@dataclass(frozen=True)
class FileInfo:
    file_hash: bytes
    terms: tuple[Term, ...]
    verification: tuple[bytes, ...]  # one range hash per term, or empty
    sha256: str | None  # hex; stored as a Xet hash (the spec's hash-string byte order)


@dataclass(frozen=True)
class XorbInfo:
    xorb_hash: bytes
    chunk_hashes: tuple[bytes, ...]
    chunk_sizes: tuple[int, ...]
    num_bytes: int


@dataclass(frozen=True)
class Shard:
    files: tuple[FileInfo, ...]
    xorbs: tuple[XorbInfo, ...]


class _Reader:
    def __init__(self, raw: bytes) -> None:
        self.raw, self.pos = raw, 0

    def entry(self, what: str) -> bytes:
        if self.pos + ENTRY > len(self.raw):
            raise ShardError(f"truncated in {what} at byte {self.pos}")
        out = self.raw[self.pos : self.pos + ENTRY]
        self.pos += ENTRY
        return out


def parse(raw: bytes) -> Shard:
    """Parse the header and both info sections; ShardError names the first fault."""
    if len(raw) < ENTRY or raw[:32] != TAG:
        raise ShardError("not a shard: wrong header tag")
    (version,) = struct.unpack_from("<Q", raw, 32)
    if version != VERSION:
        raise ShardError(f"shard header version {version}, expected {VERSION}")
    reader = _Reader(raw)
    reader.pos = ENTRY
    files: list[FileInfo] = []
    while (head := reader.entry("file info"))[:32] != BOOKEND:
        flags, count = struct.unpack_from("<II", head, 32)
        where = f"file {len(files)}"
        terms = []
        for _ in range(count):
            e = reader.entry(where)
            _, size, start, end = struct.unpack_from("<IIII", e, 32)
            if end <= start:
                raise ShardError(f"{where}: term chunk range [{start}, {end}) is empty")
            terms.append(Term(e[:32], size, start, end))
        verification = tuple(
            reader.entry(where)[:32] for _ in range(count if flags & WITH_VERIFICATION else 0)
        )
        ext = reader.entry(where)[:32] if flags & WITH_METADATA_EXT else None
        sha256 = hashing.to_hex(ext) if ext is not None else None
        files.append(FileInfo(head[:32], tuple(terms), verification, sha256))
    xorbs: list[XorbInfo] = []
    while (head := reader.entry("xorb info"))[:32] != BOOKEND:
        _, count, num_bytes, _ = struct.unpack_from("<IIII", head, 32)
        entries = [reader.entry(f"xorb {len(xorbs)}") for _ in range(count)]
        xorbs.append(
            XorbInfo(
                head[:32],
                tuple(e[:32] for e in entries),
                tuple(struct.unpack_from("<I", e, 36)[0] for e in entries),
                num_bytes,
            )
        )
    return Shard(tuple(files), tuple(xorbs))


def build(files: Sequence[FileInfo], xorbs: Sequence[XorbInfo] = ()) -> bytes:
    """Serialize the header and both info sections (no lookup tables or footer)."""
    out = bytearray(TAG + struct.pack("<QQ", VERSION, 0))
    for f in files:
        flags = (WITH_VERIFICATION if f.verification else 0) | (
            WITH_METADATA_EXT if f.sha256 is not None else 0
        )
        out += f.file_hash + struct.pack("<IIQ", flags, len(f.terms), 0)
        for t in f.terms:
            out += t.xorb_hash + struct.pack(
                "<IIII", 0, t.unpacked_bytes, t.chunk_start, t.chunk_end
            )
        for v in f.verification:
            out += v + bytes(16)
        if f.sha256 is not None:
            out += hashing.from_hex(f.sha256) + bytes(16)
    out += BOOKEND + bytes(16)
    for x in xorbs:
        out += x.xorb_hash + struct.pack("<IIII", 0, len(x.chunk_hashes), x.num_bytes, 0)
        offset = 0
        for h, size in zip(x.chunk_hashes, x.chunk_sizes, strict=True):
            out += h + struct.pack("<IIII", offset, size, 0, 0)
            offset += size
    out += BOOKEND + bytes(16)
    return bytes(out)
