"""Writing a planned extraction: flat names, a staging folder swapped in, the marker last.

extract.py plans every entry of every archive before this module writes a byte. Here each
media file and its caption get one flat stem (`flat_stems`), are copied into a staging folder
inside the dataset folder with the planned size as a hard bound, and the staged `images/` and
`videos/` replace the old ones by renames; `COMPLETE_MARKER` is written last. Any failure (a
full disk, entry data that cannot be read) removes the staging folder, so nothing half-written
is left in place, and a dataset folder this call created is removed again.
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import os
import re
import shutil
import tarfile
import uuid
import zipfile
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TypeVar

from stages.dataset.folder import CAPTION_EXT, COMPLETE_MARKER, VIDEO_EXTS, write_marker
from stages.dataset.headers import refused, show
from stages.dataset.limits import human
from stages.errors import StageFailed

_UNSAFE_CHARS = re.compile(r"[\x00-\x1f\x7f/\\:]")
_MAX_STEM = 150
_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})
# What reading an entry's data raises when the data is damaged or compressed in a way the
# standard library cannot read (zip's Deflate64: NotImplementedError).
_UNREADABLE = (
    zipfile.BadZipFile,
    tarfile.TarError,
    gzip.BadGzipFile,
    EOFError,
    zlib.error,
    NotImplementedError,
)

Opener = Callable[[str], IO[bytes]]
T = TypeVar("T")


@dataclass
class Entry:
    source: int  # index into the openers
    member: str  # normalised name inside the archive (or relative path inside a folder)
    key: str  # the name as the archive spells it, to open it by
    folder: str  # posix folder of the entry, "" at the top
    stem: str
    ext: str  # lower-case
    size: int


@dataclass
class Plan:
    entries: list[Entry] = field(default_factory=list)
    dropped: int = 0
    ignored: list[str] = field(default_factory=list)
    total: int = 0
    files: int = 0


@dataclass
class ExtractResult:
    images: list[str] = field(default_factory=list)  # flat file names written
    videos: list[str] = field(default_factory=list)
    captions: int = 0
    orphan_captions: list[str] = field(default_factory=list)  # captions with no media
    ignored: list[str] = field(default_factory=list)  # files that are neither media nor caption
    dropped: int = 0  # __MACOSX, .DS_Store, hidden files
    renamed: int = 0  # media given a folder-prefixed name to avoid a collision
    bytes: int = 0


def safe(part: str) -> str:
    cleaned = _UNSAFE_CHARS.sub("_", part).strip() or "_"
    return cleaned.encode("utf-8")[:_MAX_STEM].decode("utf-8", "ignore") or "_"


def flat_stems(groups: Sequence[tuple[int, str, str]]) -> dict[tuple[int, str, str], str]:
    """(source, folder, stem) -> a unique flat stem, bare when unique, else folder-prefixed."""
    by_stem: dict[str, int] = {}
    for _, _, stem in groups:
        by_stem[safe(stem).lower()] = by_stem.get(safe(stem).lower(), 0) + 1
    out: dict[tuple[int, str, str], str] = {}
    used: set[str] = set()
    for key in sorted(groups, key=lambda g: (g[1].count("/"), g)):
        _source, folder, stem = key
        base = safe(stem)
        if by_stem[base.lower()] > 1 and folder:
            base = "__".join([*(safe(p) for p in folder.split("/")), base])
        name, n = base, 1
        while name.lower() in used:  # case-insensitive: the volume may be too
            n += 1
            name = f"{base}_{n}"
        used.add(name.lower())
        out[key] = name
    return out


def _copy_bounded(stream: IO[bytes], dest: Path, limit: int, field: str, name: str) -> int:
    """Copy at most `limit` bytes: a header that lies about its size is caught here."""
    written = 0
    with dest.open("xb") as out:
        while chunk := stream.read(1 << 20):
            written += len(chunk)
            if written > limit:
                raise refused(field, f'entry "{show(name)}" is larger than its header says')
            out.write(chunk)
    return written


def _read(opener: Opener, field: str, entry: Entry, read: Callable[[IO[bytes]], T]) -> T:
    """`read` on the entry's stream; unreadable data is the archive's fault, said so."""
    try:
        with opener(entry.key) as stream:
            return read(stream)
    except _UNREADABLE as exc:
        why = f"{type(exc).__name__}: {show(str(exc))}" if str(exc) else type(exc).__name__
        raise refused(
            field,
            f'entry "{show(entry.member)}" cannot be read ({why}): the archive is damaged or '
            "compressed in a way that is not supported; re-create the archive",
        ) from exc


def write_plan(
    plan: Plan,
    openers: Sequence[tuple[str, Opener]],
    dataset_dir: Path,
    caption_fn: Callable[[str], str] | None,
) -> ExtractResult:
    """Write `plan` into `dataset_dir` (openers: the request field and opener of each source)."""
    result = ExtractResult(dropped=plan.dropped, ignored=plan.ignored)
    groups: dict[tuple[int, str, str], list[Entry]] = {}
    for entry in plan.entries:
        groups.setdefault((entry.source, entry.folder, entry.stem), []).append(entry)
    names = flat_stems(list(groups))
    created = not dataset_dir.exists()
    field = openers[0][0] if openers else "dataset"
    dataset_dir.mkdir(parents=True, exist_ok=True)
    (dataset_dir / COMPLETE_MARKER).unlink(missing_ok=True)
    staging = dataset_dir / f".staging-{uuid.uuid4().hex[:12]}"
    try:
        for sub in ("images", "videos"):
            (staging / sub).mkdir(parents=True)
        for key, entries in groups.items():
            flat = names[key]
            field, opener = openers[key[0]]
            result.renamed += flat != safe(key[2])
            media = [e for e in entries if e.ext != CAPTION_EXT]
            caption = next((e for e in entries if e.ext == CAPTION_EXT), None)
            if not media:
                result.orphan_captions += [e.member for e in entries]
                continue
            kinds: set[str] = set()
            for e in media:
                kind = "videos" if e.ext in VIDEO_EXTS else "images"
                kinds.add(kind)
                dest = staging / kind / f"{flat}{Path(e.member).suffix}"
                result.bytes += _read(opener, field, e, _copier(dest, e, field))
                (result.videos if kind == "videos" else result.images).append(dest.name)
            if caption is not None:
                data = _read(opener, field, caption, _head(caption.size))
                if caption_fn is not None:
                    data = _transform(data, caption_fn)
                for kind in kinds:
                    (staging / kind / f"{flat}{CAPTION_EXT}").write_bytes(data)
                result.captions += 1
        _swap(staging, dataset_dir)
        write_marker(dataset_dir)
    except OSError as exc:
        if exc.errno in _FULL:  # the message names the field, never the worker's paths
            raise StageFailed(
                f"{field}: the disk is full: the dataset did not fit on the worker's volume "
                f"({human(result.bytes)} unpacked when it ran out); free space on the volume "
                "or use a smaller dataset; nothing was kept"
            ) from exc
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if created:  # only empty after a failure: nothing was swapped in
            with contextlib.suppress(OSError):
                dataset_dir.rmdir()
    return result


def _copier(dest: Path, entry: Entry, field: str) -> Callable[[IO[bytes]], int]:
    def copy(stream: IO[bytes]) -> int:
        return _copy_bounded(stream, dest, entry.size, field, entry.member)

    return copy


def _head(size: int) -> Callable[[IO[bytes]], bytes]:
    def read(stream: IO[bytes]) -> bytes:
        return stream.read(size + 1)[:size]

    return read


def _transform(data: bytes, fn: Callable[[str], str]) -> bytes:
    try:
        return fn(data.decode("utf-8")).encode("utf-8")
    except UnicodeDecodeError:
        return data  # the report names it; rewriting would corrupt it further


def _swap(staging: Path, dataset_dir: Path) -> None:
    """Replace images/ and videos/ with the staged ones; old ones are removed afterwards."""
    old = dataset_dir / f".old-{uuid.uuid4().hex[:12]}"
    old.mkdir()
    try:
        for sub in ("images", "videos"):
            if (dataset_dir / sub).exists():
                os.replace(dataset_dir / sub, old / sub)
            os.replace(staging / sub, dataset_dir / sub)
    finally:
        shutil.rmtree(old, ignore_errors=True)
