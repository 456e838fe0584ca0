"""Safe extraction of dataset archives into the job's `dataset/images` and `dataset/videos`.

`extract_dataset(sources, dataset_dir, limits=...)` takes archives (zip, tar, tar.gz, found by
magic bytes) and folders (a Hub snapshot: loose media plus any archives), and:

1. plans every entry before writing anything: absolute paths, `..`, symlinks, hardlinks, device
   files and FIFOs refuse the whole archive (zip-slip); the total uncompressed size, each
   entry's compression ratio and the file count are bounded;
2. drops `__MACOSX/`, `.DS_Store`, `._*` and hidden files;
3. flattens subfolders: a media file and its caption (same folder, same stem) get one flat stem,
   the bare stem when it is unique, else the folder path joined with `__` (`a/x.jpg`, `a/x.txt`
   -> `a__x.jpg`, `a__x.txt`), so pairs stay pairs;
4. writes into a staging folder inside `dataset_dir` and swaps it in with renames, then writes
   `COMPLETE_MARKER` last: a crash never leaves a dataset that looks complete.

Output names are built by this module from sanitised parts, so nothing is ever written outside
`dataset_dir`. Captions are written as `<stem>.txt` (lower-case: diffusion-pipe's suffix check
is case-sensitive), optionally through `caption_fn` (the trigger word).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import stat
import tarfile
import uuid
import zipfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO

from stages.dataset.folder import CAPTION_EXT, COMPLETE_MARKER, IMAGE_EXTS, VIDEO_EXTS, write_marker
from stages.dataset.limits import ExtractLimits, GiB
from stages.errors import ArchiveRefused

RATIO_MIN_BYTES = 1 << 20  # tiny files compress well for honest reasons; bombs are big
_UNSAFE_CHARS = re.compile(r"[\x00-\x1f\x7f/\\:]")
_MAX_STEM = 150


@dataclass(frozen=True)
class Source:
    """One archive or folder and the request field it came from (for messages)."""

    path: Path
    field: str


@dataclass
class _Entry:
    source: int  # index into the plan's openers
    member: str  # name inside the archive (or relative path inside a folder)
    folder: str  # posix folder of the entry, "" at the top
    stem: str
    ext: str  # lower-case
    size: int


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


def detect_format(path: Path) -> str | None:
    """ "zip", "tar", "tar.gz" or None, from the first bytes (never the extension)."""
    with path.open("rb") as f:
        head = f.read(512)
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return "zip"
    if head[:2] == b"\x1f\x8b":
        return "tar.gz"
    if len(head) >= 262 and head[257:262] == b"ustar":
        return "tar"
    return None


# --- planning ----------------------------------------------------------------------------------


def _refuse(src: Source, why: str) -> ArchiveRefused:
    return ArchiveRefused(f"{src.field}: the archive was refused: {why}; nothing was extracted")


def _check_name(src: Source, raw: str) -> PurePosixPath:
    name = raw.replace("\\", "/")
    if "\x00" in name:
        raise _refuse(src, "an entry name contains a NUL byte")
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        raise _refuse(src, f'entry "{_show(raw)}" has an absolute path')
    path = PurePosixPath(name)
    if ".." in path.parts:
        raise _refuse(src, f'entry "{_show(raw)}" points outside the archive ("..")')
    return path


def _show(name: str) -> str:
    text = name.encode("unicode_escape").decode("ascii")
    return text if len(text) <= 80 else text[:77] + "..."


def _dropped(path: PurePosixPath) -> bool:
    """macOS resource forks, Finder metadata and hidden files are never training data."""
    return any(p == "__MACOSX" or p.startswith(".") for p in path.parts)


@dataclass
class _Plan:
    entries: list[_Entry] = field(default_factory=list)
    dropped: int = 0
    ignored: list[str] = field(default_factory=list)
    total: int = 0
    files: int = 0


def _add(
    plan: _Plan, src: Source, idx: int, path: PurePosixPath, *, size: int, limits: ExtractLimits
) -> None:
    plan.files += 1
    if plan.files > limits.max_files:
        raise _refuse(src, f"more than {limits.max_files} files")
    if _dropped(path):
        plan.dropped += 1
        return
    plan.total += size
    if plan.total > limits.max_total_bytes:
        raise _refuse(src, f"it unpacks to more than {limits.max_total_bytes / GiB:.1f} GiB")
    ext = path.suffix.lower()
    if ext not in IMAGE_EXTS | VIDEO_EXTS | {CAPTION_EXT}:
        plan.ignored.append(str(path))
        return
    folder = str(path.parent) if str(path.parent) != "." else ""
    plan.entries.append(_Entry(idx, str(path), folder, path.stem, ext, size))


def _plan_zip(
    plan: _Plan, src: Source, idx: int, zf: zipfile.ZipFile, limits: ExtractLimits
) -> None:
    for info in zf.infolist():
        path = _check_name(src, info.filename)
        mode = info.external_attr >> 16
        if stat.S_ISLNK(mode):
            raise _refuse(src, f'entry "{_show(info.filename)}" is a symbolic link')
        if mode and (stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISFIFO(mode)):
            raise _refuse(src, f'entry "{_show(info.filename)}" is a device file or FIFO')
        if info.is_dir():
            continue
        if info.flag_bits & 0x1:
            raise _refuse(src, f'entry "{_show(info.filename)}" is encrypted')
        size = info.file_size
        if size > RATIO_MIN_BYTES and size > limits.max_ratio * max(1, info.compress_size):
            raise _refuse(
                src,
                f'entry "{_show(info.filename)}" expands {size // max(1, info.compress_size)}x '
                f"(limit {limits.max_ratio:.0f}x): a compression bomb?",
            )
        _add(plan, src, idx, path, size=size, limits=limits)


def _plan_tar(
    plan: _Plan, src: Source, idx: int, tf: tarfile.TarFile, *, limits: ExtractLimits, packed: int
) -> None:
    start = plan.total
    for member in tf:
        path = _check_name(src, member.name)
        if member.issym() or member.islnk():
            raise _refuse(src, f'entry "{_show(member.name)}" is a link')
        if member.ischr() or member.isblk() or member.isfifo() or member.isdev():
            raise _refuse(src, f'entry "{_show(member.name)}" is a device file or FIFO')
        if member.isdir():
            continue
        if not member.isreg():
            raise _refuse(src, f'entry "{_show(member.name)}" is not a regular file')
        _add(plan, src, idx, path, size=member.size, limits=limits)
        unpacked = plan.total - start
        if unpacked > RATIO_MIN_BYTES and unpacked > limits.max_ratio * max(1, packed):
            raise _refuse(src, f"it expands more than {limits.max_ratio:.0f}x: a compression bomb?")


def _plan_folder(plan: _Plan, src: Source, idx: int, limits: ExtractLimits) -> list[Path]:
    """Loose files of a folder become entries; archives inside it are returned to open."""
    archives: list[Path] = []
    for path in sorted(src.path.rglob("*")):
        rel = PurePosixPath(path.relative_to(src.path).as_posix())
        if path.is_symlink():
            raise _refuse(src, f'"{_show(str(rel))}" is a symbolic link')
        if not path.is_file() or _dropped(rel):
            continue
        if detect_format(path) is not None and rel.suffix.lower() not in IMAGE_EXTS | VIDEO_EXTS:
            archives.append(path)
            continue
        _add(plan, src, idx, rel, size=path.stat().st_size, limits=limits)
    return archives


# --- naming ------------------------------------------------------------------------------------


def _safe(part: str) -> str:
    cleaned = _UNSAFE_CHARS.sub("_", part).strip() or "_"
    return cleaned.encode("utf-8")[:_MAX_STEM].decode("utf-8", "ignore") or "_"


def flat_stems(groups: Sequence[tuple[int, str, str]]) -> dict[tuple[int, str, str], str]:
    """(source, folder, stem) -> a unique flat stem, bare when unique, else folder-prefixed."""
    by_stem: dict[str, int] = {}
    for _, _, stem in groups:
        by_stem[_safe(stem).lower()] = by_stem.get(_safe(stem).lower(), 0) + 1
    out: dict[tuple[int, str, str], str] = {}
    used: set[str] = set()
    for key in sorted(groups, key=lambda g: (g[1].count("/"), g)):
        _source, folder, stem = key
        base = _safe(stem)
        if by_stem[base.lower()] > 1 and folder:
            base = "__".join([*(_safe(p) for p in folder.split("/")), base])
        name, n = base, 1
        while name.lower() in used:  # case-insensitive: the volume may be too
            n += 1
            name = f"{base}_{n}"
        used.add(name.lower())
        out[key] = name
    return out


# --- writing -----------------------------------------------------------------------------------


Opener = Callable[[str], IO[bytes]]


def _copy_bounded(stream: IO[bytes], dest: Path, limit: int, src: Source, name: str) -> int:
    """Copy at most `limit` bytes: a header that lies about its size is caught here."""
    written = 0
    with dest.open("xb") as out:
        while chunk := stream.read(1 << 20):
            written += len(chunk)
            if written > limit:
                raise _refuse(src, f'entry "{_show(name)}" is larger than its header says')
            out.write(chunk)
    return written


def extract_dataset(
    sources: Iterable[Source],
    dataset_dir: Path,
    *,
    limits: ExtractLimits | None = None,
    caption_fn: Callable[[str], str] | None = None,
) -> ExtractResult:
    """Unpack `sources` into `dataset_dir/images` and `dataset_dir/videos`. See the module doc."""
    limits = limits or ExtractLimits()
    plan = _Plan()
    openers: list[tuple[Source, Opener]] = []
    with contextlib.ExitStack() as stack:
        todo = [*sources]
        while todo:
            src = todo.pop(0)
            if src.path.is_dir():
                idx = len(openers)
                openers.append((src, _folder_opener(src.path)))
                todo += [Source(p, src.field) for p in _plan_folder(plan, src, idx, limits)]
                continue
            kind = detect_format(src.path)
            if kind is None:
                raise ArchiveRefused(
                    f"{src.field}: the download is not a zip or tar archive; give a direct link "
                    "to a .zip (or .tar/.tar.gz) of your media and captions"
                )
            idx = len(openers)
            try:
                if kind == "zip":
                    zf = stack.enter_context(zipfile.ZipFile(src.path))
                    _plan_zip(plan, src, idx, zf, limits)
                    openers.append((src, zf.open))
                else:
                    tf = stack.enter_context(tarfile.open(src.path, "r:*"))
                    _plan_tar(plan, src, idx, tf, limits=limits, packed=src.path.stat().st_size)
                    openers.append((src, _tar_opener(tf, src)))
            except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as exc:
                if isinstance(exc, ArchiveRefused):
                    raise
                raise ArchiveRefused(
                    f"{src.field}: the {kind} archive is damaged or truncated ({_reason(exc)}); "
                    "re-create it and upload it again"
                ) from exc
        return _write(plan, openers, dataset_dir, caption_fn)


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {_show(str(exc))}" if str(exc) else type(exc).__name__


def _folder_opener(root: Path) -> Opener:
    def open_(member: str) -> IO[bytes]:
        return (root / member).open("rb")

    return open_


def _tar_opener(tf: tarfile.TarFile, src: Source) -> Opener:
    members = {m.name.replace("\\", "/"): m for m in tf.getmembers()}

    def open_(member: str) -> IO[bytes]:
        stream = tf.extractfile(members[member])
        if stream is None:  # pragma: no cover - planning kept regular files only
            raise _refuse(src, f'entry "{_show(member)}" cannot be read')
        return stream

    return open_


def _write(
    plan: _Plan,
    openers: Sequence[tuple[Source, Opener]],
    dataset_dir: Path,
    caption_fn: Callable[[str], str] | None,
) -> ExtractResult:
    result = ExtractResult(dropped=plan.dropped, ignored=plan.ignored)
    groups: dict[tuple[int, str, str], list[_Entry]] = {}
    for entry in plan.entries:
        groups.setdefault((entry.source, entry.folder, entry.stem), []).append(entry)
    names = flat_stems(list(groups))
    dataset_dir.mkdir(parents=True, exist_ok=True)
    (dataset_dir / COMPLETE_MARKER).unlink(missing_ok=True)
    staging = dataset_dir / f".staging-{uuid.uuid4().hex[:12]}"
    try:
        for sub in ("images", "videos"):
            (staging / sub).mkdir(parents=True)
        for key, entries in groups.items():
            flat = names[key]
            result.renamed += flat != _safe(key[2])
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
                src, opener = openers[e.source]
                with opener(e.member) as stream:
                    result.bytes += _copy_bounded(stream, dest, e.size, src, e.member)
                (result.videos if kind == "videos" else result.images).append(dest.name)
            if caption is not None:
                src, opener = openers[caption.source]
                with opener(caption.member) as stream:
                    data = stream.read(caption.size + 1)[: caption.size]
                if caption_fn is not None:
                    data = _transform(data, caption_fn)
                for kind in kinds:
                    (staging / kind / f"{flat}{CAPTION_EXT}").write_bytes(data)
                result.captions += 1
        _swap(staging, dataset_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    write_marker(dataset_dir)
    return result


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
