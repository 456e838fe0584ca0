"""The CAS's content store: verified xorbs, file reconstructions, and the checks the spec's
upload protocol asks of a server (huggingface.co/docs/xet/upload-protocol, /api).

A xorb is kept only if its hash, recomputed from its chunks, is the one it was uploaded under.
A shard is registered only if every xorb a term names is stored, each term's chunk range lies in
that xorb and its unpacked size matches, each verification hash is that of the term's chunks, the
file hash recomputed from the chunks is the shard's, and a declared SHA-256 is that of the
reconstructed bytes. `ingest` stores a file the way a client would (chunking, xorbs of at most
64 MiB), for repos seeded on the fake Hub.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from tests.support.xet import chunking, hashing, shard, xorb


class Rejected(ValueError):
    """An upload the CAS refuses (400); the message says why."""


@dataclass(frozen=True)
class Term:
    xorb_hash: bytes
    start: int  # chunk indices in the xorb, end exclusive
    end: int
    size: int  # unpacked bytes


@dataclass(frozen=True)
class StoredFile:
    file_hash: bytes
    terms: tuple[Term, ...]
    size: int
    sha256: str  # hex


class Store:
    def __init__(self) -> None:
        self.xorbs: dict[bytes, xorb.Xorb] = {}
        self.files: dict[bytes, StoredFile] = {}
        self.by_sha256: dict[str, bytes] = {}  # sha256 hex -> file hash

    # -- uploads -----------------------------------------------------------------------------
    def add_xorb(self, claimed: bytes, raw: bytes) -> bool:
        """Store a xorb uploaded under `claimed`; False when it was already there."""
        try:
            parsed = xorb.parse(raw)
        except xorb.XorbError as err:
            raise Rejected(f"bad xorb serialization: {err}") from err
        if parsed.hash != claimed:
            raise Rejected(
                f"xorb hash mismatch: the chunks hash to {hashing.to_hex(parsed.hash)}, "
                f"uploaded as {hashing.to_hex(claimed)}"
            )
        if claimed in self.xorbs:
            return False
        self.xorbs[claimed] = parsed
        return True

    def add_shard(self, raw: bytes) -> int:
        """Verify and register a shard's files; 1 if any was new, else 0 (the spec's result)."""
        try:
            parsed = shard.parse(raw)
        except shard.ShardError as err:
            raise Rejected(f"bad shard serialization: {err}") from err
        for info in parsed.xorbs:
            self._check_xorb_info(info)
        new = [self._verified(f) for f in parsed.files]
        fresh = 0
        for stored in new:
            fresh |= stored.file_hash not in self.files
            self._register(stored)
        return 1 if fresh or not new else 0

    def _check_xorb_info(self, info: shard.XorbInfo) -> None:
        stored = self.xorbs.get(info.xorb_hash)
        name = hashing.to_hex(info.xorb_hash)
        if stored is None:
            raise Rejected(f"shard lists xorb {name}, which was never uploaded")
        if list(info.chunk_hashes) != [c.hash for c in stored.chunks]:
            raise Rejected(f"shard's chunk list for xorb {name} is not the xorb's")

    def _verified(self, info: shard.FileInfo) -> StoredFile:
        name = hashing.to_hex(info.file_hash)
        if info.verification and len(info.verification) != len(info.terms):
            raise Rejected(f"file {name}: {len(info.verification)} verification entries")
        terms, nodes = [], []
        for i, t in enumerate(info.terms):
            stored = self.xorbs.get(t.xorb_hash)
            if stored is None:
                raise Rejected(
                    f"file {name}: term {i} names unknown xorb {hashing.to_hex(t.xorb_hash)}"
                )
            if t.chunk_end > len(stored.chunks):
                raise Rejected(
                    f"file {name}: term {i} runs past the xorb's {len(stored.chunks)} chunks"
                )
            picked = stored.chunks[t.chunk_start : t.chunk_end]
            size = sum(len(c.data) for c in picked)
            if size != t.unpacked_bytes:
                raise Rejected(
                    f"file {name}: term {i} says {t.unpacked_bytes} bytes, chunks hold {size}"
                )
            if info.verification and info.verification[i] != hashing.verification_hash(
                [c.hash for c in picked]
            ):
                raise Rejected(f"file {name}: term {i} verification hash does not match")
            terms.append(Term(t.xorb_hash, t.chunk_start, t.chunk_end, size))
            nodes += [(c.hash, len(c.data)) for c in picked]
        if hashing.file_hash(nodes) != info.file_hash:
            raise Rejected(f"file hash mismatch: the terms' chunks do not hash to {name}")
        stored_file = StoredFile(info.file_hash, tuple(terms), sum(s for _, s in nodes), "")
        sha = hashlib.sha256(self.read(stored_file)).hexdigest()
        if info.sha256 is not None and info.sha256 != sha:
            raise Rejected(f"file {name}: declared sha256 is not that of its bytes")
        return StoredFile(info.file_hash, tuple(terms), stored_file.size, sha)

    def _register(self, stored: StoredFile) -> None:
        self.files[stored.file_hash] = stored
        self.by_sha256[stored.sha256] = stored.file_hash

    # -- seeding and reading -----------------------------------------------------------------
    def ingest(self, data: bytes) -> StoredFile:
        """Store `data` as a client would upload it: spec chunks in xorbs of at most 64 MiB of
        chunk data (a new one when the next chunk would pass it, as hf_xet cuts them), one file
        whose terms span them."""
        pieces = chunking.chunks(data)
        terms: list[Term] = []
        for group in _xorb_groups(pieces):
            parsed = xorb.parse(xorb.build(group))
            self.xorbs.setdefault(parsed.hash, parsed)
            terms.append(Term(parsed.hash, 0, len(group), sum(len(p) for p in group)))
        nodes = [(hashing.chunk_hash(p), len(p)) for p in pieces]
        stored = StoredFile(
            hashing.file_hash(nodes), tuple(terms), len(data), hashlib.sha256(data).hexdigest()
        )
        self._register(stored)
        return stored

    def read(self, stored: StoredFile) -> bytes:
        return b"".join(
            c.data for t in stored.terms for c in self.xorbs[t.xorb_hash].chunks[t.start : t.end]
        )

    def by_oid(self, sha256: str) -> StoredFile | None:
        file_hash = self.by_sha256.get(sha256)
        return self.files.get(file_hash) if file_hash is not None else None


def _xorb_groups(pieces: list[bytes]) -> list[list[bytes]]:
    """Consecutive chunks, cut where the next one would take a xorb past its 64 MiB."""
    groups: list[list[bytes]] = []
    size = 0
    for piece in pieces:
        if not groups or size + len(piece) > xorb.MAX_XORB_BYTES:
            groups.append([])
            size = 0
        groups[-1].append(piece)
        size += len(piece)
    return groups
