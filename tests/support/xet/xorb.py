"""Xorbs: parse and build the spec's serialization (huggingface.co/docs/xet/xorb).

A xorb is a run of chunks, each an 8-byte header (version 0; compressed length, 3 bytes
little-endian; compression scheme; uncompressed length, 3 bytes little-endian) and its bytes.
Schemes: 0 none, 1 LZ4 (frame format), 2 ByteGrouping4LZ4 (bytes regrouped by index mod 4,
then LZ4). The client may append the "XETBLOB" footer (chunk hashes and boundaries); its first
byte can never start a chunk header (version 0), so parsing stops there and the footer is read
for a cross-check of the hashes, not trusted. The xorb's hash is recomputed from its chunks.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import lz4.frame  # type: ignore[import-untyped]

from tests.support.xet import hashing

HEADER = 8
MAX_XORB_BYTES = 64 * 1024 * 1024  # "the CAS server will reject Xorb uploads that exceed 64 MiB"
_FRAMING_ALLOWANCE = 1 << 20  # headers (8 bytes a chunk) and footer (~36 bytes a chunk)
MAX_CHUNK_BYTES = 128 * 1024  # the chunker's largest chunk
FOOTER_IDENT = b"XETBLOB"
NONE, LZ4, BG4_LZ4 = 0, 1, 2


class XorbError(ValueError):
    """A xorb that breaks the format; the message says where."""


@dataclass(frozen=True)
class Chunk:
    data: bytes  # uncompressed
    hash: bytes
    start: int  # byte offset of its header in the serialized xorb
    end: int  # one past its last byte


@dataclass(frozen=True)
class Xorb:
    hash: bytes
    chunks: tuple[Chunk, ...]
    raw: bytes  # the chunk section as uploaded (what range GETs serve)

    @property
    def nodes(self) -> list[tuple[bytes, int]]:
        return [(c.hash, len(c.data)) for c in self.chunks]


def _bg4_join(data: bytes) -> bytes:
    """Undo byte grouping: group g holds bytes g, g+4, g+8, ... of the original."""
    n = len(data)
    split, rem = divmod(n, 4)
    sizes = [split + (1 if g < rem else 0) for g in range(4)]
    out = bytearray(n)
    pos = 0
    for g, size in enumerate(sizes):
        out[g::4] = data[pos : pos + size]
        pos += size
    return bytes(out)


def _decompress(scheme: int, body: bytes, where: str) -> bytes:
    if scheme == NONE:
        return body
    if scheme not in (LZ4, BG4_LZ4):
        raise XorbError(f"{where}: unknown compression scheme {scheme}")
    try:
        plain = lz4.frame.decompress(body)
    except RuntimeError as err:
        raise XorbError(f"{where}: LZ4 data does not decompress ({err})") from err
    return _bg4_join(plain) if scheme == BG4_LZ4 else bytes(plain)


def parse(raw: bytes) -> Xorb:
    """Parse and check a serialized xorb; XorbError names the first fault."""
    # hf_xet cuts a xorb at 64 MiB of chunk data (xet-core's MAX_XORB_BYTES), so incompressible
    # chunks serialize to a little more (8-byte headers, the footer), which the Hub takes: the
    # limit is on the chunk data, with room for the framing.
    if len(raw) > MAX_XORB_BYTES + _FRAMING_ALLOWANCE:
        raise XorbError(f"xorb is {len(raw)} bytes, over the {MAX_XORB_BYTES}-byte limit")
    chunks: list[Chunk] = []
    pos = 0
    while pos < len(raw) and not raw.startswith(FOOTER_IDENT, pos):
        where = f"chunk {len(chunks)} at byte {pos}"
        if pos + HEADER > len(raw):
            raise XorbError(f"{where}: truncated header")
        head = raw[pos : pos + HEADER]
        if head[0] != 0:
            raise XorbError(f"{where}: header version {head[0]}, expected 0")
        size = int.from_bytes(head[1:4], "little")
        scheme = head[4]
        plain_size = int.from_bytes(head[5:8], "little")
        if plain_size == 0 or plain_size > MAX_CHUNK_BYTES:
            raise XorbError(f"{where}: uncompressed length {plain_size} out of range")
        body = raw[pos + HEADER : pos + HEADER + size]
        if len(body) != size:
            raise XorbError(f"{where}: header says {size} bytes, {len(body)} follow")
        data = _decompress(scheme, body, where)
        if len(data) != plain_size:
            raise XorbError(f"{where}: decompresses to {len(data)} bytes, header says {plain_size}")
        end = pos + HEADER + size
        chunks.append(Chunk(data, hashing.chunk_hash(data), pos, end))
        pos = end
    if not chunks:
        raise XorbError("xorb holds no chunks")
    plain_total = sum(len(c.data) for c in chunks)
    if plain_total > MAX_XORB_BYTES:
        raise XorbError(f"xorb holds {plain_total} bytes of chunks, over {MAX_XORB_BYTES}")
    xorb = Xorb(
        hashing.xorb_hash([(c.hash, len(c.data)) for c in chunks]), tuple(chunks), raw[:pos]
    )
    if pos < len(raw):
        _check_footer(raw[pos:], xorb)
    return xorb


def _check_footer(footer: bytes, xorb: Xorb) -> None:
    """The footer's xorb hash and chunk hashes must be those of the chunks before it."""
    # ident (7) + version (1) + xorb hash (32) + hash-section ident (7) + version (1) + count (4)
    if len(footer) < 52:
        raise XorbError("footer truncated")
    if footer[40:47] != b"XBLBHSH":
        raise XorbError("footer: no chunk hash section")
    if footer[8:40] != xorb.hash:
        raise XorbError("footer: its xorb hash is not the hash of the chunks")
    (count,) = struct.unpack_from("<I", footer, 48)
    hashes = [footer[52 + 32 * i : 84 + 32 * i] for i in range(count)]
    if count != len(xorb.chunks) or hashes != [c.hash for c in xorb.chunks]:
        raise XorbError("footer: its chunk hashes are not those of the chunks")


def build(chunk_data: list[bytes], scheme: int = NONE) -> bytes:
    """Serialize chunks (no footer: the spec's minimal form), optionally LZ4-compressed."""
    out = bytearray()
    for data in chunk_data:
        body = lz4.frame.compress(data) if scheme == LZ4 else data
        out += bytes([0]) + len(body).to_bytes(3, "little")
        out += bytes([scheme]) + len(data).to_bytes(3, "little") + body
    return bytes(out)
