"""What the loopback servers share for fault injection and counting (`FakeHub`, the Xet CAS):
the requests they saw, and faults to answer with, applied per matching request."""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass


@dataclass(frozen=True)
class Seen:
    method: str
    path: str  # unquoted, without the query string
    auth: bool  # an Authorization header was sent


@dataclass
class Fault:
    status: int
    method: str | None
    path_contains: str | None
    times: int
    headers: dict[str, str]
    drop: bool = False  # apply the request, then close the connection without a response


class Faults:
    """`fail`, `drop`, `count` and the handler's `_take_fault`, over a server's `_lock`,
    `faults` and `requests`."""

    _lock: threading.Lock
    faults: list[Fault]
    requests: list[Seen]

    def fail(
        self,
        status: int,
        *,
        method: str | None = None,
        path_contains: str | None = None,
        times: int = 1,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Answer the next `times` matching requests with `status` (409, 429, 5xx...)."""
        with self._lock:
            self.faults.append(Fault(status, method, path_contains, times, dict(headers or {})))

    def drop(
        self, *, method: str | None = None, path_contains: str | None = None, times: int = 1
    ) -> None:
        """Apply the next `times` matching requests, then close the connection unanswered."""
        with self._lock:
            self.faults.append(Fault(0, method, path_contains, times, {}, drop=True))

    def count(self, method: str | None = None, contains: str = "") -> int:
        with self._lock:
            return sum(
                1
                for r in self.requests
                if (method is None or r.method == method) and contains in r.path
            )

    def _take_fault(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.method in (None, method) and (fault.path_contains or "") in path:
                    fault.times -= 1
                    if fault.times <= 0:
                        self.faults.remove(fault)
                    return fault
        return None


class InFlight:
    """The slowed requests (a server's `delay_s`) being answered at once: each one's entry adds
    the set of paths then in flight to `together`, so a test sees what a client overlapped."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._now: Counter[str] = Counter()
        self.together: list[frozenset[str]] = []

    def wait(self, path: str, seconds: float) -> None:
        with self._lock:
            self._now[path] += 1
            self.together.append(frozenset(self._now))
        try:
            time.sleep(seconds)
        finally:
            with self._lock:
                self._now[path] -= 1
                if not self._now[path]:
                    del self._now[path]
