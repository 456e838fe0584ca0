"""One delivery of a job, as the RunPod handler runs it: validate, run the stages in a thread,
mirror and report progress, stop cleanly on cancel or SIGTERM, answer in the seed's shape.

The runner is synchronous and runs in a worker thread so the SDK's event loop stays free to
poll for stop signals and post results. The trainer is a subprocess in its own process group,
so a cancel or SIGTERM reaches it through `StopRequest` (save_quit, then the group).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import structlog

from events.errors import LeaseHeld
from events.lease import FileLease
from orchestrator.continuation import continuation
from orchestrator.errors import Problem, RequestError
from orchestrator.plan import JobPlan, plan_job
from orchestrator.progress import ProgressReporter
from orchestrator.request import parse_request
from orchestrator.response import STOPPED_BY_RUNPOD, failed_response, respond
from orchestrator.runner import Outcome, run_job
from orchestrator.settings import Settings
from stages.addresses import check_host
from stages.contract import StopRequest
from stages.errors import ConfigError, StageFailed
from stages.publish.local import target_problem
from stages.training.config import preflight

if TYPE_CHECKING:  # the stages pull in boto3, huggingface_hub, google-genai: load per job
    from events.projections.base import MirrorSettings
    from events.projections.hub import HubMirror
    from events.projections.local import LocalMirror
    from events.store import EventLog
    from orchestrator.pipeline import CaptionsFactory, Delivery
    from stages.publish.stage import PublishOptions

log = structlog.get_logger(__name__)

# Sends one progress update; returns the thread posting it, when it has one to wait for.
SendProgress = Callable[[dict[str, Any]], "threading.Thread | None"]


@dataclass
class WorkerOptions:
    """Per-worker knobs; tests point them at loopback servers."""

    settings: Settings
    mirror_settings: MirrorSettings | None = None  # None: the settings' (DPS_MIRROR_*)
    publish_options: PublishOptions | None = None
    progress_every_s: float = 5.0
    stop_grace_s: float = 300.0
    mirror_close_s: float | None = None  # None: the mirror settings' (5 s)
    captions_factory: CaptionsFactory | None = None


def validate(raw: Any, settings: Settings, job_id: str) -> JobPlan:
    """The job's plan from its input, once per delivery: the request parsed, pre-checked against
    diffusion-pipe's rules, and its destinations and URLs against this worker's (where results
    may go, which hosts a URL may reach). RequestError/ConfigError carry the field path; a job id
    that cannot name a folder is a RequestError too, before anything is written."""
    if not isinstance(raw, dict):
        raise RequestError([("input", "the request body must be a JSON object under 'input'")])
    request = parse_request(raw)
    try:
        plan = plan_job(request, settings, job_id)
    except ValueError as exc:  # the job id (events.store.validate_job_id)
        raise RequestError([("id", str(exc))]) from None
    problems = destination_problems(plan, settings)
    inherit, refused = continuation(plan, settings)
    problems += refused
    if problems:
        raise RequestError(problems, plan.secrets)
    preflight(plan.trainer)
    return replace(plan, inherit=inherit)


def destination_problems(plan: JobPlan, settings: Settings) -> list[Problem]:
    """Where the request sends results and which hosts it makes the worker reach, against the
    worker's rules (`stages.publish.local.target_problem`, `stages.addresses`)."""
    problems: list[Problem] = []
    destination = plan.publish.destination
    if destination.method == "local" and destination.local_path is not None:
        why = target_problem(
            destination.local_path,
            plan.job_id,
            root=settings.root,
            allowed=settings.local_output_roots,
        )
        if why is not None:
            problems.append(("output.local.path", why))
    urls = [(f"dataset.{s.field}", s.url) for s in plan.dataset.sources]
    if destination.method == "s3" and destination.s3 is not None and destination.s3.endpoint_url:
        urls.append(("output.s3.endpoint_url", destination.s3.endpoint_url))
    for field, url in urls:
        if not url.startswith(("http://", "https://")):
            continue  # hf:// goes to the Hub endpoint the worker is configured with
        try:
            check_host(url, field, settings.addresses)
        except StageFailed as exc:
            problems.append((field, str(exc).removeprefix(f"{field}: ")))
    return problems


