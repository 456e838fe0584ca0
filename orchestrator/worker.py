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
from dataclasses import dataclass
from types import FrameType
from typing import TYPE_CHECKING, Any

import structlog

from events.errors import LeaseHeld
from events.lease import FileLease
from events.vocabulary import Status
from orchestrator.progress import ProgressReporter
from orchestrator.request import RequestError, TrainingRequest, parse_request
from orchestrator.runner import Outcome, run_job
from orchestrator.settings import Settings
from stages.errors import ConfigError
from stages.training.config import preflight

if TYPE_CHECKING:  # the stages pull in boto3, huggingface_hub, google-genai: load per job
    from events.projections.base import MirrorSettings
    from events.projections.hub import HubMirror
    from events.projections.local import LocalMirror
    from events.store import EventLog
    from orchestrator.pipeline import Delivery
    from stages.publish.stage import PublishOptions

log = structlog.get_logger(__name__)

SendProgress = Callable[[dict[str, Any]], None]


@dataclass
class WorkerOptions:
    """Per-worker knobs; tests point them at loopback servers."""

    settings: Settings
    mirror_settings: MirrorSettings | None = None  # None: the settings' (DPS_MIRROR_*)
    publish_options: PublishOptions | None = None
    progress_every_s: float = 5.0
    stop_grace_s: float = 300.0
    mirror_close_s: float = 60.0
    captions_factory: Callable[[], Any] | None = None


def failed_response(error: str) -> dict[str, Any]:
    """The seed's error response: the error is always a string."""
    return {"status": "failed", "error": error}


def validate(raw: Any) -> TrainingRequest:
    """Parse and pre-check a request; RequestError/ConfigError carry the field path."""
    if not isinstance(raw, dict):
        raise RequestError([("input", "the request body must be a JSON object under 'input'")])
    request = parse_request(raw)
    preflight(request)
    return request


def _hub_repo_id(request: TrainingRequest, settings: Settings, job_id: str) -> str | None:
    spec = request.output.huggingface
    if request.output.method != "huggingface" or spec is None or spec.token is None:
        return None
    if spec.repo_id:
        return str(spec.repo_id)
    from huggingface_hub import HfApi  # noqa: PLC0415 - only Hub output needs it

    from stages.publish.hub import default_repo_id  # noqa: PLC0415

    user = HfApi(endpoint=settings.hub_endpoint, token=spec.token.get_secret_value()).whoami()
    return default_repo_id(str(user["name"]), request.model_type, job_id)


def make_mirror(
    request: TrainingRequest, job_id: str, options: WorkerOptions
) -> HubMirror | LocalMirror | None:
    """UPDATES/ in the output repo for Hub output, in the job folder for local output."""
    from events.projections.hub import HubMirror  # noqa: PLC0415
    from events.projections.local import LocalMirror  # noqa: PLC0415

    settings = options.settings
    job_dir = settings.root / "jobs" / job_id
    if request.output.method == "local":
        return LocalMirror(job_dir, job_id=job_id)
    try:
        repo_id = _hub_repo_id(request, settings, job_id)
    except Exception as exc:  # the mirror never fails a job; publishing will say what is wrong
        log.warning("no UPDATES mirror", job_id=job_id, error=type(exc).__name__)
        return None
    if repo_id is None:
        return None
    spec = request.output.huggingface
    assert spec is not None
    assert spec.token is not None
    return HubMirror(
        repo_id=repo_id,
        job_id=job_id,
        job_dir=job_dir,
        token=spec.token.get_secret_value(),
        endpoint=settings.hub_endpoint,
        settings=options.mirror_settings or settings.mirror,
        private=spec.private,
    )


@contextlib.contextmanager
def sigterm_stops(delivery: Delivery) -> Iterator[None]:
    """SIGTERM (scale-down, preemption) asks training to checkpoint and stop; the SDK's own
    handler still runs, so it drains and exits after this job answers."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)

    def on_term(signum: int, frame: FrameType | None) -> None:
        delivery.stop.set("interrupt", "the worker received SIGTERM (scale-down or preemption)")
        if callable(previous):
            previous(signum, frame)

    signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _with_fresh_s3_link(
    response: dict[str, Any], request: TrainingRequest, job_id: str
) -> dict[str, Any]:
    """The recorded S3 link has its access key id masked (the log never holds it): presign a
    new one for the same object."""
    from stages.publish.s3 import fresh_download_url  # noqa: PLC0415 - boto3 only for S3 jobs

    lora = next((f for f in response.get("files", []) if str(f).endswith(".safetensors")), None)
    if lora is None:
        return response
    url = fresh_download_url(request, job_id, str(lora))
    output = {**response.get("output", {}), "download_url": url, "safetensors_url": url}
    return {**response, "output": output}


def respond(
    outcome: Outcome,
    mirror_status: dict[str, Any] | None,
    request: TrainingRequest | None = None,
) -> dict[str, Any]:
    """The seed's response for how this delivery ended."""
    if outcome.status is Status.COMPLETE:
        recorded = dict((outcome.result or {}).get("response") or {})
        if mirror_status is not None:
            recorded["mirror"] = mirror_status
        if not recorded:
            return failed_response("the job completed but recorded no response")
        if outcome.from_log and request is not None and request.output.method == "s3":
            recorded = _with_fresh_s3_link(recorded, request, outcome.job_id)
        return recorded
    if outcome.status is Status.INTERRUPTED:
        step = (outcome.view.progress or {}).get("step")
        where = f" at step {step}" if step else ""
        return failed_response(
            f"the worker was stopped{where} (scale-down or preemption); the last checkpoint is "
            "kept on the volume: retry the same job id to resume from it"
        )
    if outcome.status is Status.CANCELLED:
        return failed_response("the job was cancelled")
    return failed_response(outcome.error or f"the job ended in {outcome.status.value}")


