"""The one reading of the transition table: the declaration loaded into a `transitions` machine,
and asked through `transitions`' own API.

`TableWalk` holds one status and moves it through the table (`events.vocabulary.TRANSITIONS` and
`FACT_STATES`): the machine's `events[trigger].transitions[source]` are the rows for an event,
and the first row's `dest` is the status after (none: a fact, the status stays). No row reads
an event's data. The live job machine (`orchestrator.machine`) walks with a
`record` callback that appends the event before the status moves; the audit (`events.audit`)
walks a stored log. Nothing else interprets the table, so the two cannot disagree.

Rows are looked up rather than fired with `trigger()`: the audit walks every event of a log, and
firing runs the whole callback chain per event (about 20 us, against 1 us for the lookup).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from transitions import Machine

from events.errors import IllegalTransition
from events.vocabulary import FACT_STATES, TRANSITIONS, Status

# Called with (event type, status after, data) before the status moves; raising keeps it.
Recorder = Callable[[str, Status, dict[str, Any]], None]


class _Holder:
    """The machine's model: a plain class (a pydantic model cannot be one)."""

    state: str


def _names(states: frozenset[Status]) -> list[Any]:
    return sorted(s.value for s in states)


def _machine(model: _Holder, initial: Status) -> Machine:
    machine = Machine(
        model=model,
        states=[s.value for s in Status],
        initial=initial.value,
        auto_transitions=False,
        send_event=True,
    )
    for t in TRANSITIONS:
        machine.add_transition(t.trigger, _names(t.sources), t.dest.value)
    for fact, states in FACT_STATES.items():
        # dest=None: an internal transition, allowed in these states, state unchanged.
        machine.add_transition(fact.value, _names(states), None)
    return machine


class TableWalk:
    """A status moved through the transition table one event at a time."""

    def __init__(self, initial: Status = Status.NEW, *, record: Recorder | None = None) -> None:
        self._model = _Holder()
        self._machine = _machine(self._model, initial)
        self._record = record

    @property
    def status(self) -> Status:
        return Status(self._model.state)

    def allows(self, event_type: str) -> bool:
        """Would `event_type` be accepted now? (No row depends on an event's data.)"""
        try:
            self._after(event_type)
        except IllegalTransition:
            return False
        return True

    def apply(self, event_type: str, data: dict[str, Any] | None = None) -> Status:
        """Record (when a recorder is set) and apply `event_type`; return the status after it.

        Raises IllegalTransition, having recorded nothing."""
        payload = dict(data or {})
        after = self._after(event_type)
        if self._record is not None:
            self._record(event_type, after, payload)
        if after is not self.status:
            self._machine.set_state(after.value, model=self._model)
        return after

    def jump(self, status: Status) -> None:
        """Set the status without a transition (the audit resynchronising after a problem)."""
        self._machine.set_state(status.value, model=self._model)

    def _after(self, event_type: str) -> Status:
        before = self.status
        event = self._machine.events.get(event_type)  # the trigger's rows, keyed by source
        rows = event.transitions.get(before.value) if event is not None else None
        if not rows:
            raise IllegalTransition(f"{event_type} is not allowed while the job is {before.value}")
        dest = rows[0].dest
        return Status(dest) if dest is not None else before
