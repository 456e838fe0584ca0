"""Xet hashes, as the spec's "Hashing" page defines them (huggingface.co/docs/xet/hashing).

Every hash is 32 bytes. Chunk hashes are BLAKE3 keyed with DATA_KEY; xorb and file hashes are
the root of the spec's aggregated Merkle tree (internal nodes BLAKE3 keyed with
INTERNAL_NODE_KEY over lines `"{hash} : {size}\\n"`), the file hash then keyed once more with a
zero key; term verification hashes are BLAKE3 keyed with VERIFICATION_KEY over the raw chunk
hashes. Hashes travel as the spec's "hash string" (hex of each little-endian u64 in turn).
"""

from __future__ import annotations

from collections.abc import Sequence

import blake3

DATA_KEY = bytes([
    102, 151, 245, 119, 91, 149, 80, 222, 49, 53, 203, 172, 165, 151, 24, 28,
    157, 228, 33, 16, 155, 235, 43, 88, 180, 208, 176, 75, 147, 173, 242, 41,
])  # fmt: skip
INTERNAL_NODE_KEY = bytes([
    1, 126, 197, 199, 165, 71, 41, 150, 253, 148, 102, 102, 180, 138, 2, 230,
    93, 221, 83, 111, 55, 199, 109, 210, 248, 99, 82, 230, 74, 83, 113, 63,
])  # fmt: skip
VERIFICATION_KEY = bytes([
    127, 24, 87, 214, 206, 86, 237, 102, 18, 127, 249, 19, 231, 165, 195, 243,
    164, 205, 38, 213, 181, 219, 73, 230, 65, 36, 152, 127, 40, 251, 148, 195,
])  # fmt: skip
ZERO_KEY = bytes(32)
MEAN_BRANCHING = 4  # "Xorb Hashes": a node closes where hash % 4 == 0
MAX_GROUP = 2 * MEAN_BRANCHING + 1  # ... and has 2 to 9 children

Node = tuple[bytes, int]  # (32-byte hash, bytes it covers)


def _keyed(key: bytes, data: bytes) -> bytes:
    return bytes(blake3.blake3(data, key=key).digest())


def chunk_hash(data: bytes) -> bytes:
    """ "Chunk Hashes": BLAKE3 keyed with DATA_KEY over the chunk's bytes."""
    return _keyed(DATA_KEY, data)


def to_hex(h: bytes) -> str:
    """The spec's hash string: each of the four 8-byte words as a little-endian u64, in hex."""
    return "".join(h[i : i + 8][::-1].hex() for i in range(0, 32, 8))


def from_hex(s: str) -> bytes:
    """Inverse of `to_hex`; ValueError unless `s` is 64 hex digits."""
    if len(s) != 64:
        raise ValueError(f"a Xet hash is 64 hex digits, got {len(s)}")
    raw = bytes.fromhex(s)
    return b"".join(raw[i : i + 8][::-1] for i in range(0, 32, 8))


def _low_word(h: bytes) -> int:
    """The hash's last u64 (little-endian): what the tree's `hash % 4` reads."""
    return int.from_bytes(h[24:32], "little")


def _merge(nodes: Sequence[Node]) -> Node:
    lines = "".join(f"{to_hex(h)} : {size}\n" for h, size in nodes)
    return _keyed(INTERNAL_NODE_KEY, lines.encode()), sum(size for _, size in nodes)


def _next_cut(nodes: Sequence[Node]) -> int:
    """How many of `nodes` the next parent takes: 2 at least, 9 at most, ending at the first
    node (from the third on) whose hash is 0 mod 4."""
    if len(nodes) <= 2:
        return len(nodes)
    end = min(MAX_GROUP, len(nodes))
    for i in range(2, end):
        if _low_word(nodes[i][0]) % MEAN_BRANCHING == 0:
            return i + 1
    return end


def merkle_root(nodes: Sequence[Node]) -> bytes:
    """The aggregated tree's root over (chunk hash, chunk size) leaves; zeros when empty."""
    level = list(nodes)
    if not level:
        return bytes(32)
    while len(level) > 1:
        parents: list[Node] = []
        i = 0
        while i < len(level):
            cut = i + _next_cut(level[i:])
            parents.append(_merge(level[i:cut]))
            i = cut
        level = parents
    return level[0][0]


def xorb_hash(chunks: Sequence[Node]) -> bytes:
    """ "Xorb Hashes": the tree's root over the xorb's chunks."""
    return merkle_root(chunks)


def file_hash(chunks: Sequence[Node]) -> bytes:
    """ "File Hashes": the root over all the file's chunks, keyed once more with a zero key
    (zeros for an empty file)."""
    if not chunks:
        return bytes(32)
    return _keyed(ZERO_KEY, merkle_root(chunks))


def verification_hash(chunk_hashes: Sequence[bytes]) -> bytes:
    """ "Term Verification Hashes": BLAKE3 keyed with VERIFICATION_KEY over the term's chunk
    hashes, concatenated."""
    return _keyed(VERIFICATION_KEY, b"".join(chunk_hashes))
