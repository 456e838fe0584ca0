"""Stand-in stages that write small files: the runner's rehearsal until the real stages exist.

They drive the real runner, event store and lease exactly as the real stages will (statuses,
facts, files to verify), without downloading or training anything. `make demo` and the runner
tests use them; the tests' knobs (interrupt, fail, kill at an epoch) simulate what a worker
meets in production.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

from events.facts import DatasetReport, EpochSaved, ModelReady
from events.vocabulary import Status
from stages.contract import Stage, StageContext
from stages.errors import JobInterrupted, StageFailed


class Download(Stage):
    name = "dataset"
    status = Status.DOWNLOADING

    def __init__(self) -> None:
        self.runs = 0

    def run(self, ctx: StageContext) -> dict[str, Any]:
        self.runs += 1
        target = ctx.job_dir / "dataset" / "a.txt"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text("a photo of a cat")
        ctx.record(
            DatasetReport(
                model_type="tiny",
                dataset_type="precaptioned",
                images=1,
                videos=0,
                usable_images=1,
                usable_videos=0,
                captions={"found": 1},
            )
        )
        return {"files": ["dataset/a.txt"], "images": 1}


class Weights(Stage):
    name = "weights"
    status = Status.MODEL_DOWNLOAD

    def __init__(self, models: Path | None = None) -> None:
        self.models = models
        self.runs = 0

    def run(self, ctx: StageContext) -> dict[str, Any]:
        self.runs += 1
        target = ctx.job_dir / "model" / "tiny.bin"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(b"\x00" * 64)
        ctx.record(ModelReady(model_type="tiny", path=str(target.parent), bytes=64, source="built"))
        return {"files": ["model/tiny.bin"]}


class Train(Stage):
    """Writes one epoch file per run; can be told to stop, fail or die at a given epoch."""

    name = "training"
    status = Status.TRAINING
    done_status = Status.TRAINING_COMPLETE

    def __init__(
        self,
        epochs: int = 3,
        *,
        interrupt_at: int | None = None,
        fail_with: str | None = None,
        kill_at: int | None = None,
    ) -> None:
        self.epochs = epochs
        self.interrupt_at = interrupt_at
        self.fail_with = fail_with
        self.kill_at = kill_at
        self.runs = 0

    def run(self, ctx: StageContext) -> dict[str, Any]:
        self.runs += 1
        assert (ctx.job_dir / ctx.results["dataset"]["files"][0]).exists()
        out = ctx.job_dir / "output"
        out.mkdir(exist_ok=True)
        done = sorted(int(p.stem[5:]) for p in out.glob("epoch*.bin"))
        for epoch in range(max(done, default=0) + 1, self.epochs + 1):
            if self.fail_with is not None:
                raise StageFailed(self.fail_with)
            if epoch == self.interrupt_at:
                self.interrupt_at = None
                raise JobInterrupted("worker received SIGTERM")
            if epoch == self.kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
            (out / f"epoch{epoch}.bin").write_bytes(bytes([epoch]) * 16)
            ctx.record(EpochSaved(name=f"epoch{epoch}", step=epoch, epoch=epoch))
            ctx.progress(epoch=epoch, percent=100 * epoch // self.epochs)
        return {"files": [f"output/epoch{self.epochs}.bin"], "epochs": self.epochs}


class Publish(Stage):
    name = "publish"
    status = Status.UPLOADING

    def __init__(self, dest: Path) -> None:
        self.dest = dest
        self.runs = 0

    def run(self, ctx: StageContext) -> dict[str, Any]:
        self.runs += 1
        src = ctx.job_dir / ctx.results["training"]["files"][0]
        self.dest.mkdir(parents=True, exist_ok=True)
        target = self.dest / f"{ctx.job_id}.bin"
        target.write_bytes(src.read_bytes())
        return {"download_url": target.as_uri(), "files": []}
