"""Keep the newest N complete checkpoints of each run folder; diffusion-pipe deletes none.

A checkpoint (`<run>/global_stepN/`, with `layer_XX-model_states.pt` and
`mp_rank_XX_model_states.pt`) is the optimizer state a resume needs: about 1 GB for a 14B LoRA,
written every `checkpoint_every_n_minutes`, so over a long run they fill the network volume.

`to_prune` is the decision, from a run folder's listing and what `latest` names; the rest is
the edge that deletes. Only folders older than the one `latest` names, itself complete, are
ever deleted, never that one, a newer one (still being written) or a save (`epochN/`, `stepN/`).
A folder is renamed to `.pruning-*` before it is deleted, so a kill mid-delete never leaves a
half `global_stepN` that looks like a checkpoint; `before_launch` clears such leftovers.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from stages.contract import StageContext
from stages.training.run_folder import (
    CHECKPOINT_TAG,
    checkpoint_step,
    resumable_checkpoint,
    run_dirs,
)

DEFAULT_KEEP = 2
PRUNING_PREFIX = ".pruning-"
_MODEL_FILES = "mp_rank_*_model_states.pt"
_LAYER_FILES = "layer_*-model_states.pt"


def to_prune(folders: Mapping[str, bool], latest: str | None, keep: int) -> list[str]:
    """The checkpoint folders to delete, oldest first.

    `folders` maps each folder name in a run folder to whether it holds its files (other names
    are ignored); `latest` is the tag `latest` names (None: none usable). Nothing is deleted
    unless `latest` names a complete folder; that one counts as the first of `keep`, then the
    newest complete older ones. Older folders beyond those, and older incomplete ones (a kill
    mid-write, never resumable), go; newer ones stay.
    """
    if keep < 1:
        raise ValueError(f"keep must be at least 1, got {keep}")
    if latest is None or CHECKPOINT_TAG.fullmatch(latest) is None or not folders.get(latest):
        return []
    newest = checkpoint_step(latest)
    tags = [name for name in folders if CHECKPOINT_TAG.fullmatch(name)]
    older = sorted(
        (t for t in tags if checkpoint_step(t) < newest), key=checkpoint_step, reverse=True
    )
    kept, doomed = 1, []
    for name in older:
        if folders[name] and kept < keep:
            kept += 1
        else:
            doomed.append(name)
    return sorted(doomed, key=checkpoint_step)


def _complete(folder: Path) -> bool:
    return any(folder.glob(_MODEL_FILES)) and any(folder.glob(_LAYER_FILES))


def listing(run_dir: Path) -> dict[str, bool]:
    """The run folder's checkpoint folders, each with whether it holds its files."""
    return {
        child.name: _complete(child)
        for child in run_dir.iterdir()
        if CHECKPOINT_TAG.fullmatch(child.name) and child.is_dir()
    }


@dataclass
class Pruned:
    """What one prune did: the folders removed, and those it could not remove (with why)."""

    removed: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)

    def extend(self, other: Pruned, prefix: str = "") -> None:
        self.removed += [prefix + name for name in other.removed]
        self.failed += [prefix + name for name in other.failed]


def _delete(folder: Path) -> None:
    """Rename first (one atomic step), then delete the renamed folder."""
    grave = folder.with_name(f"{PRUNING_PREFIX}{folder.name}-{secrets.token_hex(4)}")
    os.rename(folder, grave)
    shutil.rmtree(grave)


def prune_run(run_dir: Path, keep: int) -> Pruned:
    """Delete what `to_prune` chooses in one run folder. A folder that cannot be deleted is
    reported, not raised: a full volume should not also stop the training that fills it."""
    pruned = Pruned()
    for name in to_prune(listing(run_dir), resumable_checkpoint(run_dir), keep):
        try:
            _delete(run_dir / name)
        except OSError as exc:  # the strerror only: the path is the worker's
            pruned.failed.append(f"{name} ({exc.strerror or type(exc).__name__})")
        else:
            pruned.removed.append(name)
    return pruned


def clear_pruning_leftovers(run_dir: Path) -> Pruned:
    """Delete `.pruning-*` folders that a kill mid-delete left behind."""
    pruned = Pruned()
    for child in sorted(run_dir.iterdir()):
        if not child.name.startswith(PRUNING_PREFIX):
            continue
        try:
            shutil.rmtree(child) if child.is_dir() else child.unlink()
        except OSError as exc:
            pruned.failed.append(f"{child.name} ({exc.strerror or type(exc).__name__})")
        else:
            pruned.removed.append(child.name)
    return pruned


def _report(ctx: StageContext, pruned: Pruned, keep: int) -> None:
    if pruned.removed:
        ctx.progress(
            message=f"removed {len(pruned.removed)} older checkpoint folder(s) "
            f"({', '.join(pruned.removed)}), keeping the newest {keep}",
            pruned_checkpoints=pruned.removed,
        )
    if pruned.failed:
        ctx.progress(message=f"could not remove old checkpoint(s): {', '.join(pruned.failed)}")


def after_checkpoint(ctx: StageContext, output_dir: Path, keep: int) -> None:
    """A CHECKPOINT was recorded: prune the run folder being trained (the newest)."""
    runs = run_dirs(output_dir)
    if runs:
        _report(ctx, prune_run(runs[-1], keep), keep)


def before_launch(ctx: StageContext, output_dir: Path, keep: int) -> None:
    """Before each launch, in every run folder: clear `.pruning-*` leftovers, then prune, so a
    worker killed between a checkpoint and its prune catches up on the next delivery."""
    pruned = Pruned()
    runs = run_dirs(output_dir)
    for run in runs:
        prefix = "" if run == runs[-1] else f"{run.name}/"
        pruned.extend(clear_pruning_leftovers(run), prefix)
        pruned.extend(prune_run(run, keep), prefix)
    _report(ctx, pruned, keep)
