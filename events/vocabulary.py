"""The job's vocabulary: its statuses, the facts it records, and the transition table, as data.

This is the lowest layer's domain: the live machine (`orchestrator.machine`), `JobMachine.can`
and the audit (`events.audit`) all ask the table through one interpreter, `events.table`, so a
transition is legal in exactly one place. Each fact's payload is typed in `events.facts`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Status(StrEnum):
    NEW = "NEW"  # no event yet; never written to the log
    INITIALIZED = "INITIALIZED"
    STARTING = "STARTING"
    DOWNLOADING = "DOWNLOADING"
    CAPTIONING = "CAPTIONING"
    MODEL_DOWNLOAD = "MODEL_DOWNLOAD"
    TRAINING = "TRAINING"
    TRAINING_COMPLETE = "TRAINING_COMPLETE"
    UPLOADING = "UPLOADING"
    COMPLETE = "COMPLETE"
    ERROR = "ERROR"
    INTERRUPTED = "INTERRUPTED"
    CANCELLED = "CANCELLED"
    RESUMED = "RESUMED"


class Fact(StrEnum):
    """Events that record something without moving the state."""

    DATASET_REPORT = "DATASET_REPORT"
    MODEL_READY = "MODEL_READY"
    PROGRESS = "PROGRESS"
    CHECKPOINT = "CHECKPOINT"
    EPOCH_SAVED = "EPOCH_SAVED"
    STAGE_DONE = "STAGE_DONE"  # a runner stage finished; data carries its result
    LORA_VERIFIED = "LORA_VERIFIED"  # a saved LoRA fits its base model; checked before publishing


S = Status
# The seed README's words for each status (its "Status Values" table), plus ours.
MEANING: dict[Status, str] = {
    S.INITIALIZED: "Repository created, job starting",
    S.STARTING: "Validating input, preparing",
    S.DOWNLOADING: "Downloading dataset",
    S.CAPTIONING: "Running auto-captioning",
    S.MODEL_DOWNLOAD: "Downloading base model",
    S.TRAINING: "Training in progress",
    S.TRAINING_COMPLETE: "Training finished",
    S.UPLOADING: "Uploading results",
    S.COMPLETE: "All done",
    S.ERROR: "Something failed",
    S.INTERRUPTED: "Worker stopping; checkpoint kept, the job resumes on its next delivery",
    S.CANCELLED: (
        "Stopped by RunPod (cancel or execution timeout); the latest saved LoRA is still published"
    ),
    S.RESUMED: "Picked up again by a new attempt",
}
WORKING: frozenset[Status] = frozenset(
    {
        S.STARTING,
        S.DOWNLOADING,
        S.CAPTIONING,
        S.MODEL_DOWNLOAD,
        S.TRAINING,
        S.TRAINING_COMPLETE,
        S.UPLOADING,
        S.RESUMED,
    }
)
FINAL: frozenset[Status] = frozenset({S.COMPLETE})
# Stopped: nothing moves until the job is delivered again (POST /retry), which resumes it.
HALTED: frozenset[Status] = frozenset({S.ERROR, S.CANCELLED})
# The job will not move again by itself: a watcher can stop following it.
ENDED: frozenset[Status] = FINAL | HALTED
# Nothing new is expected soon after these: mirrors flush them at once, not on their interval.
PAUSED: frozenset[Status] = ENDED | {S.INTERRUPTED}


@dataclass(frozen=True)
class Transition:
    """An event type that moves the job from one of `sources` to `dest`."""

    trigger: str
    sources: frozenset[Status]
    dest: Status


def _t(trigger: Status, sources: set[Status]) -> Transition:
    return Transition(trigger.value, frozenset(sources), trigger)


TRANSITIONS: tuple[Transition, ...] = (
    _t(S.INITIALIZED, {S.NEW}),
    _t(S.STARTING, {S.INITIALIZED, S.RESUMED}),
    _t(S.DOWNLOADING, {S.STARTING, S.RESUMED}),
    _t(S.CAPTIONING, {S.DOWNLOADING, S.RESUMED}),
    _t(S.MODEL_DOWNLOAD, {S.DOWNLOADING, S.CAPTIONING, S.RESUMED}),
    _t(S.TRAINING, {S.MODEL_DOWNLOAD, S.RESUMED}),
    _t(S.TRAINING_COMPLETE, {S.TRAINING}),
    # From TRAINING too: a cancelled job still publishes its latest saved LoRA.
    _t(S.UPLOADING, {S.TRAINING_COMPLETE, S.TRAINING, S.RESUMED}),
    _t(S.COMPLETE, {S.UPLOADING}),
    _t(S.ERROR, {S.NEW, S.INITIALIZED} | WORKING),
    _t(S.INTERRUPTED, {S.INITIALIZED} | WORKING),
    _t(S.CANCELLED, {S.INITIALIZED, S.INTERRUPTED} | WORKING),
    # Every new delivery of a job that is not COMPLETE resumes it: an interrupted or halted
    # one (on RunPod only `POST /retry` delivers those again: the user asking), or one whose
    # worker died mid-stage (its log ends in a working state).
    _t(S.RESUMED, {S.INTERRUPTED, S.INITIALIZED} | WORKING | HALTED),
)

_PROGRESSING = frozenset(WORKING | {S.INITIALIZED})
FACT_STATES: dict[Fact, frozenset[Status]] = {
    Fact.DATASET_REPORT: frozenset({S.DOWNLOADING, S.CAPTIONING}),
    # The base model downloads in the background from STARTING on.
    Fact.MODEL_READY: frozenset(
        {S.STARTING, S.DOWNLOADING, S.CAPTIONING, S.MODEL_DOWNLOAD, S.RESUMED}
    ),
    Fact.PROGRESS: _PROGRESSING,
    Fact.CHECKPOINT: frozenset({S.TRAINING}),
    Fact.EPOCH_SAVED: frozenset({S.TRAINING}),
    Fact.STAGE_DONE: _PROGRESSING,
    Fact.LORA_VERIFIED: frozenset({S.UPLOADING}),
}

EVENT_TYPES: frozenset[str] = frozenset({t.trigger for t in TRANSITIONS} | {f.value for f in Fact})
