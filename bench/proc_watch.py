"""When a process started and exited, on this process's `time.monotonic()` clock, for benchmarks
that time processes they did not start (the worker's trainer, a localpod worker).

Linux only: the start is the kernel's own record (`/proc/<pid>/stat`, 10 ms ticks since boot),
so a late look does not move it; the exit is seen through a pidfd (woken by the kernel when the
process ends) or, where there is none, by polling every few milliseconds.
"""

from __future__ import annotations

import contextlib
import os
import select
import threading
import time
from collections.abc import Callable
from pathlib import Path

PROC = Path("/proc")
_TICK_S = 1.0 / os.sysconf("SC_CLK_TCK")


def _boot_offset() -> float:
    """monotonic - boottime: 0 unless the machine slept (or a time namespace shifts one)."""
    return time.monotonic() - time.clock_gettime(time.CLOCK_BOOTTIME)


def started_at(pid: int) -> float:
    """The monotonic time `pid` was forked (to the kernel's 10 ms tick)."""
    stat = (PROC / str(pid) / "stat").read_text()
    ticks = int(stat.rsplit(")", 1)[1].split()[19])  # field 22, counted after "(comm)"
    return ticks * _TICK_S + _boot_offset()


def cmdline(pid: int) -> list[str]:
    raw = (PROC / str(pid) / "cmdline").read_bytes()
    return raw.decode(errors="replace").split("\0")[:-1]


def _gone(pid: int) -> bool:
    try:
        state = (PROC / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in ("Z", "X")  # exited, not yet reaped by its parent


def wait_exit(pid: int, timeout: float, poll_s: float = 0.005) -> float | None:
    """Block until `pid` exits; the monotonic time it did, or None after `timeout`."""
    deadline = time.monotonic() + timeout
    try:
        fd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        fd = None
    if fd is not None:
        try:
            poller = select.poll()
            poller.register(fd, select.POLLIN)
            left = max(0.0, deadline - time.monotonic())
            return time.monotonic() if poller.poll(left * 1000) else None
        finally:
            os.close(fd)
    while time.monotonic() < deadline:
        if _gone(pid):
            return time.monotonic()
        time.sleep(poll_s)
    return None


class ProcessWatch:
    """Finds the first process whose command line `matches` and records its start and exit.

    Scans /proc every `every_s` in a daemon thread until one matches, then waits for its exit.
    The start comes from the kernel, so the scan interval only has to be shorter than the
    process's life.
    """

    def __init__(
        self, matches: Callable[[list[str]], bool], *, every_s: float = 0.02, timeout: float = 900
    ) -> None:
        self.matches = matches
        self.every_s = every_s
        self.timeout = timeout
        self.pid: int | None = None
        self.argv: list[str] = []
        self.start: float | None = None
        self.exit: float | None = None
        self._seen: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="proc-watch", daemon=True)

    def __enter__(self) -> ProcessWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    @property
    def lifetime(self) -> float | None:
        if self.start is None or self.exit is None:
            return None
        return self.exit - self.start

    def _watch(self) -> None:
        deadline = time.monotonic() + self.timeout
        while not self._stop.is_set() and time.monotonic() < deadline:
            pid = self._scan()
            if pid is not None:
                self.exit = wait_exit(pid, max(0.0, deadline - time.monotonic()))
                return
            self._stop.wait(self.every_s)

    def _scan(self) -> int | None:
        for entry in PROC.iterdir():
            if not entry.name.isdigit() or int(entry.name) in self._seen:
                continue
            pid = int(entry.name)
            with contextlib.suppress(OSError):
                argv, start = cmdline(pid), started_at(pid)
                if self.matches(argv):
                    self.start, self.pid, self.argv = start, pid, argv
                    return pid
                # A child forked moments ago may not have exec'd yet (it still shows its
                # parent's command line): look again at the next scan.
                if time.monotonic() - start > _EXEC_SETTLED_S:
                    self._seen.add(pid)
        return None


_EXEC_SETTLED_S = 1.0
