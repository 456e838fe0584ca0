"""Safe extraction of dataset archives into the job's `dataset/images` and `dataset/videos`.

`extract_dataset(sources, dataset_dir, limits=...)` takes archives (zip, tar, tar.gz, found by
magic bytes) and folders (a Hub snapshot: loose media plus any archives), and:

1. bounds what the standard library reads before planning starts (headers.py): a zip's entry
   count and central directory, a tar's PAX and GNU long-name headers;
2. plans every entry before writing anything: absolute paths (`/x`, `\\x`, `C:\\x`), `..`,
   symlinks, hardlinks, device files, FIFOs, sparse files and duplicate names refuse the whole
   archive (zip-slip); the total uncompressed size, the file count and the compression ratio
   (each large entry's, and each archive's as a whole, small entries included) are bounded; an
   archive with no media but other archives inside is refused, saying so (they are not
   unpacked);
3. drops `__MACOSX/`, `.DS_Store`, `._*` and hidden files;
4. flattens subfolders: a media file and its caption (same folder, same stem) get one flat stem,
   the bare stem when it is unique, else the folder path joined with `__` (`a/x.jpg`, `a/x.txt`
   -> `a__x.jpg`, `a__x.txt`), so pairs stay pairs;
5. writes into a staging folder inside `dataset_dir` and swaps it in with renames, then writes
   `COMPLETE_MARKER` last (staging.py): a crash or a full disk never leaves a dataset that
   looks complete.

Output names are built from sanitised parts (`a:b.png` -> `a_b.png`), so nothing is ever
written outside `dataset_dir`. Captions are written as `<stem>.txt` (lower-case: diffusion-pipe's
suffix check is case-sensitive), optionally through `caption_fn` (the trigger word).
"""

from __future__ import annotations

import contextlib
import re
import stat
import tarfile
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

from stages.dataset.folder import CAPTION_EXT, IMAGE_EXTS, VIDEO_EXTS
from stages.dataset.headers import (
    MAX_NAME,
    TarBudget,
    check_zip_directory,
    refused,
    show,
    too_many_files,
)
from stages.dataset.limits import ExtractLimits, GiB
from stages.dataset.staging import Entry, ExtractResult, Opener, Plan, write_plan
from stages.errors import ArchiveRefused

__all__ = ["ExtractResult", "Source", "detect_format", "extract_dataset"]

RATIO_MIN_BYTES = 1 << 20  # tiny files compress well for honest reasons; bombs are big
# Files that are archives themselves: never unpacked, so an archive of only these is a mistake.
NESTED_EXTS = frozenset(
    {".zip", ".tar", ".gz", ".tgz", ".bz2", ".tbz2", ".xz", ".txz", ".zst", ".7z", ".rar"}
)
_MEDIA_EXTS = IMAGE_EXTS | VIDEO_EXTS


@dataclass(frozen=True)
class Source:
    """One archive or folder and the request field it came from (for messages)."""

    path: Path
    field: str


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
    return refused(src.field, why)


def _check_name(src: Source, raw: str) -> PurePosixPath:
    name = raw.replace("\\", "/")
    if "\x00" in name:
        raise _refuse(src, "an entry name contains a NUL byte")
    if len(raw) > MAX_NAME:
        raise _refuse(src, f'entry "{show(raw)}" has a name longer than {MAX_NAME} characters')
    # Only a root or a drive root is absolute: "a:b.png" is an ordinary (if odd) name.
    if name.startswith("/") or re.match(r"^[A-Za-z]:/", name):
        raise _refuse(src, f'entry "{show(raw)}" has an absolute path')
    path = PurePosixPath(name)
    if ".." in path.parts:
        raise _refuse(src, f'entry "{show(raw)}" points outside the archive ("..")')
    return path


def _dropped(path: PurePosixPath) -> bool:
    """macOS resource forks, Finder metadata and hidden files are never training data."""
    return any(p == "__MACOSX" or p.startswith(".") for p in path.parts)


@dataclass
class _Found:
    """What planning one source found beyond the plan, for the checks of that source."""

    idx: int
    seen: dict[str, str]  # normalised name -> the name as spelled, of planned entries
    nested: list[str]  # ignored files that are archives
    media: int = 0
    unpacked: int = 0  # bytes of every file entry, for the archive's ratio


