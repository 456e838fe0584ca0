"""The inherit stage (STARTING): a job sent with `resume_from` takes over an earlier job's files.

It runs once, on the new job's first delivery, before the base model starts downloading. The
earlier job's lease is held for the copy, so no worker writes that job meanwhile (a job still
running is refused), and nothing of it changes but that lease record: its log is only read,
its files are linked or copied (`copy`). With `checkpoint`, the dataset and captions stages'
recorded results are recorded again in this job's log, so the runner skips them when their
files still verify, and
the training stage resumes the copied run folder from its newest checkpoint.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from events.errors import LeaseHeld
from events.facts import StageDone
from events.fold import fold
from events.lease import FileLease
from events.store import EventStore, job_path
from events.vocabulary import Status
from stages.contract import Stage, StageContext
from stages.errors import StageFailed
from stages.inherit.copy import CopyReport, copy_job, copy_saved_lora
from stages.inherit.inputs import InheritInputs
from stages.training.run_folder import newest_lora


class Inherit(Stage):
    name = "inherit"
    status = Status.STARTING

    def __init__(self, inputs: InheritInputs) -> None:
        self.inputs = inputs

    def describe(self) -> str:
        return f"Continuing job {self.inputs.origin_id} ({self.inputs.mode})"

    def run(self, ctx: StageContext) -> dict[str, Any]:
        inputs = self.inputs
        origin = job_path(inputs.origin_root, inputs.origin_id)
        lease = FileLease(origin, worker=inputs.worker, ttl_s=inputs.lease_ttl_s)
        try:
            lease.acquire()
        except LeaseHeld as held:
            raise StageFailed(
                f"resume_from: job {inputs.origin_id} is still running (worker {held.owner!r}); "
                "cancel it or wait for it to stop, then send this request again"
            ) from None
        try:
            view = fold(EventStore.on_disk(inputs.origin_root).read(inputs.origin_id))
            report = self._copy(origin, ctx)
        finally:
            lease.release()
        adopted = [name for name in inputs.adopt if name in view.stages]
        for name in adopted:
            ctx.record(StageDone(stage=name, result=view.stages[name]))
        return {
            "from_job": inputs.origin_id,
            "from_status": view.status.value,
            "mode": inputs.mode,
            "adopted": adopted,
            **report.as_dict(),
        }

    def _copy(self, origin: Path, ctx: StageContext) -> CopyReport:
        if self.inputs.mode == "checkpoint":
            return copy_job(origin, ctx.job_dir)
        saved = newest_lora(origin / "output", self.inputs.lora_file)
        if saved is None:
            raise StageFailed(
                f"resume_from: job {self.inputs.origin_id} has no saved LoRA to start from"
            )
        return copy_saved_lora(origin, ctx.job_dir, saved)
