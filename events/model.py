"""The event: one immutable fact about a job, hash-chained to the one before it."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

SCHEMA_VERSION = 1
GENESIS_HASH = "0" * 64
# The stored line is the canonical body with the hash appended as its last key, so a reader can
# verify a line by hashing its own bytes instead of re-serialising the parsed event.
_HASH_SUFFIX_LEN = len(',"hash":""}') + 64


class Event(BaseModel):
    """One line of a job's log. `status` is the job's state *after* this event."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: int = SCHEMA_VERSION
    job_id: str
    seq: int = Field(ge=1)
    type: str
    status: str
    timestamp: AwareDatetime  # checked in pydantic's core: a Python validator costs per line
    attempt: int = Field(ge=1)
    data: dict[str, Any] = Field(default_factory=dict)
    prev_hash: str
    hash: str

    def body(self) -> dict[str, Any]:
        """Everything the hash covers: every field but `hash`, JSON-ready."""
        return _body(
            self.schema_version,
            self.job_id,
            self.seq,
            self.type,
            self.status,
            self.timestamp,
            self.attempt,
            self.data,
            self.prev_hash,
        )

    def to_line(self) -> str:
        """The stored form: canonical body, then the hash as its last key (no newline)."""
        return _join(canonical_json(self.body()), self.hash)

    def as_stored(self) -> dict[str, Any]:
        """The event as stored, as a dict (what `--json` and the mirrors show)."""
        return {**self.body(), "hash": self.hash}


def canonical_json(body: dict[str, Any]) -> str:
    """Sorted keys, no whitespace, UTF-8 kept as is: the same bytes for the same content."""
    return _CANONICAL(body)


# One encoder for every event: json.dumps with options builds a new one per call.
_CANONICAL = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
).encode


def hash_body(canonical: str) -> str:
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _join(canonical: str, digest: str) -> str:
    return f'{canonical[:-1]},"hash":"{digest}"}}'


_SHA256 = hashlib.sha256


def line_digest_ok(line: bytes | str, digest: str) -> bool:
    """True when `line` ends with `"hash":"<digest>"}` and its body hashes to `digest`.

    The hash sits at a fixed offset from the end, so this slices instead of searching: it runs
    once per line on every replay.
    """
    raw = line.encode("utf-8") if isinstance(line, str) else line
    if raw[-_HASH_SUFFIX_LEN:-66] != b',"hash":"' or raw[-2:] != b'"}':
        return False
    if raw[-66:-2] != digest.encode("ascii", "replace"):
        return False
    return _SHA256(raw[:-_HASH_SUFFIX_LEN] + b"}").hexdigest() == digest


def format_timestamp(value: datetime) -> str:
    """Always microseconds and "Z", so the stored text of a time never varies."""
    text = value.astimezone(UTC).isoformat(timespec="microseconds")  # faster than strftime
    return text[:-6] + "Z"  # "+00:00"


def _body(  # noqa: PLR0917 - the event's fields, in one hot call
    schema_version: int,
    job_id: str,
    seq: int,
    type: str,
    status: str,
    timestamp: datetime,
    attempt: int,
    data: dict[str, Any],
    prev_hash: str,
) -> dict[str, Any]:
    return {
        "attempt": attempt,
        "data": data,
        "job_id": job_id,
        "prev_hash": prev_hash,
        "schema_version": schema_version,
        "seq": seq,
        "status": status,
        "timestamp": format_timestamp(timestamp),
        "type": type,
    }


def make_event(
    *,
    job_id: str,
    seq: int,
    type: str,
    status: str,
    attempt: int,
    data: dict[str, Any],
    prev_hash: str,
    timestamp: datetime | None = None,
) -> tuple[Event, str]:
    """Build an event and its stored line. The only way new events are made.

    `data` must be JSON: anything else is refused here, before it can reach the log.
    """
    when = (timestamp or datetime.now(UTC)).astimezone(UTC)
    if seq < 1 or attempt < 1:
        raise ValueError(f"seq and attempt start at 1 (got seq {seq}, attempt {attempt})")
    body = _body(SCHEMA_VERSION, job_id, seq, type, status, when, attempt, data, prev_hash)
    try:
        canonical = canonical_json(body)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"event data for {type} is not JSON: {exc}") from None
    digest = hash_body(canonical)
    # No second validation: every field was just built from checked parts, and `data` is
    # plain JSON (the redactor copies it into dicts, lists and scalars).
    event = Event.model_construct(
        schema_version=SCHEMA_VERSION,
        job_id=job_id,
        seq=seq,
        type=type,
        status=status,
        timestamp=when,
        attempt=attempt,
        data=data,
        prev_hash=prev_hash,
        hash=digest,
    )
    return event, _join(canonical, digest)


def event_from_line(line: bytes | str) -> Event:
    """Parse a stored line; raises ValueError when it is not a well-formed event."""
    return _VALIDATE_JSON(line)  # type: ignore[no-any-return]


_VALIDATE_JSON = Event.__pydantic_validator__.validate_json