def _count(plan: Plan, src: Source, limits: ExtractLimits) -> None:
    plan.files += 1
    if plan.files > limits.max_files:
        raise too_many_files(src.field, limits)


def _add(
    plan: Plan,
    src: Source,
    found: _Found,
    raw: str,
    path: PurePosixPath,
    *,
    size: int,
    limits: ExtractLimits,
) -> None:
    _count(plan, src, limits)
    if _dropped(path):
        plan.dropped += 1
        return
    plan.total += size
    if plan.total > limits.max_total_bytes:
        raise _refuse(src, f"it unpacks to more than {limits.max_total_bytes / GiB:.1f} GiB")
    ext = path.suffix.lower()
    if ext not in _MEDIA_EXTS | {CAPTION_EXT}:
        plan.ignored.append(str(path))
        if ext in NESTED_EXTS:
            found.nested.append(str(path))
        return
    first = found.seen.get(str(path))
    if first is not None:  # both would be written to one name: which one is meant?
        also = "" if first == raw else f' (also as "{show(first)}")'
        raise _refuse(src, f'entry "{show(raw)}" is in the archive twice{also}; keep one')
    found.seen[str(path)] = raw
    found.media += ext != CAPTION_EXT
    folder = str(path.parent) if str(path.parent) != "." else ""
    plan.entries.append(Entry(found.idx, str(path), raw, folder, path.stem, ext, size))


_RATIO_ADVICE = (
    "Images and videos barely compress: zip the media files themselves (an operator can raise "
    "DPS_DATASET_MAX_RATIO)"
)


def _check_ratio(src: Source, unpacked: int, packed: int, limits: ExtractLimits) -> None:
    if unpacked > RATIO_MIN_BYTES and unpacked > limits.max_ratio * max(1, packed):
        raise _refuse(
            src,
            f"it expands more than {limits.max_ratio:.0f}x: a compression bomb? {_RATIO_ADVICE}",
        )


def _check_has_media(src: Source, found: _Found) -> None:
    """An archive of archives is a packing mistake: say it, not "no images found" later."""
    if found.media or not found.nested:
        return
    names = ", ".join(show(n) for n in found.nested[:3]) + (
        ", ..." if len(found.nested) > 3 else ""
    )
    raise ArchiveRefused(
        f"{src.field}: the archive holds no images or videos, only other archives ({names}); "
        "nested archives are not unpacked: put the media files in one archive"
    )


def _plan_zip(
    plan: Plan, src: Source, found: _Found, zf: zipfile.ZipFile, limits: ExtractLimits
) -> None:
    packed = src.path.stat().st_size
    for info in zf.infolist():
        path = _check_name(src, info.filename)
        mode = info.external_attr >> 16
        if stat.S_ISLNK(mode):
            raise _refuse(src, f'entry "{show(info.filename)}" is a symbolic link')
        if mode and (stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISFIFO(mode)):
            raise _refuse(src, f'entry "{show(info.filename)}" is a device file or FIFO')
        if info.is_dir():
            _count(plan, src, limits)
            continue
        if info.flag_bits & 0x1:
            raise _refuse(src, f'entry "{show(info.filename)}" is encrypted')
        size = info.file_size
        if size > RATIO_MIN_BYTES and size > limits.max_ratio * max(1, info.compress_size):
            raise _refuse(
                src,
                f'entry "{show(info.filename)}" expands {size // max(1, info.compress_size)}x '
                f"(limit {limits.max_ratio:.0f}x): a compression bomb? {_RATIO_ADVICE}",
            )
        _add(plan, src, found, info.filename, path, size=size, limits=limits)
        found.unpacked += size
        _check_ratio(src, found.unpacked, packed, limits)


def _plan_tar(
    plan: Plan,
    src: Source,
    found: _Found,
    tf: tarfile.TarFile,
    *,
    budget: TarBudget,
    limits: ExtractLimits,
) -> None:
    packed = src.path.stat().st_size
    for member in tf:
        _check_ratio(src, found.unpacked + budget.total, packed, limits)  # its headers, read
        path = _check_name(src, member.name)
        if member.issym() or member.islnk():
            raise _refuse(src, f'entry "{show(member.name)}" is a link')
        if member.ischr() or member.isblk() or member.isfifo() or member.isdev():
            raise _refuse(src, f'entry "{show(member.name)}" is a device file or FIFO')
        if member.isdir():
            _count(plan, src, limits)  # tarfile keeps every member: folders cost memory too
            continue
        if not member.isreg():
            raise _refuse(src, f'entry "{show(member.name)}" is not a regular file')
        _add(plan, src, found, member.name, path, size=member.size, limits=limits)
        # Dropped entries are decompressed to be skipped, and headers are unpacked bytes too.
        found.unpacked += member.size
        _check_ratio(src, found.unpacked + budget.total, packed, limits)


