"""The runner: replay a job's log, skip what it proves done, run the rest, record the outcome.

Every delivery of a job goes through `run_job`. It takes the job's lease, replays the log and
then either returns the recorded result (COMPLETE), starts (a new job: INITIALIZED) or resumes
(RESUMED, attempt N+1) whatever else the log ends in: ERROR, CANCELLED, INTERRUPTED or a
working status. On RunPod a halted job is delivered again only by `POST /retry`, with its
original input: the user asking, so it resumes rather than repeating the old answer. Stages run
in order; one whose STAGE_DONE is in the log and whose output still verifies is skipped (a
stage may record another's STAGE_DONE: a continued job adopts its origin's dataset). A stop
requested between stages (SIGTERM, a cancel) is honoured before the next stage starts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

from events.facts import FactData, StageDone
from events.fold import JobView, fold
from events.lease import FileLease
from events.model import Event
from events.store import EventLog, EventStore, job_path
from events.vocabulary import MEANING, Status
from orchestrator.machine import JobMachine
from stages.contract import Stage, StageContext, StopRequest
from stages.errors import JobCancelled, JobInterrupted, PublishDeferred, StageFailed

log = structlog.get_logger(__name__)


# Publishes a cancelled job's latest saved LoRA; returns what it published, or None.
Salvage = Callable[[StageContext], dict[str, Any] | None]


@dataclass(frozen=True)
class Outcome:
    job_id: str
    status: Status
    attempt: int
    result: dict[str, Any] | None = None
    error: str | None = None
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    view: JobView = field(default_factory=JobView)
    from_log: bool = False  # a COMPLETE job delivered again: the result is the recorded one


def _default_finish(results: Mapping[str, dict[str, Any]]) -> dict[str, Any]:
    last = list(results.values())[-1] if results else {}
    return {"message": "Training completed successfully!", **last}


Finish = Callable[[Mapping[str, dict[str, Any]]], dict[str, Any]]


def run_job(
    *,
    root: Path,
    job_id: str,
    stages: Sequence[Stage],
    secrets: Iterable[str] = (),
    store: EventStore | None = None,
    lease: FileLease | None = None,
    start_data: Mapping[str, Any] | None = None,
    finish: Finish = _default_finish,
    observers: Sequence[Callable[[Event], None]] = (),
    on_open: Callable[[EventLog], None] | None = None,
    salvage: Salvage | None = None,
    stop: StopRequest | None = None,
) -> Outcome:
    """Run (or resume, or answer from the log) one delivery of a job. See the module doc.

    `observers` see every event once it is durable (live progress); `on_open` gets the log
    before this delivery appends anything (a mirror catches up, then follows). `salvage` runs
    when the client cancels: it publishes what exists (the latest saved LoRA) while the job is
    UPLOADING, and its result goes into the CANCELLED event. `stop` is checked before each
    stage that runs.
    """
    job_dir = job_path(root, job_id)
    job_dir.mkdir(parents=True, exist_ok=True)
    store = store or EventStore.on_disk(root)
    lease = lease or FileLease(job_dir)
    lease.acquire()  # LeaseHeld propagates: another live worker owns this job
    lease.start_renewing()
    try:
        job_log = store.open(job_id, secrets=secrets, fence=lease)
        job_log.observers.extend(observers)
        if on_open is not None:
            on_open(job_log)
        machine = JobMachine(job_log)
        view = machine.view()
        if view.status is Status.COMPLETE:
            log.info(
                "job already complete; returning the recorded result",
                job_id=view.job_id,
                attempt=view.attempt,
            )
            return _outcome(machine, result=view.result, from_log=True)
        resumed = _begin(machine, view, start_data=start_data)
        run = _Run(machine, job_dir, resumed=resumed, stop=stop)
        return run.deliver(stages, finish=finish, salvage=salvage)
    finally:
        lease.release()


def _begin(
    machine: JobMachine,
    view: JobView,
    *,
    start_data: Mapping[str, Any] | None,
) -> bool:
    """Record the start of this delivery (INITIALIZED or RESUMED); True when resuming."""
    if view.status is Status.NEW:
        machine.attempt = 1
        machine.fire(Status.INITIALIZED, {"message": "Job initialized", **(start_data or {})})
        machine.fire(Status.STARTING, {"message": MEANING[Status.STARTING]})
        return False
    machine.attempt = view.attempt + 1
    machine.fire(
        Status.RESUMED,
        {
            "message": f"Resuming from {view.status.value} (attempt {machine.attempt})",
            "from_status": view.status.value,
        },
    )
    return True


@dataclass
class _Run:
    """One delivery walking its stages: what ran, what was skipped, and where it stopped."""

    machine: JobMachine
    job_dir: Path
    resumed: bool
    stop: StopRequest | None
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    current: Stage | None = None

    def deliver(
        self,
        stages: Sequence[Stage],
        *,
        finish: Finish,
        salvage: Salvage | None,
    ) -> Outcome:
        try:
            for stage in stages:
                self.current = stage
                # Read per stage: an earlier stage of this delivery may have recorded it.
                if not self._skip(stage, self.machine.view().stages.get(stage.name)):
                    self._run(stage)
            self.current = None
            final = finish(self.results)
            self.machine.fire(Status.COMPLETE, final)
            # The caller gets the result as built; the log keeps it redacted. (A presigned S3
            # URL carries the access key id: fine for the client, never for the log or UPDATES.)
            return self.outcome(result=final)
        except JobInterrupted as exc:
            message = str(exc) or "worker stopping"
            self.machine.fire(Status.INTERRUPTED, {"message": message, **self._at()})
            return self.outcome()
        except JobCancelled as exc:
            return self._cancelled(exc, salvage)
        except PublishDeferred as exc:
            return self._deferred(exc)
        except Exception as exc:  # every other failure becomes ERROR with a readable message
            return self._failed(exc)

    def context(self) -> StageContext:
        job_id = self.machine.log.job_id
        return StageContext(job_id, self.job_dir, dict(self.results), self.record, self.resumed)

    def record(self, payload: FactData) -> Event:
        return self.machine.record(payload)

    def _skip(self, stage: Stage, prior: dict[str, Any] | None) -> bool:
        """Skip `stage` when the log proves it done and its output still verifies."""
        if prior is None or not stage.verify(self.context(), prior):
            return False
        self.results[stage.name] = prior
        self.skipped.append(stage.name)
        # Once a later stage re-ran, the walk must stay legal: pass through this one.
        if self.machine.status not in (Status.RESUMED, stage.status):
            message = f"{stage.name}: already done"
            self.machine.fire(stage.status, {"message": message, "stage": stage.name})
        return True

    def _run(self, stage: Stage) -> None:
        if self.machine.status is not stage.status:
            self.machine.fire(stage.status, {"message": stage.describe(), "stage": stage.name})
        self._honour_stop(stage)
        result = stage.run(self.context())
        self.record(StageDone(stage=stage.name, result=result))
        self.results[stage.name] = result
        self.ran.append(stage.name)
        if stage.done_status is not None:
            self.machine.fire(stage.done_status, {"message": f"{stage.name} finished"})

    def _honour_stop(self, stage: Stage) -> None:
        if self.stop is None or not self.stop.requested:
            return
        raise self.stop.error(f"stopped before {stage.name}")

    def _cancelled(self, exc: JobCancelled, salvage: Salvage | None) -> Outcome:
        data: dict[str, Any] = {"message": str(exc) or "cancelled", **self._at()}
        if salvage is not None:
            data |= self._salvage(salvage)
        self.machine.fire(Status.CANCELLED, data)
        return self.outcome(result=data)

    def _salvage(self, salvage: Salvage) -> dict[str, Any]:
        """Publish what a cancelled job has; never let that failure hide the cancel."""
        if self.machine.status is not Status.UPLOADING and self.machine.can(Status.UPLOADING):
            self.machine.fire(Status.UPLOADING, {"message": "Publishing the latest saved LoRA"})
        try:
            published = salvage(self.context())
        except Exception as exc:  # the cancel stands; say why nothing was published
            return {"published": None, "salvage_error": f"{type(exc).__name__}: {exc}"}
        return {"published": published}

    def _deferred(self, exc: PublishDeferred) -> Outcome:
        """The destination takes no upload before `retry_at`: not a failure. INTERRUPTED, so the
        next delivery resumes at publish (training's STAGE_DONE still verifies)."""
        job_id = self.machine.log.job_id
        retry_at = datetime.fromtimestamp(exc.retry_at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        data: dict[str, Any] = {
            "message": f"{exc}; {deferred_retry(job_id, retry_at)}",
            **self._at(),
            "deferred": True,
            "retry_at": retry_at,
            "repo_id": exc.repo_id,
            "lora_path": exc.lora_path,
        }
        self.machine.fire(Status.INTERRUPTED, data)
        log.warning("publish deferred", job_id=job_id, retry_at=retry_at, repo_id=exc.repo_id)
        return self.outcome(result=data)

    def _failed(self, exc: Exception) -> Outcome:
        message = str(exc) if isinstance(exc, StageFailed) else self._internal(exc)
        event = self.machine.fire(Status.ERROR, {"error": message, **self._at()})
        log.error(
            "job failed",
            job_id=self.machine.log.job_id,
            status=event.status,
            attempt=event.attempt,
            error=event.data["error"],
            stage=self._at().get("stage"),
        )
        return self.outcome(error=str(event.data["error"]))

    def _at(self) -> dict[str, Any]:
        return {"stage": self.current.name} if self.current is not None else {}

    def _internal(self, exc: BaseException) -> str:
        where = f"stage {self.current.name}" if self.current is not None else "the runner"
        return f"{where} failed: {type(exc).__name__}: {exc}"

    def outcome(self, *, result: dict[str, Any] | None = None, error: str | None = None) -> Outcome:
        return _outcome(
            self.machine, result=result, error=error, ran=self.ran, skipped=self.skipped
        )


def deferred_retry(job_id: str, retry_at: str) -> str:
    """How a deferred publish is finished, without training again."""
    return (
        f"from {retry_at}, POST /retry/{job_id} publishes it without training again "
        "(RunPod keeps a job for /retry 30 minutes after /run ends, 1 "
        f'minute after /runsync); later, a new request with "resume_from": "{job_id}" and the '
        "same training values publishes it without training again"
    )


def _outcome(
    machine: JobMachine,
    *,
    result: dict[str, Any] | None = None,
    error: str | None = None,
    ran: list[str] | None = None,
    skipped: list[str] | None = None,
    from_log: bool = False,
) -> Outcome:
    view = fold(machine.log.events)
    return Outcome(
        job_id=machine.log.job_id,
        status=view.status,
        attempt=view.attempt,
        result=result,
        error=error,
        ran=list(ran or []),
        skipped=list(skipped or []),
        view=view,
        from_log=from_log,
    )
