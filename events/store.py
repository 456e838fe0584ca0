"""Event stores: where a job's log lives, and the one append path that every event takes.

`EventLog` is a job's log: it assigns seq and prev_hash, redacts data, checks the writer's
lease, and hands the finished line to a backend. A backend only stores and loads lines:
`JsonlBackend` on disk (fsync before an append returns), `MemoryBackend` in memory. Both obey
one contract, run by `tests/test_store_contract.py`.
"""

from __future__ import annotations

import gc
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import structlog
from pydantic import ValidationError

from events.atomic import fsync_dir
from events.errors import CorruptLog
from events.model import GENESIS_HASH, Event, event_from_line, line_digest_ok, make_event
from events.redact import Redactor

EVENTS_FILE = "events.jsonl"
_log = structlog.get_logger(__name__)


class Fence(Protocol):
    """The writer's right to append (a lease); `check` raises when it was lost."""

    def check(self) -> None: ...


@dataclass(frozen=True)
class LoadedLog:
    events: list[Event]
    torn_tail: bool  # the last line was cut short (a crash mid-write) and was dropped


def parse_blob(blob: bytes, where: str) -> LoadedLog:
    """Parse a whole log, verifying each line's hash and the seq/hash chain.

    Lines end with "\n" (only; JSON escapes it inside strings). Bytes after the last "\n" are
    a torn write (a crash mid-append) and are dropped. Any bad complete line is corruption,
    reported with its 1-based line number: never skipped.
    """
    # Building many objects that all stay alive only feeds the cyclic GC work it cannot use.
    paused = gc.isenabled()
    gc.disable()
    try:
        return _parse(blob, where)
    finally:
        if paused:
            gc.enable()


def _parse(blob: bytes, where: str) -> LoadedLog:
    end = blob.rfind(b"\n") + 1
    tail = blob[end:]
    lines = blob[:end].split(b"\n")
    lines.pop()  # the empty piece after the last newline
    events: list[Event] = []
    prev_hash = GENESIS_HASH
    # Bytes all the way: pydantic parses UTF-8 bytes, and the hash is over the line's bytes.
    for index, line in enumerate(lines):
        try:
            event = event_from_line(line)
        except (ValidationError, ValueError) as exc:
            why = "not UTF-8" if _not_utf8(line) else f"not a valid event ({_first_error(exc)})"
            raise CorruptLog(where, index + 1, why) from None
        if not line_digest_ok(line, event.hash):
            raise CorruptLog(where, index + 1, "hash does not match the line's content")
        if event.seq != len(events) + 1:
            raise CorruptLog(where, index + 1, f"seq {event.seq}, expected {len(events) + 1}")
        if event.prev_hash != prev_hash:
            raise CorruptLog(where, index + 1, "prev_hash does not match the previous event")
        events.append(event)
        prev_hash = event.hash
    return LoadedLog(events, torn_tail=bool(tail))


def _not_utf8(line: bytes) -> bool:
    try:
        line.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


