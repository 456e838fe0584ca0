"""What every check shares: its answer, the transient failure, and the bounded retry.

A check returns `Checked` (facts for the stage's result, warnings for the user) or raises
`StageFailed` for a definite refusal (a message starting with the request field to fix).
`Transient` is a failure another try may fix (network, 429, 5xx); `retried` tries again within
the `Bounds`, then lets it go to the stage, which decides what it means (a destination is
checked again when publishing; a dataset that does not answer fails the job).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import structlog

from stages.access.inputs import Bounds

log = structlog.get_logger(__name__)
T = TypeVar("T")
Sleep = Callable[[float], None]
Clock = Callable[[], float]


class Transient(Exception):
    """A failure another try may fix; its message is shown to the user (no secret in it)."""


@dataclass
class Checked:
    facts: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def retried(
    what: str,
    call: Callable[[], T],
    bounds: Bounds,
    *,
    sleep: Sleep = time.sleep,
    clock: Clock = time.monotonic,
) -> T:
    """`call()`, tried again on `Transient` up to `bounds.attempts` times within
    `bounds.retry_s`; the last `Transient` propagates."""
    start = clock()
    for attempt in range(1, bounds.attempts + 1):
        try:
            return call()
        except Transient as exc:
            waits = bounds.waits_s or (0.0,)
            wait = waits[min(attempt - 1, len(waits) - 1)]
            if attempt == bounds.attempts or clock() - start + wait > bounds.retry_s:
                raise
            log.info("access check will be retried", check=what, attempt=attempt, reason=str(exc))
            sleep(wait)
    raise AssertionError("unreachable")  # attempts >= 1: the loop returns or raises
