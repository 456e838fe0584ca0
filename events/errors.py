"""The service's root exception, and the errors of the event layer (store, leases, the table).

Every error this service raises on purpose derives from `ServiceError`, so a caller can tell
"the service refused or failed, with a message meant for a person" from a bug. Each package keeps
its own user-facing errors in its `errors.py` (`stages.errors`, `orchestrator.errors`), as
huggingface_hub does; the messages say what to do.
"""

from __future__ import annotations


class ServiceError(Exception):
    """Root of every error diffusion-pipe-serverless raises on purpose."""


class StoreError(ServiceError):
    """Base for event-store failures."""


class CorruptLog(StoreError):
    """A line other than a torn last line is unreadable or breaks the chain."""

    def __init__(self, where: str, line_no: int, why: str) -> None:
        super().__init__(f"{where}: line {line_no}: {why}")
        self.line_no = line_no


class LeaseError(ServiceError):
    """Base for lease failures."""


class LeaseHeld(LeaseError):
    def __init__(self, job: str, owner: str, seconds_left: float) -> None:
        super().__init__(
            f"job {job} is being run by worker {owner!r} (its lease runs for another "
            f"{seconds_left:.0f}s); a second worker may not write it"
        )
        self.owner = owner
        self.seconds_left = seconds_left


class StaleLease(LeaseError):
    """This writer's token was superseded: another worker took the job over."""


class IllegalTransition(ServiceError):
    """The event is not allowed from the job's current status (the transition table)."""
