"""Copy an earlier job's files into a new job's folder without touching the earlier job.

Large files that are written once and never changed in place are hard-linked (free on the same
volume): the media under `dataset/` and everything inside a `global_stepN/` checkpoint or a
saved `epochN/`/`stepN/` LoRA folder. Everything else is copied: diffusion-pipe's caches
(`dataset/**/cache/`) keep sqlite databases and shards that caching appends to in place, and a
run folder's `latest` is rewritten by every save. A link that the filesystem refuses (another
device, no hard links) falls back to a copy. Each file lands through a temporary name, so a copy
cut short leaves no half file, and running the copy again finishes it.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from stages.training.run_folder import CHECKPOINT_TAG, SAVED_NAME, SavedLora

# What the new job makes for itself: its log, lease, request, logs and configs, UPDATES/.
JOB_FOLDERS = ("dataset", "output")


@dataclass
class CopyReport:
    linked: int = 0
    copied: int = 0
    bytes_linked: int = 0
    bytes_copied: int = 0

    def as_dict(self) -> dict[str, int]:
        return {
            "files_linked": self.linked,
            "files_copied": self.copied,
            "bytes_linked": self.bytes_linked,
            "bytes_copied": self.bytes_copied,
        }


def written_once(relative: Path) -> bool:
    """Is this file (relative to the job folder) one that nothing changes after writing it?"""
    parts = relative.parts
    if parts[0] == "dataset":
        return "cache" not in parts[:-1]
    folders = parts[:-1]
    return any(CHECKPOINT_TAG.fullmatch(p) or SAVED_NAME.fullmatch(p) for p in folders)


def copy_job(origin: Path, target: Path, folders: tuple[str, ...] = JOB_FOLDERS) -> CopyReport:
    """Every file under `origin/<folder>` for each of `folders`, into the same place in `target`."""
    report = CopyReport()
    for folder in folders:
        for source in _files(origin / folder, make_folders_in=(origin, target)):
            relative = source.relative_to(origin)
            _place(source, target / relative, link=written_once(relative), report=report)
    return report


def copy_saved_lora(origin: Path, target: Path, saved: SavedLora) -> CopyReport:
    """Only the newest saved LoRA, in its run folder (no checkpoint, no `latest`): the training
    stage then finds nothing to resume and starts fresh from it."""
    report = CopyReport()
    for source in _files(saved.folder):
        relative = source.relative_to(origin)
        _place(source, target / relative, link=True, report=report)
    return report


def _files(folder: Path, make_folders_in: tuple[Path, Path] | None = None) -> Iterator[Path]:
    """The regular files under `folder`; with `make_folders_in=(origin, target)`, each folder
    walked is made at its place under `target` too (empty ones as well: stages check they exist)."""
    if not folder.is_dir():
        return
    for dirpath, dirnames, filenames in os.walk(folder):
        if make_folders_in is not None:
            origin, target = make_folders_in
            (target / Path(dirpath).relative_to(origin)).mkdir(parents=True, exist_ok=True)
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if path.is_file() and not path.is_symlink() and not name.startswith(".tmp-inherit-"):
                yield path


def _place(source: Path, dest: Path, *, link: bool, report: CopyReport) -> None:
    size = source.stat().st_size
    if dest.exists() and dest.stat().st_size == size:
        return  # placed by an earlier try of this copy (files land whole, by rename)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".tmp-inherit-{uuid.uuid4().hex[:8]}-{dest.name}")
    linked = False
    if link:
        try:
            os.link(source, tmp)
            linked = True
        except OSError:  # another device, or a filesystem without hard links
            linked = False
    if not linked:
        shutil.copy2(source, tmp)
    os.replace(tmp, dest)
    if linked:
        report.linked += 1
        report.bytes_linked += size
    else:
        report.copied += 1
        report.bytes_copied += size
