"""What an interrupted diffusion-pipe run leaves in its run folder that would break the next
launch, removed before every launch.

- `save` / `save_quit`: a stop's signal file that the trainer never reached (it only looks after
  a training step). Left there, the resumed run checkpoints and quits at its first step.
- `epochN/` or `stepN/` still holding `tmp/`: a save that was killed midway. diffusion-pipe
  makes `tmp/` with `exist_ok=False` (utils/saver.py), so every resume would crash at that same
  save; the folder is incomplete anyway (`run_folder.saved_loras` never offers it).
"""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path

from stages.training.run_folder import SAVED_NAME, run_dirs

SIGNAL_FILES = ("save", "save_quit")


def clear_leftovers(output_dir: Path) -> list[str]:
    """Remove the newest run folder's leftovers (the folder a resume continues); returns what
    was removed, relative to `output_dir`."""
    runs = run_dirs(output_dir)
    if not runs:
        return []
    run = runs[-1]
    removed = []
    for name in SIGNAL_FILES:
        signal_file = run / name
        if signal_file.is_file():
            with contextlib.suppress(FileNotFoundError):
                signal_file.unlink()
            removed.append(f"{run.name}/{name} (a stop signal the trainer never acted on)")
    for child in sorted(run.iterdir()):
        if SAVED_NAME.match(child.name) and child.is_dir() and (child / "tmp").exists():
            shutil.rmtree(child)
            removed.append(f"{run.name}/{child.name}/ (a save that was interrupted)")
    return removed
