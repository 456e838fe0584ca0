"""RunPod progress: the payload's shape, throttling, and silence before the final result."""

from __future__ import annotations

from typing import Any

from events.store import EventStore
from orchestrator.progress import PAYLOAD_KEYS, ProgressReporter


class Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_payload_has_the_promised_keys_and_follows_the_job() -> None:
    sent: list[dict[str, Any]] = []
    clock = Clock()
    reporter = ProgressReporter(sent.append, every_s=5, clock=clock, sleep=clock.sleep)
    log = EventStore.in_memory().open("j")
    reporter.on_event(
        log.append(type="TRAINING", status="TRAINING", attempt=1, data={"stage": "training"})
    )
    assert set(sent[0]) == {*PAYLOAD_KEYS, "message"}
    assert sent[0]["status"] == "TRAINING"
    assert sent[0]["stage"] == "training"
    assert sent[0]["message"] == "Training in progress"
    clock.now = 6
    reporter.on_sample(
        {
            "step": 10,
            "total_steps": 100,
            "epoch": 1,
            "loss": 0.5,
            "percent": 10.0,
            "eta_seconds": 90,
        }
    )
    assert sent[-1]["step"] == 10
    assert sent[-1]["eta_seconds"] == 90


def test_samples_are_throttled() -> None:
    sent: list[dict[str, Any]] = []
    clock = Clock()
    reporter = ProgressReporter(sent.append, every_s=5, clock=clock, sleep=clock.sleep)
    for step in range(100):
        clock.now = step * 0.1  # ten steps a second for ten seconds
        reporter.on_sample({"step": step})
    assert len(sent) == 2  # t=0 and t=5
    assert sent[-1]["step"] == 50


def test_quiet_waits_out_the_gap_and_then_sends_nothing() -> None:
    sent: list[dict[str, Any]] = []
    clock = Clock()
    reporter = ProgressReporter(sent.append, every_s=5, clock=clock, sleep=clock.sleep)
    reporter.on_sample({"step": 1})
    clock.now = 0.5
    reporter.quiet(gap_s=2.0)
    assert clock.slept == [1.5]
    reporter.on_sample({"step": 2})
    clock.now = 100
    reporter.on_sample({"step": 3})
    assert [p["step"] for p in sent] == [1]
