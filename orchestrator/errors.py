"""The orchestrator's user-facing errors: a bad request, an unknown model, a client tool's failure.

All derive from `events.errors.ServiceError`. Messages name the field and say what to do; they
never hold a secret (a `RequestError` scrubs the request's secrets on construction).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from events.errors import ServiceError
from events.redact import Redactor

Problem = tuple[str, str]  # (dotted field path, message)
SHOWN_PROBLEMS = 50  # an answer lists this many; a hostile body can make thousands


class RequestError(ServiceError, ValueError):
    """A request that cannot be run; `problems` lists (field path, message) pairs.

    `str(err)` is one block: `invalid request (N problems):` and one `  - path: message` line per
    problem. Messages never contain secret values: known secrets are scrubbed on construction.
    """

    def __init__(self, problems: Sequence[Problem], secrets: Iterable[str] = ()) -> None:
        redactor = Redactor(secrets, shapes=False)
        cleaned: dict[Problem, None] = {}  # ordered, and a hostile request's 10,000 are linear
        for path, message in problems:
            cleaned[(redactor.text(path), redactor.text(message))] = None
        self.problems: list[Problem] = list(cleaned)
        super().__init__(self._render())

    def _render(self) -> str:
        n = len(self.problems)
        lines = [f"invalid request ({n} problem{'' if n == 1 else 's'}):"]
        lines += [
            f"  - {path}: {message}" if path else f"  - {message}"
            for path, message in self.problems[:SHOWN_PROBLEMS]
        ]
        if n > SHOWN_PROBLEMS:
            lines.append(f"  - ... and {n - SHOWN_PROBLEMS} more; fix these first")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self._render()


class UnknownModelTypeError(ServiceError, ValueError):
    """`model_type` names no catalogue entry."""

    def __init__(self, model_type: object, known: Sequence[str]) -> None:
        self.model_type = model_type
        shown = str(model_type)[:60]
        super().__init__(f'model_type "{shown}" is not implemented; use one of: {", ".join(known)}')


class SubmitError(ServiceError, RuntimeError):
    """An HTTP or transport failure talking to the endpoint (`dpserve submit`)."""


class WatchTimeout(ServiceError):
    """No final update within the timeout; `last` is the newest update seen (or None)."""

    def __init__(self, last: dict[str, Any] | None) -> None:
        status = last.get("status") if last else "nothing"
        super().__init__(f"no final update before the timeout (last: {status})")
        self.last = last
