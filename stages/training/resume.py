"""How a training run starts: resumed from a checkpoint, fresh from a saved LoRA, or fresh.

diffusion-pipe resumes with `--resume_from_checkpoint <run folder>` when the newest run's
`latest` names a checkpoint that exists; without one, the newest saved LoRA seeds a fresh run
through `[adapter].init_from_existing` (the optimizer state and step counter start over).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

import tomli_w

from events.atomic import write_atomic
from stages.training.run_folder import newest_lora, resumable_checkpoint, run_dirs


@dataclass(frozen=True)
class Launch:
    """How to start: fresh, resumed from a checkpoint, or fresh from a saved LoRA."""

    resume_from: str | None  # run folder name for --resume_from_checkpoint
    init_from: Path | None  # a saved LoRA folder for [adapter].init_from_existing
    note: str
    checkpoint: str | None = None  # the global_stepN tag a resume starts from


def plan_launch(output_dir: Path, lora_file: str) -> Launch:
    """Resume when the newest run folder's `latest` names an existing checkpoint."""
    runs = run_dirs(output_dir)
    if runs:
        tag = resumable_checkpoint(runs[-1])
        if tag is not None:
            return Launch(runs[-1].name, None, f"resuming run {runs[-1].name} from {tag}", tag)
    saved = newest_lora(output_dir, lora_file)
    if saved is not None:
        return Launch(
            None,
            saved.folder,
            f"no usable checkpoint; starting fresh from the saved LoRA {saved.name} "
            "(optimizer state and step counter start over)",
        )
    return Launch(None, None, "starting a new run")


def with_init_from(config: Path, lora_folder: Path) -> Path:
    """A copy of the main TOML whose [adapter] starts from a saved LoRA folder."""
    data = tomllib.loads(config.read_text(encoding="utf-8"))
    data.setdefault("adapter", {})["init_from_existing"] = str(lora_folder.resolve())
    target = config.with_name(f"{config.stem}.init_from_existing.toml")
    write_atomic(target, tomli_w.dumps(data))
    return target
