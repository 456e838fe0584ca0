"""The live job state machine: `transitions` over the table in `states`, writing every event.

A trigger is checked against the table first, then its event is appended (fsynced, fenced);
only then does the state move. An illegal trigger raises and appends nothing; a failed append
leaves the state where it was.
"""

from __future__ import annotations

from typing import Any

from transitions import EventData, Machine, MachineError

from events.model import Event
from events.replay import JobView, fold
from events.store import EventLog
from orchestrator.states import FACT_STATES, TRANSITIONS, Status, next_status


class IllegalTransition(Exception):
    """The trigger is not allowed from the job's current status."""


class _Model:
    """Plain holder for `transitions` (a pydantic model cannot be one)."""

    state: str
    trigger: Any


def _explicit(event: EventData) -> bool:
    return bool(event.kwargs.get("data", {}).get("explicit") is True)


def _names(states: frozenset[Status]) -> list[Any]:
    return sorted(s.value for s in states)


def build_machine(model: object, initial: Status) -> Machine:
    machine = Machine(
        model=model,
        states=[s.value for s in Status],
        initial=initial.value,
        auto_transitions=False,
        send_event=True,
    )
    for t in TRANSITIONS:
        machine.add_transition(
            t.trigger,
            _names(t.sources),
            t.dest.value,
            conditions=[_explicit] if t.explicit_only else None,
        )
    for fact, states in FACT_STATES.items():
        # dest=None: an internal transition, allowed in these states, state unchanged.
        machine.add_transition(fact.value, _names(states), None)
    return machine


class JobMachine:
    """A job's state, driven by triggers that are recorded in its log before they take effect."""

    def __init__(self, log: EventLog, *, attempt: int | None = None) -> None:
        self.log = log
        view = fold(log.events)
        self._model = _Model()
        self._machine = build_machine(self._model, view.status)
        self._machine.before_state_change = [self._record]
        self.attempt = attempt if attempt is not None else max(view.attempt, 1)
        self._last: Event | None = None

    @property
    def status(self) -> Status:
        return Status(self._model.state)

    def view(self) -> JobView:
        return fold(self.log.events)

    def fire(self, event_type: str, data: dict[str, Any] | None = None) -> Event:
        """Apply `event_type`; returns the stored event. Raises IllegalTransition."""
        before = self.status
        self._last = None
        try:
            accepted = self._model.trigger(event_type, data=dict(data or {}))
        except (MachineError, AttributeError) as exc:
            raise IllegalTransition(
                f"{event_type} is not allowed while the job is {before.value}"
            ) from exc
        if not accepted or self._last is None:
            raise IllegalTransition(
                f"{event_type} from {before.value} needs an explicit request "
                '(data {"explicit": true})'
            )
        return self._last

    def can(self, event_type: str, data: dict[str, Any] | None = None) -> bool:
        return next_status(self.status, event_type, data or {}) is not None

    def _record(self, event: EventData) -> None:
        dest = event.transition.dest if event.transition is not None else None
        status = dest if dest is not None else self._model.state
        self._last = self.log.append(
            type=event.event.name if event.event is not None else "?",
            status=status,
            attempt=self.attempt,
            data=event.kwargs.get("data", {}),
        )