def _plan_folder(plan: Plan, src: Source, found: _Found, limits: ExtractLimits) -> list[Path]:
    """Loose files of a folder become entries; archives inside it are returned to open."""
    archives: list[Path] = []
    for path in sorted(src.path.rglob("*")):
        rel = PurePosixPath(path.relative_to(src.path).as_posix())
        if path.is_symlink():
            raise _refuse(src, f'"{show(str(rel))}" is a symbolic link')
        if not path.is_file() or _dropped(rel):
            continue
        if detect_format(path) is not None and rel.suffix.lower() not in _MEDIA_EXTS:
            archives.append(path)
            continue
        _add(plan, src, found, str(rel), rel, size=path.stat().st_size, limits=limits)
    return archives


def extract_dataset(
    sources: Iterable[Source],
    dataset_dir: Path,
    *,
    limits: ExtractLimits | None = None,
    caption_fn: Callable[[str], str] | None = None,
) -> ExtractResult:
    """Unpack `sources` into `dataset_dir/images` and `dataset_dir/videos`. See the module doc."""
    limits = limits or ExtractLimits()
    plan = Plan()
    openers: list[tuple[str, Opener]] = []
    with contextlib.ExitStack() as stack:
        todo = [*sources]
        while todo:
            src = todo.pop(0)
            found = _Found(len(openers), {}, [])
            if src.path.is_dir():
                openers.append((src.field, _folder_opener(src.path)))
                todo += [Source(p, src.field) for p in _plan_folder(plan, src, found, limits)]
                continue
            kind = detect_format(src.path)
            if kind is None:
                raise ArchiveRefused(
                    f"{src.field}: the download is not a zip or tar archive; give a direct link "
                    "to a .zip (or .tar/.tar.gz) of your media and captions"
                )
            try:
                if kind == "zip":
                    check_zip_directory(src.path, src.field, limits)
                    zf = stack.enter_context(zipfile.ZipFile(src.path))
                    _plan_zip(plan, src, found, zf, limits)
                    openers.append((src.field, zf.open))
                else:
                    budget = TarBudget(src.field, limits)
                    tf = stack.enter_context(tarfile.open(src.path, "r:*", tarinfo=budget.tarinfo))
                    _plan_tar(plan, src, found, tf, budget=budget, limits=limits)
                    openers.append((src.field, _tar_opener(tf, src)))
            except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as exc:
                raise ArchiveRefused(
                    f"{src.field}: the {kind} archive is damaged or truncated ({_reason(exc)}); "
                    "re-create it and upload it again"
                ) from exc
            except NotImplementedError as exc:  # zipfile: a zip format version it cannot read
                raise ArchiveRefused(
                    f"{src.field}: the {kind} archive uses a format this worker cannot read "
                    f"({_reason(exc)}); re-create it as an ordinary zip"
                ) from exc
            _check_has_media(src, found)
        return write_plan(plan, openers, dataset_dir, caption_fn)


def _reason(exc: BaseException) -> str:
    # An OSError's text names the file: the worker's path, not the user's.
    text = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return f"{type(exc).__name__}: {show(text)}" if text else type(exc).__name__


def _folder_opener(root: Path) -> Opener:
    def open_(member: str) -> IO[bytes]:
        return (root / member).open("rb")

    return open_


def _tar_opener(tf: tarfile.TarFile, src: Source) -> Opener:
    members = {m.name: m for m in tf.getmembers()}  # by the name as spelled: planned unique

    def open_(member: str) -> IO[bytes]:
        stream = tf.extractfile(members[member])
        if stream is None:  # pragma: no cover - planning kept regular files only
            raise _refuse(src, f'entry "{show(member)}" cannot be read')
        return stream

    return open_