def _first_error(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"]) or "line"
        return f"{loc}: {err['msg']}"
    return str(exc).splitlines()[0]


class Backend(Protocol):
    def load(self, job_id: str) -> LoadedLog: ...
    def write(self, job_id: str, line: str, *, truncate_to: int | None) -> None: ...
    def job_ids(self) -> list[str]: ...


class EventLog:
    """One job's log. Not shared between processes: the lease keeps one writer per job."""

    def __init__(
        self,
        backend: Backend,
        job_id: str,
        *,
        secrets: Iterable[str] = (),
        fence: Fence | None = None,
    ) -> None:
        self._backend = backend
        self.job_id = job_id
        self.redactor = Redactor(secrets)
        self.fence = fence
        self._lock = threading.Lock()
        loaded = backend.load(job_id)
        self._events = loaded.events
        # A torn tail is cut off before the next append so the file stays one event per line.
        self._pending_truncate = loaded.torn_tail
        # Called with each event once it is durable, in seq order (under the append lock), so
        # projections (the UPDATES mirror) follow the log. They must be quick and must not raise.
        self.observers: list[Callable[[Event], None]] = []

    @property
    def events(self) -> list[Event]:
        with self._lock:
            return list(self._events)

    @property
    def head(self) -> Event | None:
        with self._lock:
            return self._events[-1] if self._events else None

    def __iter__(self) -> Iterator[Event]:
        return iter(self.events)

    def __len__(self) -> int:
        with self._lock:
            return len(self._events)

    def append(self, *, type: str, status: str, attempt: int, data: dict[str, Any]) -> Event:
        """Redact, chain, check the lease, store durably; the event counts once this returns."""
        with self._lock:
            if self.fence is not None:
                self.fence.check()
            prev = self._events[-1] if self._events else None
            event, line = make_event(
                job_id=self.job_id,
                seq=(prev.seq + 1) if prev else 1,
                type=type,
                status=status,
                attempt=attempt,
                data=self.redactor.data(data),
                prev_hash=prev.hash if prev else GENESIS_HASH,
            )
            self._backend.write(
                self.job_id,
                line + "\n",
                truncate_to=len(self._events) if self._pending_truncate else None,
            )
            self._pending_truncate = False
            self._events.append(event)
            for observer in self.observers:
                try:
                    observer(event)
                except Exception:  # the event is durable; a projection's bug must not undo it
                    _log.exception("event observer failed", job_id=self.job_id, seq=event.seq)
            return event


class MemoryBackend:
    """Lines kept in a dict: the same contract as the file, for tests and dry runs."""

    def __init__(self) -> None:
        self._lines: dict[str, list[str]] = {}
        self._lock = threading.Lock()

    def load(self, job_id: str) -> LoadedLog:
        with self._lock:
            blob = "".join(self._lines.get(job_id, [])).encode("utf-8")
        return parse_blob(blob, f"memory:{job_id}")

    def write(self, job_id: str, line: str, *, truncate_to: int | None) -> None:
        with self._lock:
            lines = self._lines.setdefault(job_id, [])
            if truncate_to is not None:
                del lines[truncate_to:]
            lines.append(line)

    def job_ids(self) -> list[str]:
        with self._lock:
            return sorted(self._lines)

    def raw_lines(self, job_id: str) -> list[str]:
        """What is stored (tests use it to damage a log on purpose)."""
        with self._lock:
            return self._lines.setdefault(job_id, [])


class JsonlBackend:
    """`<root>/jobs/<job_id>/events.jsonl`, appended with O_APPEND and fsynced per event."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._fds: dict[str, int] = {}  # job -> O_APPEND handle, opened on first write

    def path(self, job_id: str) -> Path:
        return job_path(self.root, job_id) / EVENTS_FILE

    def load(self, job_id: str) -> LoadedLog:
        path = self.path(job_id)
        try:
            blob = path.read_bytes()
        except FileNotFoundError:
            return LoadedLog([], torn_tail=False)
        return parse_blob(blob, str(path))

    def write(self, job_id: str, line: str, *, truncate_to: int | None) -> None:
        fd = self._fds.get(job_id)
        if fd is None or truncate_to is not None:
            fd = self._open(job_id, truncate_to)
        data = line.encode("utf-8")
        written = os.write(fd, data)
        while written < len(data):  # short writes are legal; finish the line
            written += os.write(fd, data[written:])
        # Not retried on error: after a failed fsync the kernel may have dropped the pages.
        os.fsync(fd)

    def _open(self, job_id: str, truncate_to: int | None) -> int:
        self.close(job_id)
        path = self.path(job_id)
        created = not path.exists()
        if created:
            path.parent.mkdir(parents=True, exist_ok=True)
        if truncate_to is not None:
            _truncate_after_lines(path, truncate_to)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        if created:
            fsync_dir(path.parent)
        self._fds[job_id] = fd
        return fd

    def close(self, job_id: str | None = None) -> None:
        """Close the open append handle of one job (or all)."""
        for key in [job_id] if job_id is not None else list(self._fds):
            fd = self._fds.pop(key, None) if key is not None else None
            if fd is not None:
                os.close(fd)

    def __del__(self) -> None:
        self.close()

    def job_ids(self) -> list[str]:
        jobs = self.root / "jobs"
        if not jobs.is_dir():
            return []
        return sorted(p.name for p in jobs.iterdir() if (p / EVENTS_FILE).exists())


def _truncate_after_lines(path: Path, keep: int) -> None:
    with path.open("rb") as fh:
        offset = 0
        for _ in range(keep):
            line = fh.readline()
            offset += len(line)
    with path.open("r+b") as fh:
        fh.truncate(offset)
        os.fsync(fh.fileno())


_SAFE_ID = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


def validate_job_id(job_id: str) -> str:
    """Job ids become folder names: refuse anything that could leave `<root>/jobs/`."""
    if not job_id or len(job_id) > 128 or job_id in {".", ".."} or not set(job_id) <= _SAFE_ID:
        raise ValueError(
            f"job id {job_id!r} is not usable: use 1-128 letters, digits, '-', '_' or '.'"
        )
    return job_id


def job_path(root: Path, job_id: str) -> Path:
    return Path(root) / "jobs" / validate_job_id(job_id)


class EventStore:
    """Opens job logs on a backend: `EventStore.on_disk(root)` or `EventStore.in_memory()`."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    @classmethod
    def on_disk(cls, root: Path) -> EventStore:
        return cls(JsonlBackend(root))

    @classmethod
    def in_memory(cls) -> EventStore:
        return cls(MemoryBackend())

    def open(
        self, job_id: str, *, secrets: Iterable[str] = (), fence: Fence | None = None
    ) -> EventLog:
        return EventLog(self.backend, validate_job_id(job_id), secrets=secrets, fence=fence)

    def read(self, job_id: str) -> list[Event]:
        return self.backend.load(validate_job_id(job_id)).events

    def job_ids(self) -> list[str]:
        return self.backend.job_ids()
