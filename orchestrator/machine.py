"""The live job state machine: the transition table walked with every event written first.

A trigger is checked against the table (`events.table`, the interpreter the audit uses too),
then its event is appended (fsynced, fenced); only then does the state move. An illegal trigger
raises and appends nothing; a failed append leaves the state where it was.
"""

from __future__ import annotations

from typing import Any

from events.facts import FactData
from events.fold import JobView, fold
from events.model import Event
from events.store import EventLog
from events.table import TableWalk
from events.vocabulary import Status


class JobMachine:
    """A job's state, driven by triggers that are recorded in its log before they take effect."""

    def __init__(self, log: EventLog, *, attempt: int | None = None) -> None:
        self.log = log
        view = fold(log.events)
        self._walk = TableWalk(view.status, record=self._record)
        self.attempt = attempt if attempt is not None else max(view.attempt, 1)
        self._last: Event | None = None

    @property
    def status(self) -> Status:
        return self._walk.status

    def view(self) -> JobView:
        return fold(self.log.events)

    def fire(self, event_type: str, data: dict[str, Any] | None = None) -> Event:
        """Apply `event_type`; returns the stored event. Raises IllegalTransition."""
        self._last = None
        self._walk.apply(event_type, data)
        assert self._last is not None, "the walk records every event it accepts"
        return self._last

    def record(self, payload: FactData) -> Event:
        """Record a fact from its typed payload (`events.facts`)."""
        return self.fire(payload.fact.value, payload.data())

    def can(self, event_type: str) -> bool:
        return self._walk.allows(event_type)

    def _record(self, event_type: str, after: Status, data: dict[str, Any]) -> None:
        self._last = self.log.append(
            type=event_type, status=after.value, attempt=self.attempt, data=data
        )
