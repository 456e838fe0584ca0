"""Hypothesis drives random triggers at the live machine and checks the log against it.

Properties: replay equals the live state (from memory, from disk, from the triggers again), the
chain verifies, and no sequence of triggers escapes the declared table: every recorded event is a
row of `TRANSITIONS` / `FACT_STATES`, and a refused trigger appends nothing.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from events.audit import audit
from events.errors import IllegalTransition
from events.fold import fold
from events.model import GENESIS_HASH
from events.store import EventStore
from events.table import TableWalk
from events.vocabulary import EVENT_TYPES, FACT_STATES, FINAL, TRANSITIONS, Status
from orchestrator.machine import JobMachine

TRIGGERS = [*sorted(EVENT_TYPES), "NEW", "BOGUS", "complete"]


def declared_rows() -> set[tuple[str, str, str]]:
    """(status before, event type, status after) for every row of the table."""
    rows = {(source.value, t.trigger, t.dest.value) for t in TRANSITIONS for source in t.sources}
    rows |= {(s.value, f.value, s.value) for f, ss in FACT_STATES.items() for s in ss}
    return rows


ROWS = declared_rows()


class JobMachineRules(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.tmp = tempfile.TemporaryDirectory()
        self.store = EventStore.on_disk(Path(self.tmp.name))
        self.machine = JobMachine(self.store.open("job"))
        self.accepted: list[tuple[str, dict[str, Any]]] = []
        self.status = Status.NEW

    def teardown(self) -> None:
        self.tmp.cleanup()

    @rule(
        trigger=st.sampled_from(TRIGGERS),
        note=st.text(max_size=8),
    )
    def fire(self, trigger: str, note: str) -> None:
        data = {"note": note}
        allowed = self.machine.can(trigger)
        before = len(self.machine.log)
        if not allowed:
            with pytest.raises(IllegalTransition):
                self.machine.fire(trigger, data)
            assert len(self.machine.log) == before, "an illegal trigger appended an event"
            assert self.machine.status is self.status
            return
        event = self.machine.fire(trigger, data)
        assert event.status == self.machine.status.value
        self.status = self.machine.status
        self.accepted.append((trigger, data))

    @rule(attempt=st.integers(1, 5))
    def new_attempt(self, attempt: int) -> None:
        self.machine.attempt = max(self.machine.attempt, attempt)

    @invariant()
    def replay_equals_live(self) -> None:
        events = self.machine.log.events
        assert self.machine.status is self.status
        assert fold(events).status is self.status
        # The log on disk replays to the same view, and a fresh machine resumes at that state.
        reread = self.store.read("job")
        assert reread == events
        assert fold(reread) == fold(events)
        assert JobMachine(self.store.open("job")).status is self.status

    @invariant()
    def seq_contiguous_and_chain_verifies(self) -> None:
        events = self.machine.log.events
        assert [e.seq for e in events] == list(range(1, len(events) + 1))
        prev = GENESIS_HASH
        for event in events:
            assert event.prev_hash == prev
            prev = event.hash
        report = audit(events)
        assert report.ok, report.problems

    @invariant()
    def replaying_the_triggers_gives_the_same_states(self) -> None:
        fresh = JobMachine(EventStore.in_memory().open("job"))
        for trigger, data in self.accepted:
            fresh.fire(trigger, data)
        assert fresh.status is self.status
        live = [(e.type, e.status, e.data) for e in self.machine.log.events]
        again = [(e.type, e.status, e.data) for e in fresh.log.events]
        assert live == again

    @invariant()
    def no_event_escapes_the_table(self) -> None:
        status = Status.NEW.value
        for event in self.machine.log.events:
            assert (status, event.type, event.status) in ROWS, (
                f"seq {event.seq}: {status} -{event.type}-> {event.status} is not in the table"
            )
            status = event.status

    @invariant()
    def complete_is_final(self) -> None:
        if self.status in FINAL:
            for trigger in EVENT_TYPES:
                assert not self.machine.can(trigger)


JobMachineRules.TestCase.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)
TestJobMachine = JobMachineRules.TestCase


def test_the_happy_path_walks_the_seed_statuses_in_order() -> None:
    machine = JobMachine(EventStore.in_memory().open("job"))
    walk = [
        "INITIALIZED",
        "STARTING",
        "DOWNLOADING",
        "CAPTIONING",
        "MODEL_DOWNLOAD",
        "TRAINING",
        "TRAINING_COMPLETE",
        "UPLOADING",
        "COMPLETE",
    ]
    for status in walk:
        machine.fire(status)
    assert [e.status for e in machine.log.events] == walk


@pytest.mark.parametrize(
    ("status", "allowed"),
    [
        ("INTERRUPTED", True),
        ("TRAINING", True),  # the worker died mid-training: any delivery resumes
        ("ERROR", True),  # POST /retry: the user asking, with the original input
        ("CANCELLED", True),  # an execution timeout looks the same to the worker
        ("COMPLETE", False),  # answered from the log, never trained again
        ("NEW", False),
    ],
)
def test_every_delivery_of_an_unfinished_job_may_resume_it(status: str, allowed: bool) -> None:
    walk = TableWalk(Status(status))
    assert walk.allows("RESUMED") is allowed
    if allowed:
        assert walk.apply("RESUMED") is Status.RESUMED
    else:
        with pytest.raises(IllegalTransition):
            walk.apply("RESUMED")
        assert walk.status is Status(status)


def test_facts_do_not_move_the_state_and_only_fit_their_states() -> None:
    machine = JobMachine(EventStore.in_memory().open("job"))
    for status in ["INITIALIZED", "STARTING", "DOWNLOADING", "MODEL_DOWNLOAD", "TRAINING"]:
        machine.fire(status)
    for fact in ["PROGRESS", "CHECKPOINT", "EPOCH_SAVED"]:
        assert machine.fire(fact).status == "TRAINING"
    with pytest.raises(
        IllegalTransition, match="DATASET_REPORT is not allowed while the job is TRAINING"
    ):
        machine.fire("DATASET_REPORT")
