"""Replay: the pure fold from a job's events to its current view."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from events.model import GENESIS_HASH, Event
from events.vocabulary import Fact, Status


@dataclass(frozen=True)
class JobView:
    """What the log says about a job right now. Built only by `fold`."""

    job_id: str | None = None
    status: Status = Status.NEW
    attempt: int = 0
    seq: int = 0
    head_hash: str = GENESIS_HASH
    created_at: datetime | None = None
    updated_at: datetime | None = None
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)  # stage -> result
    dataset_report: dict[str, Any] | None = None
    model_ready: dict[str, Any] | None = None
    progress: dict[str, Any] | None = None
    checkpoints: tuple[dict[str, Any], ...] = ()
    epochs_saved: tuple[dict[str, Any], ...] = ()
    loras_verified: tuple[dict[str, Any], ...] = ()  # LORA_VERIFIED, oldest first
    error: str | None = None
    stop_message: str | None = None  # why the last attempt stopped (INTERRUPTED, CANCELLED)
    result: dict[str, Any] | None = None
    statuses: tuple[Status, ...] = ()  # every status entered, in order

    @property
    def finished(self) -> bool:
        return self.status is Status.COMPLETE


def fold(events: Iterable[Event]) -> JobView:
    """The job's view after `events`, trusting the recorded statuses (audit checks them)."""
    job_id: str | None = None
    status, attempt, seq, head = Status.NEW, 0, 0, GENESIS_HASH
    created: datetime | None = None
    updated: datetime | None = None
    stages: dict[str, dict[str, Any]] = {}
    report = model = progress = result = None
    error: str | None = None
    stop_message: str | None = None
    checkpoints: list[dict[str, Any]] = []
    epochs: list[dict[str, Any]] = []
    verified: list[dict[str, Any]] = []
    statuses: list[Status] = []
    for event in events:
        job_id = event.job_id
        seq, head, attempt, updated = event.seq, event.hash, event.attempt, event.timestamp
        created = created or event.timestamp
        kind, data = event.type, event.data
        if kind == Fact.PROGRESS:
            progress = data
        elif kind == Fact.STAGE_DONE:
            stages[str(data.get("stage"))] = dict(data.get("result") or {})
        elif kind == Fact.CHECKPOINT:
            checkpoints.append(data)
        elif kind == Fact.EPOCH_SAVED:
            epochs.append(data)
        elif kind == Fact.LORA_VERIFIED:
            verified.append(data)
        elif kind == Fact.DATASET_REPORT:
            report = data
        elif kind == Fact.MODEL_READY:
            model = data
        else:
            status = Status(event.status)
            statuses.append(status)
            if status is Status.ERROR:
                error = str(data.get("error", "unknown error"))
            elif status is Status.RESUMED:
                error = stop_message = None
            elif status in (Status.INTERRUPTED, Status.CANCELLED) and data.get("message"):
                stop_message = str(data["message"])
            elif status is Status.COMPLETE:
                result = data
    return JobView(
        job_id=job_id,
        status=status,
        attempt=attempt,
        seq=seq,
        head_hash=head,
        created_at=created,
        updated_at=updated,
        stages=stages,
        dataset_report=report,
        model_ready=model,
        progress=progress,
        checkpoints=tuple(checkpoints),
        epochs_saved=tuple(epochs),
        loras_verified=tuple(verified),
        error=error,
        stop_message=stop_message,
        result=result,
        statuses=tuple(statuses),
    )
