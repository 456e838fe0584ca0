"""Live progress for RunPod's `/status`: the job's latest state as one small payload, throttled.

RunPod shows the last `progress_update` as a running job's `output`. Each update is a
fire-and-forget thread in the SDK, so a late one can land after the final result: updates are
throttled, and `quiet()` waits out the gap before the handler returns. A status the throttle
held back (one within a second of the last update, e.g. an ERROR right after DOWNLOADING) goes
out in `stop()` (and `quiet()`), so `/status` ends on the job's last status and, for an ERROR,
its error.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from events.model import Event
from events.vocabulary import MEANING, Fact, Status
from stages.throttle import Throttle

PAYLOAD_KEYS = ("status", "stage", "percent", "step", "total_steps", "epoch", "loss", "eta_seconds")


class ProgressReporter:
    """Folds events and trainer samples into a payload; sends at most one per `every_s`."""

    def __init__(
        self,
        send: Callable[[dict[str, Any]], threading.Thread | None] | None,
        *,
        every_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._send = send
        self.every_s = every_s
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        # A new status goes out at once, but not within a second of the last update.
        self._throttle = Throttle(every_s, forced_gap_s=1.0, clock=clock)
        self.closed = False
        self.sent = 0
        self._status_unsent = False  # a new status the throttle held back
        self._last_forced: float | None = None  # when stop() sent it
        # Posts still in flight, when `send` hands back the thread that makes them: the answer
        # then waits for those alone, not for a fixed gap.
        self._posts: list[threading.Thread] = []
        self._untracked = False  # a send that gave no thread: only the gap is safe
        self.payload: dict[str, Any] = {k: None for k in PAYLOAD_KEYS} | {"message": None}

    def on_event(self, event: Event) -> None:
        """An event was appended to the job's log."""
        update: dict[str, Any] = {"status": event.status}
        data = event.data
        if event.type == Fact.PROGRESS:
            update |= {k: data[k] for k in PAYLOAD_KEYS if k in data and k != "status"}
            if "stage" in data:
                update["stage"] = data["stage"]
        elif event.type not in Fact.__members__:
            # A new status: what the seed says it means, and the stage that runs in it.
            update["stage"] = data.get("stage", self.payload.get("stage"))
            if event.status in Status.__members__:
                update["message"] = MEANING.get(Status(event.status))
            if event.status == Status.ERROR and isinstance(data.get("error"), str):
                update["message"] = data["error"]  # what failed, not "Something failed"
        if isinstance(data.get("message"), str):
            update["message"] = data["message"]
        self._merge(update, force=event.type not in Fact.__members__)

    def on_sample(self, sample: dict[str, Any]) -> None:
        """A live trainer sample (every step; throttled here)."""
        self._merge({k: sample[k] for k in PAYLOAD_KEYS if k in sample and k != "status"})

    def _merge(self, update: dict[str, Any], *, force: bool = False) -> None:
        with self._lock:
            if self.closed:
                return
            self.payload.update(update)
            if not self._throttle.due(force=force):
                self._status_unsent = self._status_unsent or force
                return
            self._status_unsent = False
            payload = dict(self.payload)
            self.sent += 1
        self._post(payload)

    def _post(self, payload: dict[str, Any]) -> None:
        if self._send is None:  # nowhere to send (a job run outside RunPod's worker loop)
            return
        thread = self._send(payload)
        with self._lock:
            if thread is None:
                self._untracked = True
            else:
                self._posts = [t for t in self._posts if t.is_alive()] + [thread]

    def stop(self) -> None:
        """Send a status still held back, then send nothing more."""
        with self._lock:
            was_closed, self.closed = self.closed, True
            unsent = self._status_unsent and not was_closed
            self._status_unsent = False
            payload = dict(self.payload)
            if unsent:
                self.sent += 1
                self._last_forced = self._clock()
        if unsent:
            self._post(payload)

    def quiet(self, gap_s: float = 2.0) -> None:
        """`stop()`, and let the last update land before the final result: wait for the posts
        in flight (at most `gap_s`), or, when `send` gives no thread to wait for, until `gap_s`
        has passed since the last update."""
        self.stop()
        with self._lock:
            sends = [t for t in (self._throttle.last, self._last_forced) if t is not None]
            posts, untracked = list(self._posts), self._untracked
        if not untracked:
            deadline = self._clock() + gap_s
            for post in posts:
                post.join(max(0.0, deadline - self._clock()))
            return
        last = max(sends, default=None)
        if last is not None:
            wait = gap_s - (self._clock() - last)
            if wait > 0:
                self._sleep(wait)
