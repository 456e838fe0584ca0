"""RunPod progress: the payload's shape, throttling, and silence before the final result."""

from __future__ import annotations

import threading
from typing import Any

from events.store import EventStore
from orchestrator.progress import PAYLOAD_KEYS, ProgressReporter
from tests.support.fake_clock import FakeClock as Clock


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


def test_an_error_shows_what_failed_not_something_failed() -> None:
    sent: list[dict[str, Any]] = []
    clock = Clock()
    reporter = ProgressReporter(sent.append, every_s=5, clock=clock, sleep=clock.sleep)
    log = EventStore.in_memory().open("j")
    reporter.on_event(
        log.append(type="DOWNLOADING", status="DOWNLOADING", attempt=1, data={"stage": "dataset"})
    )
    clock.now = 3
    error = "dataset.images_url: not found at example.com/d.zip (HTTP 404); check the URL"
    reporter.on_event(
        log.append(
            type="ERROR", status="ERROR", attempt=1, data={"error": error, "stage": "dataset"}
        )
    )
    assert sent[-1]["status"] == "ERROR"
    assert sent[-1]["message"] == error
    assert sent[-1]["stage"] == "dataset"


def test_a_status_events_own_message_still_wins() -> None:
    sent: list[dict[str, Any]] = []
    reporter = ProgressReporter(sent.append, every_s=0)
    log = EventStore.in_memory().open("j")
    reporter.on_event(
        log.append(
            type="ERROR",
            status="ERROR",
            attempt=1,
            data={"error": "HTTP 404 at example.com", "message": "The dataset was not found"},
        )
    )
    assert sent[-1]["message"] == "The dataset was not found"


def test_a_status_held_back_by_the_throttle_goes_out_before_the_answer() -> None:
    sent: list[dict[str, Any]] = []
    clock = Clock()
    reporter = ProgressReporter(sent.append, every_s=5, clock=clock, sleep=clock.sleep)
    log = EventStore.in_memory().open("j")
    reporter.on_event(log.append(type="DOWNLOADING", status="DOWNLOADING", attempt=1, data={}))
    clock.now = 0.2  # within the forced gap: held back
    reporter.on_event(log.append(type="ERROR", status="ERROR", attempt=1, data={"error": "boom"}))
    assert [p["status"] for p in sent] == ["DOWNLOADING"]
    reporter.stop()
    assert [(p["status"], p["message"]) for p in sent][-1] == ("ERROR", "boom")
    reporter.quiet(gap_s=2.0)  # the whole gap after the late send
    assert clock.slept == [2.0]
    assert len(sent) == 2


def test_the_answer_waits_for_the_posts_in_flight_not_a_fixed_gap() -> None:
    """When `send` hands back the thread posting the update, `quiet` joins it and sleeps
    nothing; a post that outlasts the gap is waited for only that long."""
    clock = Clock()
    landed: list[dict[str, Any]] = []
    release = threading.Event()

    def send(payload: dict[str, Any]) -> threading.Thread:
        def post() -> None:
            release.wait(5)
            landed.append(payload)

        thread = threading.Thread(target=post, daemon=True)
        thread.start()
        return thread

    reporter = ProgressReporter(send, every_s=5, clock=clock, sleep=clock.sleep)
    store = EventStore.in_memory().open("job")
    reporter.on_event(store.append(type="STARTING", status="STARTING", attempt=1, data={}))
    threading.Timer(0.2, release.set).start()
    reporter.quiet()
    assert landed, "quiet returned before the post in flight landed"
    assert clock.slept == []


def test_a_send_without_a_thread_keeps_the_gap() -> None:
    clock = Clock()
    sent: list[dict[str, Any]] = []
    reporter = ProgressReporter(sent.append, every_s=5, clock=clock, sleep=clock.sleep)
    store = EventStore.in_memory().open("job")
    reporter.on_event(store.append(type="STARTING", status="STARTING", attempt=1, data={}))
    reporter.quiet()
    assert clock.slept == [2.0]
