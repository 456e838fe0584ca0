"""The event: one immutable fact about a job, hash-chained to the one before it."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

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
    timestamp: datetime
    attempt: int = Field(ge=1)
    data: dict[str, Any] = Field(default_factory=dict)
    prev_hash: str
    hash: str

    @field_validator("timestamp")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("timestamp must carry a timezone (UTC)")
        return value.astimezone(UTC)

    def body(self) -> dict[str, Any]:
        """Everything the hash covers: every field but `hash`, JSON-ready."""
        return self.model_dump(mode="json", exclude={"hash"})

    def to_line(self) -> str:
        """The stored form: canonical body, then the hash as its last key (no newline)."""
        return _join(canonical_json(self.body()), self.hash)


def canonical_json(body: dict[str, Any]) -> str:
    """Sorted keys, no whitespace, UTF-8 kept as is: the same bytes for the same content."""
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def hash_body(canonical: str) -> str:
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _join(canonical: str, digest: str) -> str:
    return f'{canonical[:-1]},"hash":"{digest}"}}'


def line_digest_ok(line: str, digest: str) -> bool:
    """True when `line` ends with `digest` and its body hashes to it."""
    if len(line) <= _HASH_SUFFIX_LEN or not line.endswith(f'"hash":"{digest}"}}'):
        return False
    return hash_body(line[:-_HASH_SUFFIX_LEN] + "}") == digest


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
) -> Event:
    """Build an event with its hash. The only way new events are made."""
    draft = {
        "schema_version": SCHEMA_VERSION,
        "job_id": job_id,
        "seq": seq,
        "type": type,
        "status": status,
        "timestamp": timestamp or datetime.now(UTC),
        "attempt": attempt,
        "data": data,
        "prev_hash": prev_hash,
        "hash": "",
    }
    unsigned = Event.model_validate(draft)
    return unsigned.model_copy(update={"hash": hash_body(canonical_json(unsigned.body()))})


def event_from_line(line: str) -> Event:
    """Parse a stored line; raises ValueError when it is not a well-formed event."""
    return Event.model_validate_json(line)
