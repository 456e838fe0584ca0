"""A `tiny` training job on minipipe that checkpoints every epoch, and a worker that dies by
SIGKILL between a checkpoint and its prune (tests/stages/training/test_checkpoint_pruning.py).

`python -m tests.support.checkpoint_job ROOT KEEP KILL_AT` runs the job's training stage with
its events on disk under ROOT, as a worker would, and SIGKILLs itself (the trainer first, as a
lost machine takes both) at the KILL_AT-th prune call: the CHECKPOINT fact is in the log, its
prune has not begun.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

from PIL import Image

from events.store import EventStore, job_path
from minipipe.model import build_tiny_model
from orchestrator.machine import JobMachine
from orchestrator.plan import trainer_spec
from orchestrator.request import parse_request
from stages.contract import StageContext
from stages.training import checkpoints
from stages.training.config import JobPaths, render, write_configs
from stages.training.stage import Training, TrainingPlan
from tests.support.helpers import stage_context

JOB_ID = "job"
LORA = "adapter_model.safetensors"
IMAGES = 4  # one step each: a checkpoint every IMAGES steps


def tiny_job(root: Path, epochs: int) -> TrainingPlan:
    """The job's dataset, model and configs under `root`; its training plan."""
    paths = JobPaths.for_job(root, JOB_ID)
    assert paths.images_dir is not None
    if not paths.images_dir.is_dir():
        paths.images_dir.mkdir(parents=True)
        for i in range(IMAGES):
            image = Image.new("RGB", (32, 32), (i * 60, 90, 200 - i * 40))
            image.save(paths.images_dir / f"{i}.png")
            (paths.images_dir / f"{i}.txt").write_text(f"a tiny square number {i}")
        build_tiny_model(paths.models_root / "tiny")
    request = parse_request(
        {
            "model_type": "tiny",
            "dataset": {"type": "precaptioned", "images_url": "https://example.com/d.zip"},
            "training": {
                "epochs": epochs,
                "resolution": 32,
                "save_every_n_epochs": 1,
                "checkpoint_every_n_epochs": 1,
            },
            "output": {"method": "local", "local": {"path": str(root / "out")}},
        }
    )
    configs = render(trainer_spec(request), paths, image_count=IMAGES)
    _, main = write_configs(configs, paths.config_dir)
    return TrainingPlan("tiny", main, LORA, total_steps=IMAGES * epochs)


def job_context(root: Path) -> tuple[StageContext, EventStore]:
    """The stage's context over the job's on-disk log, in TRAINING (entered on first use)."""
    store = EventStore.on_disk(root)
    log = store.open(JOB_ID)
    machine = JobMachine(log)
    if not log.events:
        for status in ("INITIALIZED", "STARTING", "DOWNLOADING", "MODEL_DOWNLOAD", "TRAINING"):
            machine.fire(status)
    return stage_context(job_path(root, JOB_ID), machine.record, job_id=JOB_ID), store


def main(argv: list[str]) -> int:
    root, keep, kill_at = Path(argv[0]), int(argv[1]), int(argv[2])
    plan = TrainingPlan("tiny", Path(argv[3]), LORA, total_steps=int(argv[4]))
    ctx, _ = job_context(root)
    stage = Training(plan, progress_every_s=0, keep_checkpoints=keep)
    prune = checkpoints.after_checkpoint
    calls = 0

    def dies_at_the_prune(ctx: StageContext, output_dir: Path, keep: int) -> None:
        nonlocal calls
        calls += 1
        if calls == kill_at:
            run = stage.current_run
            assert run is not None
            run.signal_group(signal.SIGKILL)
            run.proc.wait()
            os.kill(os.getpid(), signal.SIGKILL)
        prune(ctx, output_dir, keep)

    checkpoints.after_checkpoint = dies_at_the_prune
    stage.run(ctx)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
