"""What each fact carries: one typed payload model beside each fact's name.

A stage records a fact by building its payload (`Checkpoint(tag=..., step=...)`, validated
strictly when it is built) and handing it to `StageContext.record`; it is stored as the event's
`data`, exactly the keys that were given (`exclude_unset`). Reading is lenient: `payload_of`
gives any stored fact back as its model without validating it again, unknown keys included
(`extra="allow"`), so a log an older writer recorded reads as it was written.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from events.model import Event
from events.vocabulary import Fact

# Numbers stay the type they were given: a step counted as 3 is not stored as 3.0.
Number = int | float


class FactData(BaseModel):
    """Base of the payloads; `fact` names the event type it is recorded as."""

    model_config = ConfigDict(extra="allow", frozen=True, strict=True)
    fact: ClassVar[Fact]

    def data(self) -> dict[str, Any]:
        """The event's `data`: the given keys only, JSON-ready. (No serializer warnings: a
        payload read back from an older log holds its values as that writer stored them.)"""
        return self.model_dump(mode="json", exclude_unset=True, warnings=False)


class DatasetReport(FactData):
    """The pre-flight dataset report (`stages.dataset.report.DatasetReport.to_event`)."""

    fact = Fact.DATASET_REPORT
    model_type: str
    dataset_type: str
    images: int
    videos: int
    usable_images: int
    usable_videos: int
    video_clips: int | None = None
    captions: dict[str, int] | None = None  # found, missing, empty, not_utf8, with_trigger
    skipped_no_caption: int | None = None
    problems: dict[str, dict[str, Any]] | None = None  # key -> count, examples, severity
    global_batch: int | None = None
    epochs: int | None = None
    steps_per_epoch: int | None = None
    total_steps: int | None = None
    notes: list[str] | None = None
    fatal: list[str] | None = None  # problems that stop the job before any download


class ModelReady(FactData):
    """The base model's files are in place under the models root."""

    fact = Fact.MODEL_READY
    model_type: str
    path: str
    bytes: int
    source: str  # reused | cache | downloaded | built


class Progress(FactData):
    """A progress sample of the current stage; every key is optional."""

    fact = Fact.PROGRESS
    stage: str | None = None
    message: str | None = None
    percent: Number | None = None
    # training
    step: int | None = None
    total_steps: int | None = None
    epoch: int | None = None
    epochs: int | None = None
    loss: Number | None = None
    iter_time_s: Number | None = None
    eta_seconds: Number | None = None
    resume_from: str | None = None
    # downloads and file work
    bytes_done: int | None = None
    bytes_total: int | None = None
    files_done: int | None = None
    files_total: int | None = None
    done: int | None = None
    total: int | None = None
    media: str | None = None
    clips: int | None = None
    model_type: str | None = None


class Checkpoint(FactData):
    """diffusion-pipe's training state is complete on disk (`<run>/global_stepN`, `latest`)."""

    fact = Fact.CHECKPOINT
    tag: str  # global_stepN
    step: int


class EpochSaved(FactData):
    """A LoRA save is complete on disk (`<run>/epochN/` or `stepN/`)."""

    fact = Fact.EPOCH_SAVED
    name: str  # epochN or stepN
    step: int
    epoch: int | None = None


class LoraVerified(FactData):
    """A saved LoRA fits its base model (`stages.verify.check`): every key maps to a base module
    with a fitting shape, at the rank and dtype asked for, with no NaN or Inf."""

    fact = Fact.LORA_VERIFIED
    file: str  # its path at the destination
    tensors: int
    modules: int
    rank: int
    dtype: str
    base_modules: int  # modules of the base model it was checked against
    base_files: int
    seconds: Number


class StageDone(FactData):
    """A stage finished; `result` is what later stages and deliveries read."""

    fact = Fact.STAGE_DONE
    stage: str
    result: dict[str, Any]


PAYLOADS: Mapping[Fact, type[FactData]] = {
    model.fact: model
    for model in (
        DatasetReport,
        ModelReady,
        Progress,
        Checkpoint,
        EpochSaved,
        LoraVerified,
        StageDone,
    )
}


def payload_of(event: Event) -> FactData | None:
    """The typed payload of a stored fact, as it was written (not validated again: an older
    writer's fields stay what they were); None for a status change."""
    model = PAYLOADS.get(Fact(event.type)) if event.type in Fact.__members__ else None
    return model.model_construct(**event.data) if model is not None else None
