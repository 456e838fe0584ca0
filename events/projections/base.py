"""What every mirror shares: follow a job's log in seq order and project each event to a file.

`MirrorSettings` holds the mirrors' knobs (the worker's `Settings` fills them from `DPS_MIRROR_*`);
`Projection` is the base of `LocalMirror` and `HubMirror`: it catches up from the log, then
follows its appends, and hands each new `UPDATES/` file to the subclass's `_accept`. A mirror
whose repo is not named yet (the Hub names the user of an auto-named repo) holds the events and
projects them once `_named` is called.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from events.model import Event
from events.projections.updates import ProjectionState, Thinning, UpdateFile, project
from events.redact import Redactor
from events.store import EventLog


@dataclass(frozen=True)
class MirrorSettings:
    commit_interval_s: float = 60.0  # per mirror; the repo's CommitLedger bounds all of them
    progress_interval_s: float = 300.0
    progress_epoch_min_s: float = 60.0
    queue_max: int = 500  # pending files; past it, pending PROGRESS files are coalesced
    # The job never waits longer than these for the Hub: at its start, for the repo (and what
    # is pending); at its end, for the last updates. What is left stays in the job's log.
    start_timeout_s: float = 5.0
    close_timeout_s: float = 5.0
    backoff_s: float = 5.0  # first pause after a 5xx or network error, doubled each time
    max_backoff_s: float = 600.0
    rate_limit_wait_s: float = 300.0  # a 429 that names no wait
    conflict_wait_s: float = 2.0  # a 409 (another commit in progress), jittered
    poll_s: float = 1.0  # the worker's longest nap: bounds how late a stop is noticed

    @property
    def thinning(self) -> Thinning:
        return Thinning(self.progress_interval_s, self.progress_epoch_min_s)


class Projection:
    """The shared part: follow a log in seq order and project each event to a file."""

    def __init__(
        self, repo_id: str | None, job_id: str, thinning: Thinning, secrets: tuple[str, ...]
    ) -> None:
        self.repo_id, self.job_id, self.thinning = repo_id, job_id, thinning
        self._redactor = Redactor(secrets)
        self._lock = threading.Lock()
        self._state = ProjectionState()
        self._held: list[Event] = []  # events seen before the repo was named

    def attach(self, event_log: EventLog) -> None:
        """Catch up from the log (events past the cursor), then follow its appends.

        Call before the job appends again: the log has one writer, so nothing is missed.
        """
        for event in event_log.events:
            self.publish(event)
        event_log.observers.append(self.publish)

    def publish(self, event: Event) -> None:
        """Project one event; never blocks on I/O to the Hub and never raises."""
        if event.job_id != self.job_id:
            return
        with self._lock:
            if self.repo_id is None:
                self._held.append(event)
                return
            self._project(event, self.repo_id)

    def _named(self, repo_id: str) -> None:
        """The repo has a name now: project what was held, in order."""
        with self._lock:
            self.repo_id = repo_id
            self._on_named()
            held, self._held = self._held, []
            for event in held:
                self._project(event, repo_id)

    def _on_named(self) -> None:
        """Called under the lock once the repo is named, before held events are projected."""

    def _project(self, event: Event, repo_id: str) -> None:
        state, update = project(
            self._state,
            event,
            repo_id=repo_id,
            thinning=self.thinning,
            redactor=self._redactor,
        )
        self._state = state
        if update is not None:
            self._accept(update, state)

    def _accept(self, update: UpdateFile, state: ProjectionState) -> None:
        raise NotImplementedError
