"""What a trainer's output_dir holds: run folders, checkpoints, saved LoRAs. Read-only."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

_RUN_NAME = re.compile(r"^\d{8}_\d{2}-\d{2}-\d{2}$")  # diffusion-pipe's %Y%m%d_%H-%M-%S
SAVED_NAME = re.compile(r"^(epoch|step)(\d+)$")
CHECKPOINT_TAG = re.compile(r"global_step(\d+)")  # DeepSpeed's tag, a folder of the run


def checkpoint_step(tag: str) -> int:
    """The step of a `global_stepN` tag."""
    match = CHECKPOINT_TAG.fullmatch(tag)
    if match is None:
        raise ValueError(f"{tag!r} is not a checkpoint tag")
    return int(match[1])


def run_dirs(output_dir: Path) -> list[Path]:
    """Run folders, oldest first (the names sort by time)."""
    if not output_dir.is_dir():
        return []
    return sorted(p for p in output_dir.iterdir() if p.is_dir() and _RUN_NAME.match(p.name))


def resumable_checkpoint(run_dir: Path) -> str | None:
    """The `global_stepN` tag that `latest` names, when that folder exists (else None)."""
    latest = run_dir / "latest"
    try:
        tag = latest.read_text(encoding="utf-8").strip()
    except (FileNotFoundError, UnicodeDecodeError):
        return None
    if not CHECKPOINT_TAG.fullmatch(tag) or not (run_dir / tag).is_dir():
        return None
    return tag


@dataclass(frozen=True)
class SavedLora:
    folder: Path
    kind: str  # "epoch" or "step"
    number: int
    file: Path

    @property
    def name(self) -> str:
        return self.folder.name


def saved_loras(run_dir: Path, lora_file: str) -> list[SavedLora]:
    """Complete saves (the LoRA file present, no leftover tmp/), in training order."""
    found = []
    for child in run_dir.iterdir() if run_dir.is_dir() else []:
        m = SAVED_NAME.match(child.name)
        if not m or not child.is_dir() or (child / "tmp").exists():
            continue
        file = child / lora_file
        if file.is_file() and file.stat().st_size > 0:
            found.append(SavedLora(child, m[1], int(m[2]), file))
    # Epoch and step saves interleave; the file's age orders them.
    return sorted(found, key=lambda s: (s.file.stat().st_mtime_ns, s.number))


def newest_lora(output_dir: Path, lora_file: str) -> SavedLora | None:
    """The most recent complete save in any run folder."""
    for run in reversed(run_dirs(output_dir)):
        saves = saved_loras(run, lora_file)
        if saves:
            return saves[-1]
    return None
