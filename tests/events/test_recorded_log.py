"""A log recorded by an earlier version must still replay (Temporal's lesson): if a change to
the event model or the table breaks this, it needs an upcaster, not a new fixture."""

from __future__ import annotations

from events.audit import audit
from events.fold import fold
from events.store import parse_blob
from events.vocabulary import Status
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
