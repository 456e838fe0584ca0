"""The runner: replay a job's log, skip what it proves done, run the rest, record the outcome.

Every delivery of a job goes through `run_job`. It takes the job's lease, replays the log and
then either returns the recorded result (COMPLETE), declines (ERROR/CANCELLED without an
explicit resume), starts (a new job: INITIALIZED) or resumes (RESUMED, attempt N+1). Stages run
in order; one whose STAGE_DONE is in the log and whose output still verifies is skipped.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from events.fold import JobView, fold
from events.lease import FileLease
from events.model import Event
from events.store import EventLog, EventStore, job_path
from events.vocabulary import HALTED, MEANING, Fact, Status
from orchestrator.machine import JobMachine

log = structlog.get_logger(__name__)


class StageFailed(Exception):
    """A stage's error meant for the user: its message is recorded and returned as is."""


class JobInterrupted(Exception):
    """The worker is being stopped (SIGTERM, preemption): record INTERRUPTED, resume later."""


class JobCancelled(Exception):
    """The client cancelled the job: record CANCELLED."""


@dataclass(frozen=True)
class StageContext:
    """What a stage may use: its folder, the request, earlier results, and a way to record."""

    job_id: str
    job_dir: Path
    request: Any
    results: Mapping[str, dict[str, Any]]
    record: Callable[[str, dict[str, Any]], Event]  # record a fact (PROGRESS, CHECKPOINT...)
    resumed: bool

    def progress(self, **data: Any) -> Event:
        return self.record(Fact.PROGRESS.value, data)


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


def run_job(
    *,
    root: Path,
    job_id: str,
    stages: Sequence[Stage],
    request: Any = None,
    secrets: Iterable[str] = (),
    explicit_resume: bool = False,
    store: EventStore | None = None,
    lease: FileLease | None = None,
    start_data: Mapping[str, Any] | None = None,
    finish: Callable[[Mapping[str, dict[str, Any]]], dict[str, Any]] = _default_finish,
    observers: Sequence[Callable[[Event], None]] = (),
    on_open: Callable[[EventLog], None] | None = None,
    salvage: Salvage | None = None,
) -> Outcome:
    """Run (or resume, or answer from the log) one delivery of a job. See the module doc.

    `observers` see every event once it is durable (live progress); `on_open` gets the log
    before this delivery appends anything (a mirror catches up, then follows). `salvage` runs
    when the client cancels: it publishes what exists (the latest saved LoRA) while the job is
    UPLOADING, and its result goes into the CANCELLED event.
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
        return _deliver(
            machine,
            job_id=job_id,
            job_dir=job_dir,
            stages=stages,
            request=request,
            explicit_resume=explicit_resume,
            start_data=start_data,
            finish=finish,
            salvage=salvage,
        )
    finally:
        lease.release()


def _begin(
    machine: JobMachine,
    view: JobView,
    *,
    explicit_resume: bool,
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
            "explicit": explicit_resume,
        },
    )
    return True


def _deliver(
    machine: JobMachine,
    *,
    job_id: str,
    job_dir: Path,
    stages: Sequence[Stage],
    request: Any,
    explicit_resume: bool,
    start_data: Mapping[str, Any] | None,
    finish: Callable[[Mapping[str, dict[str, Any]]], dict[str, Any]],
    salvage: Salvage | None,
) -> Outcome:
    view = machine.view()
    bound = log.bind(job_id=job_id, status=view.status.value, attempt=view.attempt)
    if view.status is Status.COMPLETE:
        bound.info("job already complete; returning the recorded result")
        return _outcome(machine, result=view.result, from_log=True)
    if view.status in HALTED and not explicit_resume:
        bound.info("job stopped earlier; not resumed without an explicit request")
        return _outcome(machine, error=view.error)

    resumed = _begin(machine, view, explicit_resume=explicit_resume, start_data=start_data)
    results: dict[str, dict[str, Any]] = {}
    ran: list[str] = []
    skipped: list[str] = []
    current: Stage | None = None

    def record(kind: str, data: dict[str, Any]) -> Event:
        if kind not in Fact.__members__:
            raise ValueError(f"stages record facts only, not {kind}")
        return machine.fire(kind, data)

    try:
        for stage in stages:
            current = stage
            ctx = StageContext(job_id, job_dir, request, dict(results), record, resumed)
            prior = view.stages.get(stage.name)
            if prior is not None and stage.verify(ctx, prior):
                results[stage.name] = prior
                skipped.append(stage.name)
                # Once a later stage re-ran, the walk must stay legal: pass through this one.
                if machine.status not in (Status.RESUMED, stage.status):
                    machine.fire(
                        stage.status,
                        {"message": f"{stage.name}: already done", "stage": stage.name},
                    )
                continue
            if machine.status is not stage.status:
                machine.fire(stage.status, {"message": stage.describe(), "stage": stage.name})
            result = stage.run(ctx)
            machine.fire(Fact.STAGE_DONE, {"stage": stage.name, "result": result})
            results[stage.name] = result
            ran.append(stage.name)
            if stage.done_status is not None:
                machine.fire(stage.done_status, {"message": f"{stage.name} finished"})
        current = None
        final = finish(results)
        machine.fire(Status.COMPLETE, final)
        # The caller gets the result as built; the log keeps it redacted. (A presigned S3 URL
        # carries the access key id: fine for the client, never for the log or UPDATES.)
        return _outcome(machine, result=final, ran=ran, skipped=skipped)
    except JobInterrupted as exc:
        machine.fire(Status.INTERRUPTED, {"message": str(exc) or "worker stopping", **_at(current)})
        return _outcome(machine, ran=ran, skipped=skipped)
    except JobCancelled as exc:
        data: dict[str, Any] = {"message": str(exc) or "cancelled", **_at(current)}
        if salvage is not None:
            ctx = StageContext(job_id, job_dir, request, dict(results), record, resumed=resumed)
            data |= _salvage(machine, salvage, ctx)
        machine.fire(Status.CANCELLED, data)
        return _outcome(machine, result=data, ran=ran, skipped=skipped)
    except Exception as exc:  # every other failure becomes ERROR with a readable message
        message = str(exc) if isinstance(exc, StageFailed) else _internal(current, exc)
        event = machine.fire(Status.ERROR, {"error": message, **_at(current)})
        bound.error("job failed", error=event.data["error"], stage=_at(current).get("stage"))
        return _outcome(machine, error=str(event.data["error"]), ran=ran, skipped=skipped)


def _salvage(machine: JobMachine, salvage: Salvage, ctx: StageContext) -> dict[str, Any]:
    """Publish what a cancelled job has; never let that failure hide the cancel."""
    if machine.status is not Status.UPLOADING and machine.can(Status.UPLOADING):
        machine.fire(Status.UPLOADING, {"message": "Publishing the latest saved LoRA"})
    try:
        published = salvage(ctx)
    except Exception as exc:  # the cancel stands; say why nothing was published
        return {"published": None, "salvage_error": f"{type(exc).__name__}: {exc}"}
    return {"published": published}


def _at(stage: Stage | None) -> dict[str, Any]:
    return {"stage": stage.name} if stage is not None else {}


def _internal(stage: Stage | None, exc: BaseException) -> str:
    where = f"stage {stage.name}" if stage is not None else "the runner"
    return f"{where} failed: {type(exc).__name__}: {exc}"


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
        ran=ran or [],
        skipped=skipped or [],
        view=view,
        from_log=from_log,
    )