@contextlib.contextmanager
def sigterm_stops(stop: StopRequest) -> Iterator[None]:
    """SIGTERM (scale-down, preemption) asks training to checkpoint and stop; the SDK's own
    handler still runs, so it drains and exits after this job answers."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)

    def on_term(signum: int, frame: FrameType | None) -> None:
        stop.set("interrupt", "the worker received SIGTERM (scale-down or preemption)")
        if callable(previous):
            previous(signum, frame)

    signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


async def handle(
    job: dict[str, Any], options: WorkerOptions, send_progress: SendProgress | None = None
) -> dict[str, Any]:
    """Run one delivery of `job` ({"id", "input"}) and return the seed's response."""
    try:
        plan = validate(job.get("input"), options.settings, str(job.get("id") or ""))
    except (RequestError, ConfigError) as exc:
        return failed_response(str(exc))
    from orchestrator.mirrors import make_mirror  # noqa: PLC0415 - the stages load per job
    from orchestrator.pipeline import Delivery  # noqa: PLC0415

    reporter = ProgressReporter(send_progress, every_s=options.progress_every_s)
    delivery = Delivery(
        plan=plan,
        settings=options.settings,
        on_sample=reporter.on_sample,
        publish_options=options.publish_options,
        captions_factory=options.captions_factory,
        stop_grace_s=options.stop_grace_s,
    )
    mirror = make_mirror(plan, options.settings, options.mirror_settings)

    def close() -> dict[str, Any] | None:
        reporter.stop()  # the last status (an ERROR's message) goes out now
        status = mirror.close(options.mirror_close_s) if mirror is not None else None
        reporter.quiet()  # what is left of the gap before the final result
        return status

    future = asyncio.get_running_loop().run_in_executor(
        None, lambda: _run(delivery, mirror, reporter)
    )
    with sigterm_stops(delivery.stop):
        try:
            outcome = await asyncio.shield(future)
        except asyncio.CancelledError:
            # RunPod's stop channel: a cancel or the execution timeout, which the worker cannot
            # tell apart (the SDK gets only the job id). Stop training (save_quit), publish what
            # exists, record CANCELLED, then let the SDK see it. It posts no result for the job.
            delivery.stop.set("cancel", STOPPED_BY_RUNPOD)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(future), options.stop_grace_s + 120)
            close()
            raise
        except LeaseHeld as exc:  # the same job is live on another worker
            close()
            return failed_response(str(exc))
        except Exception as exc:  # a bug or a lost lease: a string error, never a traceback
            log.exception("delivery failed", job_id=plan.job_id)
            close()
            return failed_response(f"internal error: {type(exc).__name__}: {exc}")
    status = close()
    destination = plan.publish.destination
    return respond(outcome, status, destination.s3 if destination.method == "s3" else None)


def _run(
    delivery: Delivery, mirror: HubMirror | LocalMirror | None, reporter: ProgressReporter
) -> Outcome:
    """The delivery's runner call, once the job's lease is free (in the executor thread)."""
    from orchestrator.pipeline import build_stages, finish, salvage  # noqa: PLC0415

    plan, settings = delivery.plan, delivery.settings

    def on_open(event_log: EventLog) -> None:
        if mirror is not None:
            mirror.attach(event_log)
            mirror.start()

    try:
        return _run_when_free(
            lambda lease: run_job(
                root=settings.root,
                lease=lease,
                job_id=plan.job_id,
                stages=build_stages(delivery),
                secrets=plan.secrets,
                start_data=start_data(plan),
                finish=finish(delivery),
                observers=[reporter.on_event],
                on_open=on_open,
                salvage=salvage(delivery),
                stop=delivery.stop,
            ),
            settings,
            plan.job_dir,
            delivery.stop,
        )
    finally:
        delivery.end()  # a failed job must not go on downloading its model


def start_data(plan: JobPlan) -> dict[str, Any]:
    """What the INITIALIZED event says of the job: its model, and where it continues from."""
    data: dict[str, Any] = {
        "model_type": plan.entry.model_type,
        "model_name": plan.entry.display_name,
    }
    if plan.inherit is not None:
        data |= {"resume_from": plan.inherit.origin_id, "resume_mode": plan.inherit.mode}
    return data


def _run_when_free(
    run: Callable[[FileLease], Outcome],
    settings: Settings,
    job_dir: Path,
    stop: StopRequest | None = None,
) -> Outcome:
    """Run once this job's lease is ours.

    A job delivered again after its worker died finds that worker's lease live for up to one
    TTL: wait it out. A lease that keeps being renewed is a live delivery of the same job (RunPod
    delivered it twice): wait for it to end and then answer from the log, rather than post a
    FAILED that could decide the job's status on the platform. Only a lease that is neither
    renewed nor released within the patience, or a stop, ends the wait (LeaseHeld)."""
    patience = 2 * settings.lease_ttl_s + 5
    deadline = time.monotonic() + patience
    seen_expiry = float("-inf")
    next_log = 0.0
    while True:
        try:
            return run(FileLease(job_dir, worker=settings.worker_name, ttl_s=settings.lease_ttl_s))
        except LeaseHeld as held:
            now = time.monotonic()
            expiry = time.time() + held.seconds_left
            if expiry > seen_expiry + _RENEWAL_SLACK_S:
                if seen_expiry != float("-inf"):  # renewed since we last looked: alive
                    deadline = now + patience
                seen_expiry = expiry
            if now > deadline or (stop is not None and stop.requested):
                raise
            if now >= next_log:
                log.info(
                    "job is leased by another worker; waiting",
                    job_id=job_dir.name,
                    owner=held.owner,
                )
                next_log = now + _WAIT_LOG_EVERY_S
            time.sleep(min(max(held.seconds_left, 0.2) + 0.2, 5.0))


_RENEWAL_SLACK_S = 0.5  # an expiry that moved by more than this was renewed, not re-read
_WAIT_LOG_EVERY_S = 60.0
