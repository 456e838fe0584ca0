"""A log recorded by an earlier version must still replay (Temporal's lesson): if a change to
the event model or the table breaks this, it needs an upcaster, not a new fixture."""

from __future__ import annotations

from events.audit import audit
from events.facts import payload_of
from events.fold import fold
from events.store import parse_blob
from events.vocabulary import Fact, Status
from tests.support.paths import EXAMPLES

RECORDED = EXAMPLES / "recorded-job" / "events.jsonl"


def test_the_recorded_job_replays_and_verifies() -> None:
    loaded = parse_blob(RECORDED.read_bytes(), str(RECORDED))
    assert not loaded.torn_tail
    report = audit(loaded.events)
    assert report.ok, report.problems
    view = fold(loaded.events)
    assert view.status is Status.COMPLETE
    assert view.attempt == 2
    assert Status.INTERRUPTED in view.statuses
    assert Status.RESUMED in view.statuses
    assert set(view.stages) == {"dataset", "weights", "training", "publish"}


def test_every_recorded_fact_reads_back_into_its_payload_model() -> None:
    events = parse_blob(RECORDED.read_bytes(), str(RECORDED)).events
    facts = [e for e in events if e.type in Fact.__members__]
    assert {e.type for e in facts} >= {"DATASET_REPORT", "MODEL_READY", "PROGRESS", "STAGE_DONE"}
    for event in facts:
        payload = payload_of(event)
        assert payload is not None
        assert payload.fact.value == event.type
        assert payload.data() == event.data  # nothing lost, nothing added
