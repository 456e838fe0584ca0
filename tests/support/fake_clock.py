"""Simulated seconds for code that takes `clock=` and `sleep=`: `sleep` records the wait and
advances the clock, so a test reads the waits instead of timing them."""

from __future__ import annotations


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += max(0.0, seconds)

    @property
    def waits(self) -> list[float]:
        """The waits, without the zero-second ones (polls with an interval of 0)."""
        return [s for s in self.slept if s > 0]
