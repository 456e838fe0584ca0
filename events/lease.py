"""One writer per job: a lease with an owner, a fencing token and an expiry.

Each fencing token has its own record, `lease/<token>.json`, created atomically with link(2):
creating the record for token N+1 is the compare-and-swap that takes a lease over, so two
workers can never both hold the same token. Only the holder rewrites its record (to renew it).
The live lease is the highest token; a writer whose token is not the highest is stale, and its
appends are refused. Plain files only: locks on a network volume (MooseFS, NFS) can vanish.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from events.atomic import fsync_dir, write_atomic, write_new
from events.errors import LeaseHeld, StaleLease

DEFAULT_TTL_S = 60.0
SKEW_MARGIN_S = 2.0  # the clock difference between workers a lease tolerates
_NAME = "{:010d}.json"


@dataclass(frozen=True)
class LeaseRecord:
    owner: str
    token: int
    expires_at: float  # unix time

    def live(self, now: float) -> bool:
        return now < self.expires_at


def default_owner(worker: str | None = None) -> str:
    """`<worker>:<pid>:<random>`: the worker (RunPod pod id, or this host), then this process."""
    return f"{worker or socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class FileLease:
    """A lease on one job folder. Use `acquire()`, then `check()` before each write."""

    def __init__(
        self,
        job_dir: Path,
        *,
        owner: str | None = None,
        worker: str | None = None,
        ttl_s: float = DEFAULT_TTL_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.job = job_dir.name
        self.dir = job_dir / "lease"
        self.owner = owner or default_owner(worker)
        self.ttl_s = ttl_s
        self._clock = clock
        self.token: int | None = None
        self._successor = ""  # the record whose existence means we lost the lease
        self._trusted_until = 0.0  # before this, no other worker can have taken the lease
        self._renewer: threading.Thread | None = None
        self._stop = threading.Event()
        self.lost: StaleLease | None = None

    # -- reading ---------------------------------------------------------------------------
    def _tokens(self) -> list[int]:
        try:
            names = os.listdir(self.dir)
        except FileNotFoundError:
            return []
        return sorted(int(n[:-5]) for n in names if n.endswith(".json") and n[:-5].isdigit())

    def _read(self, token: int) -> LeaseRecord | None:
        try:
            raw = json.loads((self.dir / _NAME.format(token)).read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None  # a record being renewed is replaced atomically; absent = not ours
        return LeaseRecord(str(raw["owner"]), int(raw["token"]), float(raw["expires_at"]))

    def current(self) -> LeaseRecord | None:
        tokens = self._tokens()
        return self._read(tokens[-1]) if tokens else None

    # -- taking and keeping ----------------------------------------------------------------
    def acquire(self) -> int:
        """Take the lease (new, expired, or already ours); raise LeaseHeld if someone else's."""
        self.dir.mkdir(parents=True, exist_ok=True)
        now = self._clock()
        # One listing decides both whether the lease is free and the token to claim: listing
        # again could see a claim that landed meanwhile and take the next token past it.
        tokens = self._tokens()
        current = self._read(tokens[-1]) if tokens else None
        if current is not None and current.live(now) and current.owner != self.owner:
            raise LeaseHeld(self.job, current.owner, current.expires_at - now)
        token = (current.token if current else max(tokens, default=0)) + 1
        record = LeaseRecord(self.owner, token, now + self.ttl_s)
        tmp = self.dir / f".claim-{token}-{uuid.uuid4().hex}"
        write_new(tmp, json.dumps(record.__dict__).encode())
        try:
            os.link(tmp, self.dir / _NAME.format(token))  # fails if another worker won
        except FileExistsError:
            winner = self._read(token)
            raise LeaseHeld(self.job, winner.owner if winner else "unknown", self.ttl_s) from None
        finally:
            tmp.unlink(missing_ok=True)
        fsync_dir(self.dir)
        self.token = token
        self._successor = str(self.dir / _NAME.format(token + 1))
        self._trust(record.expires_at)
        self.lost = None
        self._prune(token)
        return token

    def _trust(self, expires_at: float) -> None:
        # Another worker may take over only once our record has expired by *its* clock; keep a
        # margin for clock skew between machines, and check the volume after that.
        self._trusted_until = expires_at - max(self.ttl_s / 4, SKEW_MARGIN_S)

    def check(self) -> None:
        """Raise StaleLease unless this writer still holds the highest token.

        While our record is fresh (renewed within the last part of its TTL) no takeover is
        possible, so no I/O is needed; after that, the successor record is looked for.
        """
        if self.token is None:
            raise StaleLease(f"job {self.job}: no lease held by {self.owner}")
        if self._clock() < self._trusted_until:
            return
        if os.path.exists(self._successor):
            raise StaleLease(
                f"job {self.job}: worker {self.owner} lost its lease (token {self.token}) "
                "to another worker; it stops writing"
            )

    def renew(self) -> None:
        self.check()
        assert self.token is not None
        record = LeaseRecord(self.owner, self.token, self._clock() + self.ttl_s)
        write_atomic(self.dir / _NAME.format(self.token), json.dumps(record.__dict__))
        self._trust(record.expires_at)

    def release(self) -> None:
        """Expire our record now so the next delivery need not wait out the TTL."""
        self.stop_renewing()
        if self.token is None:
            return
        with contextlib.suppress(StaleLease):
            self.check()
            record = LeaseRecord(self.owner, self.token, 0.0)
            write_atomic(self.dir / _NAME.format(self.token), json.dumps(record.__dict__))
        self.token = None

    def _prune(self, keep: int) -> None:
        # Older records only matter to a stale writer, which checks token+1; keep two back.
        for token in self._tokens():
            if token < keep - 2:
                (self.dir / _NAME.format(token)).unlink(missing_ok=True)

    # -- background renewal ----------------------------------------------------------------
    def start_renewing(self, every_s: float | None = None) -> None:
        interval = every_s if every_s is not None else self.ttl_s / 3
        self._stop.clear()

        def loop() -> None:
            while not self._stop.wait(interval):
                try:
                    self.renew()
                except StaleLease as exc:
                    self.lost = exc
                    return
                except OSError:
                    continue  # a slow volume; try again next tick before the lease runs out

        self._renewer = threading.Thread(target=loop, name=f"lease-{self.job}", daemon=True)
        self._renewer.start()

    def stop_renewing(self) -> None:
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join(timeout=5)
            self._renewer = None

    def __enter__(self) -> FileLease:
        self.acquire()
        self.start_renewing()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
