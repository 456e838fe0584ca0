"""What a stage is, what it may use, and how it is asked to stop.

A `Stage` is one step of a job. The pipeline builds it with plain, typed inputs (its folder's
`inputs` module); the runner hands it a `StageContext` (the job's folder, the recorded results
of earlier stages, a way to record facts) and records what `run` returns. A stage knows nothing
of RunPod, the request schema or the runner: it returns a result or raises `stages.errors`.
"""

from __future__ import annotations

import abc
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from events.facts import FactData, Progress
from events.model import Event
from events.vocabulary import MEANING, Status
from stages.errors import JobCancelled, JobInterrupted, JobStopped


@dataclass(frozen=True)
class StageContext:
    """What a stage may use: its folder, earlier results, and a way to record facts."""

    job_id: str
    job_dir: Path
    results: Mapping[str, dict[str, Any]]  # stage name -> its recorded result
    record: Callable[[FactData], Event]  # record a fact from its typed payload
    resumed: bool

    def progress(self, **data: Any) -> Event:
        return self.record(Progress(**data))


class Stage(abc.ABC):
    """One step of a job. `run` returns a JSON-ready result that later stages can read."""

    name: str
    status: Status  # the status the job enters before this stage runs
    done_status: Status | None = None  # entered after it finishes (TRAINING_COMPLETE)

    @abc.abstractmethod
    def run(self, ctx: StageContext) -> dict[str, Any]: ...

    def verify(self, ctx: StageContext, result: Mapping[str, Any]) -> bool:
        """Is the recorded result still usable? By default: every path in `files` exists."""
        files = result.get("files", [])
        return all((ctx.job_dir / str(f)).exists() for f in files)

    def describe(self) -> str:
        return MEANING[self.status]


StopKind = Literal["interrupt", "cancel"]


@dataclass
class StopRequest:
    """Set from another thread (a signal handler, a cancel) to stop the job: between stages,
    while the model downloads, and inside training at the next step."""

    kind: StopKind | None = None
    reason: str = ""
    _event: threading.Event = field(default_factory=threading.Event)

    def set(self, kind: StopKind, reason: str) -> None:
        self.kind, self.reason = kind, reason
        self._event.set()

    @property
    def requested(self) -> bool:
        return self._event.is_set()

    def error(self, where: str) -> JobStopped:
        """The exception that stops the job `where` (e.g. "stopped before weights")."""
        message = f"{self.reason or 'stop requested'}; {where}"
        return JobCancelled(message) if self.kind == "cancel" else JobInterrupted(message)