async def handle(
    job: dict[str, Any], options: WorkerOptions, send_progress: SendProgress | None = None
) -> dict[str, Any]:
    """Run one delivery of `job` ({"id", "input"}) and return the seed's response."""
    job_id = str(job.get("id") or "")
    try:
        request = validate(job.get("input"))
    except (RequestError, ConfigError) as exc:
        return failed_response(str(exc))
    from orchestrator.pipeline import Delivery, build_stages, finish, salvage  # noqa: PLC0415

    reporter = ProgressReporter(
        send_progress or (lambda _p: None), every_s=options.progress_every_s
    )
    delivery = Delivery(
        job_id=job_id,
        request=request,
        settings=options.settings,
        on_sample=reporter.on_sample,
        publish_options=options.publish_options,
        captions_factory=options.captions_factory,
        stop_grace_s=options.stop_grace_s,
    )
    mirror = make_mirror(request, job_id, options)

    def on_open(event_log: EventLog) -> None:
        if mirror is not None:
            mirror.attach(event_log)
            mirror.start()

    def work() -> Outcome:
        return _run_when_free(
            lambda lease: run_job(
                root=options.settings.root,
                lease=lease,
                job_id=job_id,
                stages=build_stages(delivery),
                request=request,
                secrets=request.secret_values(),
                explicit_resume=request.resume,
                start_data={
                    "model_type": request.model_type,
                    "model_name": request.model.display_name,
                },
                finish=finish(delivery),
                observers=[reporter.on_event],
                on_open=on_open,
                salvage=salvage(delivery),
                stop=delivery.stop,
            ),
            options.settings,
            job_id,
        )

    loop = asyncio.get_running_loop()
    future = loop.run_in_executor(None, work)
    with sigterm_stops(delivery):
        try:
            outcome = await asyncio.shield(future)
        except asyncio.CancelledError:
            # RunPod cancel or timeout: stop training (save_quit), publish what exists, record
            # CANCELLED, then let the SDK see the cancel. It posts no result for this job.
            delivery.stop.set("cancel", "cancelled by the client (RunPod cancel or timeout)")
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(future), options.stop_grace_s + 120)
            _close(mirror, options, reporter)
            raise
        except LeaseHeld as exc:  # the same job is live on another worker
            _close(mirror, options, reporter)
            return failed_response(str(exc))
        except Exception as exc:  # a bug or a lost lease: a string error, never a traceback
            log.exception("delivery failed", job_id=job_id)
            _close(mirror, options, reporter)
            return failed_response(f"internal error: {type(exc).__name__}: {exc}")
    status = _close(mirror, options, reporter)
    return respond(outcome, status, request)


def _run_when_free(run: Callable[[FileLease], Outcome], settings: Settings, job_id: str) -> Outcome:
    """Run once this job's lease is ours. A job delivered again after its worker died finds
    that worker's lease still live for up to one TTL: wait it out rather than fail."""
    job_dir = settings.root / "jobs" / job_id
    deadline = time.monotonic() + 2 * settings.lease_ttl_s + 5
    while True:
        try:
            return run(FileLease(job_dir, ttl_s=settings.lease_ttl_s))
        except LeaseHeld as held:
            if time.monotonic() > deadline:
                raise
            log.info("job is leased by another worker; waiting", job_id=job_id, owner=held.owner)
            time.sleep(min(max(held.seconds_left, 0.2) + 0.2, 5.0))


def _close(
    mirror: HubMirror | LocalMirror | None, options: WorkerOptions, reporter: ProgressReporter
) -> dict[str, Any] | None:
    status = mirror.close(options.mirror_close_s) if mirror is not None else None
    reporter.quiet()
    return status
