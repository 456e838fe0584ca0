"""The job board: every job, queue and worker assignment of one local endpoint.

Pure state behind one lock and one condition; no sockets, no processes. The HTTP layer and
the process supervisor both call into it, and long-polls (job-take, job-stop, runsync) wait
on its condition so that a change wakes them at once.

RunPod's platform rules live here too, each a setting with RunPod's default (localpod/README.md):
the default execution timeout and the policy bounds, the job TTL, and how long a finished job's
result is kept. Job times come from an injectable `clock`, so expiry is testable without sleeping;
long-poll waits use real time.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

IN_QUEUE = "IN_QUEUE"
IN_PROGRESS = "IN_PROGRESS"
COMPLETED = "COMPLETED"
FAILED = "FAILED"
CANCELLED = "CANCELLED"
TIMED_OUT = "TIMED_OUT"
FINAL_STATUSES = frozenset({COMPLETED, FAILED, CANCELLED, TIMED_OUT})

# RunPod's defaults and bounds (docs.runpod.io serverless/endpoints/send-requests, "Execution
# policies" and "Result retention", 2026-08).
DEFAULT_EXECUTION_TIMEOUT_S = 600.0
DEFAULT_TTL_S = 86_400.0
RUN_RETENTION_S = 1_800.0
RUNSYNC_RETENTION_S = 60.0
SEVEN_DAYS_MS = 7 * 86_400_000
EXECUTION_TIMEOUT_BOUNDS_MS = (5_000, SEVEN_DAYS_MS)
TTL_BOUNDS_MS = (10_000, SEVEN_DAYS_MS)


class BadRequest(ValueError):
    """A client request the endpoint refuses (answered with HTTP 400)."""


@dataclass
class Job:
    id: str
    input: Any
    submitted_at: float  # the board's clock; the TTL counts from here
    webhook: str | None = None
    execution_timeout_s: float | None = None
    ttl_s: float | None = None
    sync: bool = False  # /runsync: its result is kept for the shorter retention
    status: str = IN_QUEUE
    output: Any = None
    error: str | None = None
    stream: list[Any] = field(default_factory=list)
    started_at: float | None = None  # first delivery: delayTime ends here
    delivered_at: float | None = None  # current delivery: the execution timeout counts from here
    finished_at: float | None = None
    worker_id: str | None = None
    deliveries: int = 0
    redeliveries: int = 0

    def view(self, now: float) -> dict[str, Any]:
        """The /status body, shaped as RunPod's, at time `now` (the board's clock)."""
        delay_end = self.started_at if self.started_at is not None else now
        body: dict[str, Any] = {
            "id": self.id,
            "status": self.status,
            "delayTime": int((delay_end - self.submitted_at) * 1000),
            "executionTime": 0,
        }
        if self.started_at is not None:
            end = self.finished_at if self.finished_at is not None else now
            body["executionTime"] = int((end - self.started_at) * 1000)
        if self.worker_id is not None:
            body["workerId"] = self.worker_id
        if self.output is not None:
            body["output"] = self.output
        if self.error is not None:
            body["error"] = self.error
        return body


@dataclass
class WorkerSeat:
    """What the board knows of one worker id: its jobs, pending stops, last heartbeat."""

    id: str
    jobs: set[str] = field(default_factory=set)
    stops: list[str] = field(default_factory=list)
    last_ping: float | None = None
    last_ping_jobs: str = ""
    draining: bool = False  # told to shut down: it gets no new jobs


@dataclass
class Events:
    """What the endpoint recorded, for tests and debugging."""

    progress: dict[str, list[Any]] = field(default_factory=dict)  # job id -> progress payloads
    deliveries: dict[str, list[str]] = field(default_factory=dict)  # job id -> worker ids
    results: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # final bodies
    ignored: list[tuple[str, str, str]] = field(default_factory=list)  # (worker, job, why)
    stop_signals: dict[str, list[str]] = field(default_factory=dict)  # worker id -> job ids
    worker_exits: list[tuple[str, int | None]] = field(default_factory=list)
    expired: list[tuple[str, str]] = field(default_factory=list)  # (job id, why it was removed)
    webhooks: dict[str, list[str]] = field(default_factory=dict)  # job id -> attempt outcomes


class JobBoard:
    """Thread-safe job state for one endpoint.

    `default_execution_timeout_s` applies to a request without `policy.executionTimeout`, and
    `default_ttl_s` to one without `policy.ttl` (None: no limit). A finished job is removed
    `run_retention_s` (`/run`) or `runsync_retention_s` (`/runsync`) after it ended, and any job
    when its TTL has passed since submission: from then on it is unknown (404), and a job still
    running gets a stop signal.
    """

    def __init__(
        self,
        *,
        max_redeliveries: int = 3,
        default_execution_timeout_s: float | None = DEFAULT_EXECUTION_TIMEOUT_S,
        default_ttl_s: float | None = DEFAULT_TTL_S,
        run_retention_s: float = RUN_RETENTION_S,
        runsync_retention_s: float = RUNSYNC_RETENTION_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_redeliveries = max_redeliveries
        self.default_execution_timeout_s = default_execution_timeout_s
        self.default_ttl_s = default_ttl_s
        self.run_retention_s = run_retention_s
        self.runsync_retention_s = runsync_retention_s
        self.clock = clock
        self.jobs: dict[str, Job] = {}
        self.gone: dict[str, str] = {}  # removed job id -> why: late posts are ignored, not 404
        self.queue: deque[str] = deque()
        self.seats: dict[str, WorkerSeat] = {}
        self.events = Events()
        self.retried = 0
        self.closed = False
        self.cond = threading.Condition()

    # ---- client side -------------------------------------------------------------------

    def submit(self, body: Any, *, sync: bool = False) -> Job:
        if not isinstance(body, dict) or "input" not in body:
            raise BadRequest("the request body must be a JSON object with an 'input' field")
        policy = body.get("policy") or {}
        if not isinstance(policy, dict):
            raise BadRequest("'policy' must be an object")
        timeout_ms = _policy_ms(policy, "executionTimeout", EXECUTION_TIMEOUT_BOUNDS_MS)
        ttl_ms = _policy_ms(policy, "ttl", TTL_BOUNDS_MS)
        webhook = body.get("webhook")
        with self.cond:
            job = Job(
                id=("sync-" if sync else "") + str(uuid.uuid4()),
                input=body["input"],
                submitted_at=self.clock(),
                webhook=webhook if isinstance(webhook, str) else None,
                execution_timeout_s=(
                    self.default_execution_timeout_s if timeout_ms is None else timeout_ms / 1000
                ),
                ttl_s=self.default_ttl_s if ttl_ms is None else ttl_ms / 1000,
                sync=sync,
            )
            self.jobs[job.id] = job
            self.queue.append(job.id)
            self.cond.notify_all()
        return job

    def view(self, job_id: str) -> dict[str, Any] | None:
        with self.cond:
            now = self._sweep()
            job = self.jobs.get(job_id)
            return None if job is None else job.view(now)

    def gone_reason(self, job_id: str) -> str | None:
        """Why a job that existed is unknown now (its TTL or result retention passed)."""
        with self.cond:
            self._sweep()
            return self.gone.get(job_id)

    def cancel(self, job_id: str) -> dict[str, Any] | None:
        with self.cond:
            self._sweep()
            job = self.jobs.get(job_id)
            if job is None:
                return None
            if job.status == IN_QUEUE:
                self.queue.remove(job.id)
                self._finish(job, CANCELLED)
            elif job.status == IN_PROGRESS:
                self._stop_on_worker(job)
                self._finish(job, CANCELLED)
            return {"id": job.id, "status": job.status}

    def retry(self, job_id: str) -> dict[str, Any] | None:
        """/retry: a FAILED or TIMED_OUT job queued again, same id and input. None when the job
        is unknown, which includes one whose result retention has passed (RunPod: "Once
        expired, jobs cannot be retried")."""
        with self.cond:
            self._sweep()
            job = self.jobs.get(job_id)
            if job is None:
                return None
            if job.status not in (FAILED, TIMED_OUT):
                raise BadRequest(f"only FAILED or TIMED_OUT jobs can be retried, not {job.status}")
            self._requeue(job, front=False)
            return {"id": job.id, "status": job.status}

    def redeliver(self, job_id: str) -> dict[str, Any] | None:
        """Queue a job again with the same id and input, whatever its status (RunPod can
        deliver a finished job again; tests use this to prove the worker answers from its log)."""
        with self.cond:
            self._sweep()
            job = self.jobs.get(job_id)
            if job is None:
                return None
            self._requeue(job, front=True)
            return {"id": job.id, "status": job.status}

    def purge_queue(self) -> int:
        with self.cond:
            self._sweep()
            removed = list(self.queue)
            self.queue.clear()
            for job_id in removed:
                self._finish(self.jobs[job_id], CANCELLED)
            return len(removed)

    def stream_chunks(self, job_id: str) -> dict[str, Any] | None:
        """/stream: the chunks posted since the last call, then forgotten."""
        with self.cond:
            self._sweep()
            job = self.jobs.get(job_id)
            if job is None:
                return None
            chunks, job.stream = job.stream, []
            return {"id": job.id, "status": job.status, "stream": chunks}

    def health(self, *, idle: int, running: int) -> dict[str, Any]:
        with self.cond:
            self._sweep()
            counts = {s: 0 for s in (COMPLETED, FAILED, IN_PROGRESS, IN_QUEUE)}
            for job in self.jobs.values():
                # RunPod's /health has no timed-out counter; a timeout is a failure.
                key = FAILED if job.status == TIMED_OUT else job.status
                if key in counts:
                    counts[key] += 1
            return {
                "jobs": {
                    "completed": counts[COMPLETED],
                    "failed": counts[FAILED],
                    "inProgress": counts[IN_PROGRESS],
                    "inQueue": counts[IN_QUEUE],
                    "retried": self.retried,
                },
                "workers": {"idle": idle, "running": running},
            }

    def wait_for(
        self, job_id: str, statuses: Iterable[str] = FINAL_STATUSES, timeout: float = 30.0
    ) -> dict[str, Any]:
        """Block until the job reaches one of `statuses`; its view, or TimeoutError."""
        wanted = frozenset(statuses)
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                now = self._sweep()
                job = self.jobs.get(job_id)
                if job is None:
                    raise KeyError(job_id)
                if job.status in wanted:
                    return job.view(now)
                left = deadline - time.monotonic()
                if left <= 0 or self.closed:
                    raise TimeoutError(f"job {job_id} is {job.status}, not in {sorted(wanted)}")
                self.cond.wait(left)

    # ---- worker side -------------------------------------------------------------------

    def seat(self, worker_id: str) -> WorkerSeat:
        """The worker's record; created on first sight, so external workers work too."""
        seat = self.seats.get(worker_id)
        if seat is None:
            seat = self.seats[worker_id] = WorkerSeat(worker_id)
        return seat

    def take(self, worker_id: str, max_jobs: int, hold_s: float) -> list[dict[str, Any]]:
        """job-take: up to `max_jobs` queued jobs, waiting up to `hold_s` for one."""
        deadline = time.monotonic() + hold_s
        with self.cond:
            seat = self.seat(worker_id)
            while not self.queue and not seat.draining and not self.closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.cond.wait(left)
            now = self._sweep()  # a job whose TTL passed in the queue is never delivered
            taken: list[dict[str, Any]] = []
            while self.queue and len(taken) < max_jobs and not seat.draining and not self.closed:
                job = self.jobs[self.queue.popleft()]
                job.status = IN_PROGRESS
                job.worker_id = worker_id
                job.started_at = job.started_at if job.started_at is not None else now
                job.delivered_at = now
                job.deliveries += 1
                seat.jobs.add(job.id)
                self.events.deliveries.setdefault(job.id, []).append(worker_id)
                taken.append({"id": job.id, "input": job.input})
            if taken:
                self.cond.notify_all()
            return taken

    def take_stops(self, worker_id: str, hold_s: float) -> list[str]:
        """job-stop: pending stop ids for this worker, waiting up to `hold_s` for one."""
        deadline = time.monotonic() + hold_s
        with self.cond:
            seat = self.seat(worker_id)
            while not seat.stops and not self.closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.cond.wait(left)
            stops, seat.stops = seat.stops, []
            return stops

    def post(self, worker_id: str, job_id: str, body: Any) -> Job | None:
        """job-done: a progress update or the final result. The job, when final now."""
        if not isinstance(body, dict):
            raise BadRequest("job-done body must be a JSON object")
        with self.cond:
            self._sweep()
            if job_id in self.gone:
                self.events.ignored.append((worker_id, job_id, self.gone[job_id]))
                return None
            job = self.jobs.get(job_id)
            if job is None:
                raise KeyError(job_id)
            why = self._stale(worker_id, job)
            if why:
                # Late progress threads, cancelled or timed-out jobs, superseded deliveries.
                self.events.ignored.append((worker_id, job_id, why))
                return None
            if body.get("status") == IN_PROGRESS:
                job.output = body.get("output")
                self.events.progress.setdefault(job_id, []).append(job.output)
                self.cond.notify_all()
                return None
            self.events.results.setdefault(job_id, []).append(body)
            error = body.get("error")
            job.output = body.get("output")
            if error:
                job.error = error if isinstance(error, str) else json.dumps(error)
                self._finish(job, FAILED)
            else:
                self._finish(job, COMPLETED)
            return job

    def post_stream(self, worker_id: str, job_id: str, body: Any) -> None:
        with self.cond:
            self._sweep()
            if job_id in self.gone:
                return
            job = self.jobs.get(job_id)
            if job is None:
                raise KeyError(job_id)
            if self._stale(worker_id, job):
                return
            chunk = body.get("output") if isinstance(body, dict) else body
            job.stream.append({"output": chunk})
            self.cond.notify_all()

    def ping(self, worker_id: str, job_ids: str) -> None:
        with self.cond:
            seat = self.seat(worker_id)
            seat.last_ping = self.clock()
            seat.last_ping_jobs = job_ids

    def record_webhook(self, job_id: str, outcome: str) -> None:
        """One webhook attempt's outcome ('200', 'HTTP 503', 'ConnectError'), for tests."""
        with self.cond:
            self.events.webhooks.setdefault(job_id, []).append(outcome)
            self.cond.notify_all()

    # ---- supervisor side ---------------------------------------------------------------

    def worker_gone(self, worker_id: str, returncode: int | None) -> list[str]:
        """A worker process ended: redeliver (or fail) its unfinished jobs. Their ids."""
        with self.cond:
            self.events.worker_exits.append((worker_id, returncode))
            seat = self.seats.pop(worker_id, None)
            if seat is None:
                return []
            orphans = sorted(seat.jobs)
            for job_id in orphans:
                job = self.jobs.get(job_id)
                if job is None:  # removed by its TTL meanwhile
                    continue
                if job.redeliveries < self.max_redeliveries:
                    job.redeliveries += 1
                    # Front of the queue: it was accepted before anything queued since.
                    self._requeue(job, front=True)
                else:
                    job.error = (
                        f"worker {worker_id} exited (code {returncode}) during the job, "
                        f"after {job.redeliveries} redeliveries"
                    )
                    self._finish(job, FAILED)
            self.cond.notify_all()
            return orphans

    def expire(self, *, ping_timeout_s: float | None) -> tuple[list[str], list[str]]:
        """Enforce execution timeouts, TTLs and result retention; find busy workers whose
        heartbeat stopped.

        Returns (timed-out job ids, silent worker ids); the caller kills silent workers,
        and their exit redelivers the jobs.
        """
        silent: list[str] = []
        with self.cond:
            before = {j.id for j in self.jobs.values() if j.status == TIMED_OUT}
            now = self._sweep()
            timed_out = [
                j.id for j in self.jobs.values() if j.status == TIMED_OUT and j.id not in before
            ]
            if ping_timeout_s is not None:
                for seat in self.seats.values():
                    if not seat.jobs:
                        continue
                    delivered = max(self.jobs[j].delivered_at or 0.0 for j in seat.jobs)
                    last = max(seat.last_ping or 0.0, delivered)
                    if now - last > ping_timeout_s:
                        silent.append(seat.id)
        return timed_out, silent

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify_all()

    # ---- internals (call with the lock held) -------------------------------------------

    def _sweep(self) -> float:
        """Apply the clock's rules to every job: execution timeouts, then TTLs and result
        retention. Called by every entry point, so no answer shows a job past its limits
        however late the supervisor runs. Returns the time it used."""
        now = self.clock()
        for job in list(self.jobs.values()):
            limit = job.execution_timeout_s
            if job.status == IN_PROGRESS and limit is not None and _ran(job, now) > limit:
                self._stop_on_worker(job)
                job.error = f"execution timeout of {limit:g} s exceeded"
                self._finish(job, TIMED_OUT, now)
            why = self._expiry(job, now)
            if why:
                self._remove(job, why)
        return now

    def _expiry(self, job: Job, now: float) -> str:
        """Why `job` must be removed at `now`, or ''."""
        if job.ttl_s is not None and now - job.submitted_at > job.ttl_s:
            return f"its ttl of {job.ttl_s:g} s since submission has passed"
        if job.status in FINAL_STATUSES and job.finished_at is not None:
            keep = self.runsync_retention_s if job.sync else self.run_retention_s
            if now - job.finished_at > keep:
                route = "/runsync" if job.sync else "/run"
                return f"the {keep:g} s result retention of {route} after it ended has passed"
        return ""

    def _remove(self, job: Job, why: str) -> None:
        """RunPod deletes an expired job whatever its state: /status answers 404 from then on,
        and a job still running is stopped on its worker."""
        if job.status == IN_QUEUE and job.id in self.queue:
            self.queue.remove(job.id)
        elif job.status == IN_PROGRESS:
            self._stop_on_worker(job)
        if job.worker_id and job.worker_id in self.seats:
            self.seats[job.worker_id].jobs.discard(job.id)
        del self.jobs[job.id]
        self.gone[job.id] = why
        self.events.expired.append((job.id, why))
        self.cond.notify_all()

    def _stale(self, worker_id: str, job: Job) -> str:
        if job.status != IN_PROGRESS:
            return f"job is {job.status}"
        if job.worker_id != worker_id:
            return f"job is delivered to {job.worker_id}"
        return ""

    def _stop_on_worker(self, job: Job) -> None:
        seat = self.seats.get(job.worker_id or "")
        if seat is not None:
            seat.jobs.discard(job.id)
            seat.stops.append(job.id)
            self.events.stop_signals.setdefault(seat.id, []).append(job.id)

    def _requeue(self, job: Job, *, front: bool) -> None:
        if job.worker_id and job.worker_id in self.seats:
            self.seats[job.worker_id].jobs.discard(job.id)
        job.status = IN_QUEUE
        job.output = job.error = None
        job.worker_id = None
        job.delivered_at = job.finished_at = None
        self.retried += 1
        if front:
            self.queue.appendleft(job.id)
        else:
            self.queue.append(job.id)
        self.cond.notify_all()

    def _finish(self, job: Job, status: str, now: float | None = None) -> None:
        job.status = status
        job.finished_at = self.clock() if now is None else now
        if job.worker_id and job.worker_id in self.seats:
            self.seats[job.worker_id].jobs.discard(job.id)
        self.cond.notify_all()


def _policy_ms(policy: dict[str, Any], name: str, bounds: tuple[int, int]) -> int | float | None:
    """A policy duration in milliseconds, checked against RunPod's bounds; None when absent."""
    value = policy.get(name)
    if value is None:
        return None
    low, high = bounds
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise BadRequest(
            f"policy.{name} must be a number of milliseconds from {low} to {high} "
            f"({low // 1000} s to 7 days), got {value!r}"
        )
    return value


def _ran(job: Job, now: float) -> float:
    """Seconds the current delivery has run: the execution timeout counts from it."""
    return 0.0 if job.delivered_at is None else now - job.delivered_at
