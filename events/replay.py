"""Replay: the pure fold from events to a job's view, and the audit of a log."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from events.model import GENESIS_HASH, Event, canonical_json, hash_body
from orchestrator.states import Fact, Status, next_status


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
    error: str | None = None
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
    checkpoints: list[dict[str, Any]] = []
    epochs: list[dict[str, Any]] = []
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
                error = None
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
        error=error,
        result=result,
        statuses=tuple(statuses),
    )


@dataclass(frozen=True)
class TimelineRow:
    seq: int
    timestamp: datetime
    attempt: int
    type: str
    status: str
    summary: str


@dataclass(frozen=True)
class AuditReport:
    timeline: list[TimelineRow]
    problems: list[str]
    view: JobView

    @property
    def ok(self) -> bool:
        return not self.problems

    def render(self) -> str:
        """The timeline as plain text, then the verdict."""
        lines = [
            f"{r.seq:>5}  {r.timestamp:%Y-%m-%d %H:%M:%S}  #{r.attempt}  "
            f"{r.type:<17} {r.status:<17} {r.summary}".rstrip()
            for r in self.timeline
        ]
        verdict = "OK: seq, hash chain and transitions verify" if self.ok else "PROBLEMS:"
        return "\n".join([*lines, verdict, *(f"  - {p}" for p in self.problems)])


def audit(events: Sequence[Event]) -> AuditReport:
    """Check seq (1, 2, 3, ...), each hash, the chain and every transition against the table."""
    problems: list[str] = []
    prev_hash, status, attempt = GENESIS_HASH, Status.NEW, 1
    job_ids = {e.job_id for e in events}
    if len(job_ids) > 1:
        problems.append(f"events of several jobs in one log: {sorted(job_ids)}")
    for index, event in enumerate(events, start=1):
        where = f"seq {event.seq}"
        if event.seq != index:
            problems.append(f"{where}: expected seq {index}")
        if hash_body(canonical_json(event.body())) != event.hash:
            problems.append(f"{where}: hash does not match the event's content")
        if event.prev_hash != prev_hash:
            problems.append(f"{where}: prev_hash does not match the previous event's hash")
        if event.attempt < attempt:
            problems.append(f"{where}: attempt went back from {attempt} to {event.attempt}")
        expected = next_status(status, event.type, event.data)
        if expected is None:
            problems.append(f"{where}: {event.type} is not allowed from {status.value}")
        elif expected.value != event.status:
            problems.append(
                f"{where}: {event.type} leads to {expected.value}, log says {event.status}"
            )
        prev_hash, attempt = event.hash, max(attempt, event.attempt)
        status = expected if expected is not None else _status_or(event.status, status)
    timeline = [
        TimelineRow(e.seq, e.timestamp, e.attempt, e.type, e.status, summarize(e)) for e in events
    ]
    return AuditReport(timeline, problems, fold(events))


def _status_or(value: str, fallback: Status) -> Status:
    try:
        return Status(value)
    except ValueError:
        return fallback


_SUMMARY_KEYS = ("message", "error", "stage", "step", "epoch", "loss", "path", "percent")


def summarize(event: Event) -> str:
    """One short line about an event's data, for timelines."""
    data = event.data
    parts = []
    for key in _SUMMARY_KEYS:
        if key in data and data[key] not in (None, ""):
            value = data[key]
            parts.append(str(value) if key in ("message", "error") else f"{key}={value}")
    if not parts and data:
        parts = [f"{k}={v}" for k, v in list(data.items())[:4]]
    text = "  ".join(parts)
    return text if len(text) <= 120 else text[:117] + "..."
