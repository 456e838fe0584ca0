"""The pure projection of a job's events into the seed's `UPDATES/` files.

A file is `UPDATES/{NNNN}_{YYYYmmdd_HHMMSS}_{KIND}.json` holding a superset of the seed's JSON:
`status`, `timestamp`, `job_id`, `update_number`, `repo_id`, `data`, plus `seq`, `type`,
`attempt` and `hash` from the event.

Decisions (the seed's monitoring script and `dpserve watch` both rely on them):
- `update_number` (NNNN) counts mirrored updates, 1, 2, 3... like the seed, so names stay four
  digits and sort in order for a very long job; the event's own `seq` is in the file.
- Every event except a thinned-out PROGRESS gets its own file. `status` is the job's status
  after the event (always a seed status value, so the seed script prints `[TRAINING]` for a
  checkpoint); KIND in the name is the event type (`TRAINING`, `CHECKPOINT`, `PROGRESS`...).
- PROGRESS is thinned by the events' own timestamps, never the wall clock: one kept when
  `progress_interval_s` passed since the last kept one, or when the epoch changed (but not more
  than one per `progress_epoch_min_s`). Decisions depend only on the events and the state, so
  replaying the log from a saved `ProjectionState` gives byte-identical files: a resend after a
  crash is a no-op commit.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import UTC
from typing import Any

from events.model import Event
from events.redact import Redactor
from events.vocabulary import MEANING, PAUSED, Fact, Status

UPDATES_DIR = "UPDATES"
_FACT_MESSAGES: dict[str, str] = {
    Fact.DATASET_REPORT: "Dataset checked",
    Fact.MODEL_READY: "Base model ready",
    Fact.PROGRESS: "Training progress",
    Fact.CHECKPOINT: "Training state checkpointed",
    Fact.EPOCH_SAVED: "LoRA saved for an epoch",
    Fact.STAGE_DONE: "Stage finished",
}


@dataclass(frozen=True)
class Thinning:
    progress_interval_s: float = 300.0  # at most one PROGRESS file per this many seconds...
    progress_epoch_min_s: float = 60.0  # ...plus one per new epoch, at most one per minute


@dataclass(frozen=True)
class ProjectionState:
    """Where the projection stands after some prefix of the log (persisted with the cursor)."""

    last_seq: int = 0  # the last event seen (mirrored or thinned out)
    next_number: int = 1  # the update number the next file gets
    progress_at: float | None = None  # epoch seconds of the last kept PROGRESS
    progress_epoch: int | None = None  # its epoch

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ProjectionState:
        return cls(
            last_seq=int(raw.get("last_seq", 0)),
            next_number=int(raw.get("next_number", 1)),
            progress_at=_opt_float(raw.get("progress_at")),
            progress_epoch=_opt_int(raw.get("progress_epoch")),
        )


@dataclass(frozen=True)
class UpdateFile:
    path: str  # in the repo: UPDATES/0001_20241214_120000_INITIALIZED.json
    content: bytes
    seq: int
    kind: str  # the event type
    urgent: bool


def project(
    state: ProjectionState,
    event: Event,
    *,
    repo_id: str,
    thinning: Thinning = Thinning(),
    redactor: Redactor | None = None,
) -> tuple[ProjectionState, UpdateFile | None]:
    """The next state, and the file for `event` (None when it is thinned out or already seen)."""
    if event.seq <= state.last_seq:
        return state, None
    at = event.timestamp.timestamp()
    progress_at, progress_epoch = state.progress_at, state.progress_epoch
    if event.type == Fact.PROGRESS:
        epoch = _opt_int(event.data.get("epoch"))
        since = None if progress_at is None else at - progress_at
        keep = (
            since is None
            or since >= thinning.progress_interval_s
            or (
                epoch is not None
                and epoch != progress_epoch
                and since >= thinning.progress_epoch_min_s
            )
        )
        if not keep:
            return ProjectionState(event.seq, state.next_number, progress_at, progress_epoch), None
        progress_at, progress_epoch = at, epoch
    number = state.next_number
    update = render(event, number=number, repo_id=repo_id, redactor=redactor)
    return ProjectionState(event.seq, number + 1, progress_at, progress_epoch), update


def render(
    event: Event, *, number: int, repo_id: str, redactor: Redactor | None = None
) -> UpdateFile:
    """One event as its seed-compatible file. Deterministic: same inputs, same bytes."""
    default = MEANING.get(Status(event.status), "") if event.status in Status.__members__ else ""
    if event.type != event.status:
        default = _FACT_MESSAGES.get(event.type, event.type)
    data: dict[str, Any] = {"message": default, **event.data}
    # Event data is redacted by the store; this second net (known token, token shapes) keeps
    # the public repo clean even if an event was written by an older or buggy writer.
    if redactor is not None:
        data = redactor.data(data)
    when = event.timestamp.astimezone(UTC)
    body = {
        "status": event.status,
        "timestamp": when.isoformat(timespec="microseconds"),
        "job_id": event.job_id,
        "update_number": number,
        "repo_id": repo_id,
        "data": data,
        "type": event.type,
        "seq": event.seq,
        "attempt": event.attempt,
        "hash": event.hash,
    }
    text = json.dumps(body, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    name = f"{number:04d}_{when:%Y%m%d_%H%M%S}_{_safe(event.type)}.json"
    return UpdateFile(
        path=f"{UPDATES_DIR}/{name}",
        content=text.encode("utf-8"),
        seq=event.seq,
        kind=event.type,
        urgent=event.type in PAUSED,
    )


def update_sort_key(path: str) -> tuple[int, str]:
    """Order update files by their number (robust past 9999), then by name."""
    name = path.rsplit("/", 1)[-1]
    head = name.split("_", 1)[0]
    return (int(head) if head.isdigit() else 0, name)


def _safe(kind: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in kind) or "EVENT"


def _opt_int(value: Any) -> int | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)
