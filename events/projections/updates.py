"""The pure projection of a job's events into the seed's `UPDATES/` files.

A file is `UPDATES/{NNNN}_{YYYYmmdd_HHMMSS}_{KIND}.json` holding a superset of the seed's JSON:
`status`, `timestamp`, `job_id`, `update_number`, `repo_id`, `data`, plus `seq`, `type`,
`attempt` and `hash` from the event.

Decisions (the seed's monitoring script and `dpserve watch` both rely on them):
- `update_number` counts mirrored updates, 1, 2, 3... like the seed; the event's own `seq` is
  in the file. The seed's script orders files by `sorted()` on the names, as strings, so the
  number is written to sort that way for any count: 1-9999 as the seed's four digits
  (`0001_` ... `9999_`); from 10000 on as `9999`, a letter giving the digit count (its place
  in the alphabet: `e` = 5 digits ... `z` = 26) and the digits: `9999e10000_`, `9999e99999_`,
  `9999f100000_`. A letter sorts after `_`, so every long name follows `9999_`; names of one
  letter have as many digits, so they sort by number; a later letter means more digits.
  `update_sort_key` reads both forms.
- Every event except a thinned-out PROGRESS gets its own file. `status` is the job's status
  after the event (always a seed status value, so the seed script prints `[TRAINING]` for a
  checkpoint); KIND in the name is the event type (`TRAINING`, `CHECKPOINT`, `PROGRESS`...).
- CANCELLED, which the seed does not know, is written with a status the seed's script ends on:
  `COMPLETE` when the cancelled job published its latest saved LoRA (`data.published.output`
  has a `download_url`: the file's `data` gets it as `direct_download_url`, with
  `repository_url`), else `ERROR` with an `error` that says why nothing was published. `type`
  and the name stay `CANCELLED`. INTERRUPTED keeps its own status: the seed's script goes on
  polling, rightly, as the job continues with its next delivery.
- A job that resumes (RESUMED after ERROR or CANCELLED) supersedes that terminal file: the
  RESUMED update names it in `deletes`, and the mirrors remove it from `UPDATES/` with the
  RESUMED file (the Hub mirror in the same commit), so the seed's script, which stops at the
  first ERROR or COMPLETE it meets, follows the job to its new outcome. The file stays in the
  repo's commit history and the event in the job's log on the volume.
- PROGRESS is thinned by the events' own timestamps, never the wall clock: one kept when
  `progress_interval_s` passed since the last kept one, or when the epoch changed (but not more
  than one per `progress_epoch_min_s`). Decisions depend only on the events and the state (the
  state names the terminal file a RESUMED would supersede), so replaying the log from a saved
  `ProjectionState` gives byte-identical files and the same deletes: a resend after a crash is
  a no-op.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from datetime import UTC
from typing import Any

from events.model import Event
from events.redact import Redactor
from events.vocabulary import HALTED, MEANING, PAUSED, Fact, Status

UPDATES_DIR = "UPDATES"
_FACT_MESSAGES: dict[str, str] = {
    Fact.DATASET_REPORT: "Dataset checked",
    Fact.MODEL_READY: "Base model ready",
    Fact.PROGRESS: "Training progress",
    Fact.CHECKPOINT: "Training state checkpointed",
    Fact.EPOCH_SAVED: "LoRA saved for an epoch",
    Fact.STAGE_DONE: "Stage finished",
    Fact.LORA_VERIFIED: "LoRA checked against the base model",
}
_SHORT_DIGITS = 4  # the seed's NNNN
_MAX_DIGITS = 26  # `z`


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
    halted_path: str | None = None  # the ERROR/CANCELLED file a RESUMED would supersede

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ProjectionState:
        halted = raw.get("halted_path")
        return cls(
            last_seq=int(raw.get("last_seq", 0)),
            next_number=int(raw.get("next_number", 1)),
            progress_at=_opt_float(raw.get("progress_at")),
            progress_epoch=_opt_int(raw.get("progress_epoch")),
            halted_path=str(halted) if halted else None,
        )


@dataclass(frozen=True)
class UpdateFile:
    path: str  # in the repo: UPDATES/0001_20241214_120000_INITIALIZED.json
    content: bytes
    seq: int
    kind: str  # the event type
    urgent: bool
    deletes: tuple[str, ...] = ()  # superseded files this update removes from UPDATES/


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
            return replace(state, last_seq=event.seq), None
        progress_at, progress_epoch = at, epoch
    number = state.next_number
    update = render(event, number=number, repo_id=repo_id, redactor=redactor)
    halted = state.halted_path
    if event.type == Status.RESUMED and halted is not None:
        update, halted = replace(update, deletes=(halted,)), None
    elif event.type in HALTED:
        halted = update.path
    return ProjectionState(event.seq, number + 1, progress_at, progress_epoch, halted), update


def render(
    event: Event, *, number: int, repo_id: str, redactor: Redactor | None = None
) -> UpdateFile:
    """One event as its seed-compatible file. Deterministic: same inputs, same bytes."""
    default = MEANING.get(Status(event.status), "") if event.status in Status.__members__ else ""
    if event.type != event.status:
        default = _FACT_MESSAGES.get(event.type, event.type)
    data: dict[str, Any] = {"message": default, **event.data}
    status = event.status
    if event.type == Status.CANCELLED:
        status, data = _cancelled(data)
    # Event data is redacted by the store; this second net (known token, token shapes) keeps
    # the public repo clean even if an event was written by an older or buggy writer.
    if redactor is not None:
        data = redactor.data(data)
    when = event.timestamp.astimezone(UTC)
    body = {
        "status": status,
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
    name = f"{update_prefix(number)}_{when:%Y%m%d_%H%M%S}_{_safe(event.type)}.json"
    return UpdateFile(
        path=f"{UPDATES_DIR}/{name}",
        content=text.encode("utf-8"),
        seq=event.seq,
        kind=event.type,
        urgent=event.type in PAUSED,
    )


def _cancelled(data: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """A CANCELLED event as the seed's script reads an end: COMPLETE with the published
    LoRA's URL, or ERROR saying why there is none."""
    published = data.get("published")
    output = published.get("output") if isinstance(published, dict) else None
    url = output.get("download_url") if isinstance(output, dict) else None
    if isinstance(url, str) and url:
        assert isinstance(output, dict)
        found = {"direct_download_url": url, "repository_url": output.get("repo_url")}
        return Status.COMPLETE.value, {**data, **{k: v for k, v in found.items() if v}}
    why = data.get("salvage_error") or (
        published.get("error") if isinstance(published, dict) else None
    )
    reason = (
        f"publishing the latest saved LoRA failed: {why}"
        if why
        else "training had saved no LoRA yet"
    )
    stopped = str(data.get("message") or "cancelled")
    error = f"Job cancelled ({stopped}); no LoRA was published: {reason}"
    return Status.ERROR.value, {**data, "error": data.get("error") or error}


def update_prefix(number: int) -> str:
    """The number as it starts a file name, sorting as a string in number order (see above)."""
    if number < 0:
        raise ValueError(f"update_number must not be negative, got {number}")
    digits = str(number)
    if len(digits) <= _SHORT_DIGITS:
        return digits.zfill(_SHORT_DIGITS)
    if len(digits) > _MAX_DIGITS:
        raise ValueError(f"update_number {number} has more than {_MAX_DIGITS} digits")
    return f"9999{chr(ord('a') + len(digits) - 1)}{digits}"


def update_number_of(name: str) -> int | None:
    """The update number a file name starts with (either form), or None for another name."""
    head = name.rsplit("/", 1)[-1].split("_", 1)[0]
    if head.isdigit():
        return int(head)
    if len(head) > 5 and head[:4] == "9999" and "a" <= head[4] <= "z" and head[5:].isdigit():
        digits = head[5:]
        if len(digits) == ord(head[4]) - ord("a") + 1:
            return int(digits)
    return None


def update_sort_key(path: str) -> tuple[int, str]:
    """Order update files by their number (both forms), then by name."""
    name = path.rsplit("/", 1)[-1]
    number = update_number_of(name)
    return (0 if number is None else number, name)


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
