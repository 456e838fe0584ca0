"""The one progress throttle: says when the next update of a stream is due.

Stages record PROGRESS facts from loops that run far more often than anyone should be told
(every downloaded chunk, every checked image, every training step), and the worker forwards
samples to RunPod's `/status`. Each asks a `Throttle` first. An update is due when

- it is the first one;
- `every_s` passed since the last one, and it says something new (`changed`), or
  `heartbeat_s` passed (so a stalled transfer still shows it is alive);
- or it is forced (a final update, a new epoch, a new status), once `forced_gap_s` passed.

The UPDATES mirror thins PROGRESS by the events' own timestamps instead (`events.projections`),
so that a replay gives the same files; this one runs on a clock.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable


class Throttle:
    def __init__(
        self,
        every_s: float,
        *,
        forced_gap_s: float = 0.0,
        heartbeat_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.every_s = every_s
        self.forced_gap_s = forced_gap_s
        self.heartbeat_s = heartbeat_s
        self._clock = clock
        self._at: float | None = None
        self._lock = threading.Lock()

    @property
    def last(self) -> float | None:
        """When the last due update was let through (by the clock), or None."""
        return self._at

    def due(self, *, force: bool = False, changed: bool = True) -> bool:
        """Is an update due now? When it is, the throttle counts it as sent."""
        with self._lock:
            now = self._clock()
            elapsed = math.inf if self._at is None else now - self._at
            alive = self.heartbeat_s is not None and elapsed >= self.heartbeat_s
            regular = elapsed >= self.every_s and (changed or alive)
            if regular or (force and elapsed >= self.forced_gap_s):
                self._at = now
                return True
            return False
