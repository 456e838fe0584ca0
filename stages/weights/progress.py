"""Download progress: bytes done of bytes expected, shared between the download thread and the
stage, and turned into throttled PROGRESS facts. The tracker also carries the download's
cancel: the download thread checks it at every byte count, file and pause."""

from __future__ import annotations

import threading
from typing import Any

from stages.errors import DownloadCancelled
from stages.throttle import Throttle


class Tracker:
    """Bytes done / total and a status line, shared between the download thread and the stage;
    `cancel()` makes the download thread stop at its next `add`, `check` or `pause`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cancelled = threading.Event()
        self.done = 0
        self.total = 0
        self.message = ""

    def add(self, n: int) -> None:
        with self._lock:
            self.done += n
        self.check()

    def cancel(self) -> None:
        self._cancelled.set()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def check(self) -> None:
        """Raise DownloadCancelled once the download was cancelled."""
        if self._cancelled.is_set():
            raise DownloadCancelled("the model download was stopped: its job has ended")

    def pause(self, seconds: float) -> None:
        """Sleep, unless the download is cancelled meanwhile (then raise at once)."""
        self._cancelled.wait(seconds)
        self.check()

    def expect(self, n: int) -> None:
        with self._lock:
            self.total += n

    def say(self, message: str) -> None:
        with self._lock:
            self.message = message

    def snapshot(self) -> tuple[int, int, str]:
        with self._lock:
            return self.done, self.total, self.message


class ByteProgress:
    """Says when a download's progress is worth a PROGRESS fact: at most one a second, and only
    for 5 points of progress, a new status line, the end, or a 30 s heartbeat."""

    def __init__(self, throttle: Throttle | None = None) -> None:
        self._throttle = throttle or Throttle(1.0, heartbeat_s=30.0)
        self._pct = -100.0
        self._msg = ""

    def due(self, done: int, total: int, message: str, final: bool = False) -> bool:
        pct = 100.0 * done / total if total else 0.0
        moved = pct - self._pct >= 5 or message != self._msg
        if self._throttle.due(force=final, changed=moved):
            self._pct, self._msg = pct, message
            return True
        return False


def progress_data(
    model_type: str, done: int, total: int, message: str, *, stage: str = "weights"
) -> dict[str, Any]:
    data: dict[str, Any] = {"stage": stage, "model_type": model_type, "message": message}
    data.update(bytes_done=done, bytes_total=total)
    if total:
        data["percent"] = round(100.0 * done / total, 1)
    return data
