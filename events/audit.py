"""The audit of a job's log: seq, hashes, the chain and every transition, and its timeline.

Transitions are checked by walking the log through `events.table` (the same interpreter the
live machine uses), so the audit and the machine cannot disagree about the table.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from events.errors import IllegalTransition
from events.fold import JobView, fold
from events.model import GENESIS_HASH, Event, canonical_json, hash_body
from events.table import TableWalk
from events.vocabulary import Status


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
    prev_hash, attempt = GENESIS_HASH, 1
    walk = TableWalk(Status.NEW)
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
        before = walk.status
        try:
            expected = walk.apply(event.type, event.data)
        except IllegalTransition:
            problems.append(f"{where}: {event.type} is not allowed from {before.value}")
            walk.jump(_status_or(event.status, before))
        else:
            if expected.value != event.status:
                problems.append(
                    f"{where}: {event.type} leads to {expected.value}, log says {event.status}"
                )
        prev_hash, attempt = event.hash, max(attempt, event.attempt)
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
