"""The job's statuses and the transition table, declared once as data.

The live machine (`orchestrator.machine`), the pure fold and the audit (`events.replay`) all read
this table, so a transition is legal in exactly one place.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any


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


S = Status
# The seed's order: the statuses a job walks through when nothing goes wrong.
SEED_ORDER: tuple[Status, ...] = (
    S.INITIALIZED,
    S.STARTING,
    S.DOWNLOADING,
    S.CAPTIONING,
    S.MODEL_DOWNLOAD,
    S.TRAINING,
    S.TRAINING_COMPLETE,
    S.UPLOADING,
    S.COMPLETE,
    S.ERROR,
)
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
    S.CANCELLED: "Cancelled by the client; the latest saved LoRA is still published",
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
# Stopped, and picked up again only by an explicit resume request.
HALTED: frozenset[Status] = frozenset({S.ERROR, S.CANCELLED})


@dataclass(frozen=True)
class Transition:
    """An event type that moves the job from one of `sources` to `dest`."""

    trigger: str
    sources: frozenset[Status]
    dest: Status
    explicit_only: bool = False  # needs data["explicit"] is True (resume of ERROR/CANCELLED)


def _t(trigger: Status, sources: set[Status], *, explicit_only: bool = False) -> Transition:
    return Transition(trigger.value, frozenset(sources), trigger, explicit_only)


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
    # Any new delivery picks up an interrupted job, or one whose worker died mid-stage
    # (its log ends in a working state); ERROR and CANCELLED need an explicit request.
    _t(S.RESUMED, {S.INTERRUPTED, S.INITIALIZED} | WORKING),
    _t(S.RESUMED, set(HALTED), explicit_only=True),
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
}

EVENT_TYPES: frozenset[str] = frozenset({t.trigger for t in TRANSITIONS} | {f.value for f in Fact})


def _index() -> dict[tuple[Status, str], Transition]:
    table: dict[tuple[Status, str], Transition] = {}
    for transition in TRANSITIONS:
        for source in transition.sources:
            key = (source, transition.trigger)
            if key in table:
                raise RuntimeError(f"duplicate transition {key}")  # a broken table, at import
            table[key] = transition
    return table


_BY_SOURCE = _index()


def _lookup() -> dict[tuple[Status, str], tuple[Status | None, bool]]:
    # (status, event type) -> (status after it or None for "unchanged", needs explicit)
    table: dict[tuple[Status, str], tuple[Status | None, bool]] = {
        key: (t.dest, t.explicit_only) for key, t in _BY_SOURCE.items()
    }
    for fact, states in FACT_STATES.items():
        for state in states:
            table[(state, fact.value)] = (None, False)
    return table


_LOOKUP = _lookup()


def next_status(current: Status, event_type: str, data: dict[str, Any]) -> Status | None:
    """The status after `event_type` from `current`, or None when the table forbids it."""
    found = _LOOKUP.get((current, event_type))
    if found is None:
        return None
    dest, explicit_only = found
    if explicit_only and data.get("explicit") is not True:
        return None
    return current if dest is None else dest


def allowed_events(current: Status) -> list[str]:
    """Event types the table accepts from `current` (ignoring the explicit-resume condition)."""
    triggers = {t for (source, t) in _BY_SOURCE if source == current}
    facts = {f.value for f, states in FACT_STATES.items() if current in states}
    return sorted(triggers | facts)
