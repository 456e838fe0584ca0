"""RunPod Serverless entry point. Thin on purpose: settings, progress, hand over, answer.

Everything a job does lives in `orchestrator.worker.handle` (CPU-testable); this file only binds
it to the SDK. The handler is async so RunPod's cancel reaches it (a sync handler cannot be
cancelled), and training runs in a subprocess that the worker stops with save_quit. Nothing
heavy is imported at module level: the worker's cold start pays only for what it needs.

`python handler.py` is also RunPod's local test mode (`test_input.json`, or `--test_input
'{...}'`): the SDK gives such a job the id `local_test` every time, so the handler runs it under
a fresh id, or every run after the first would answer from the first run's log.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Callable, MutableMapping
from datetime import UTC, datetime
from typing import Any

import structlog

from orchestrator.settings import Settings
from orchestrator.worker import WorkerOptions, handle

log = structlog.get_logger(__name__)
LOCAL_TEST_ID = "local_test"  # the SDK's id for a local test job that names none (rp_local.py)


def _options() -> WorkerOptions:
    return WorkerOptions(settings=Settings.from_env())


def local_job_id() -> str:
    """A fresh id for one local test run: sortable, readable, never reused."""
    return f"local-{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"


def as_run(job: dict[str, Any]) -> dict[str, Any]:
    """The job as the worker runs it: the SDK's fixed local test id becomes a fresh one (a real
    RunPod id is never `local_test`; an `id` given in test_input.json is kept)."""
    if job.get("id") != LOCAL_TEST_ID:
        return job
    fresh = local_job_id()
    log.info("local test job runs under a fresh id", job_id=fresh, sdk_id=LOCAL_TEST_ID)
    return {**job, "id": fresh}


async def handler(job: dict[str, Any]) -> dict[str, Any]:
    """RunPod calls this with {"id": ..., "input": {...}}."""
    import runpod  # noqa: PLC0415 - the SDK is loaded by the worker already; not at import

    # Progress goes to RUNPOD_WEBHOOK_POST_OUTPUT. The SDK's local modes (test input, dev
    # server) have none and post to a placeholder, logging an ERROR for every update.
    posts = bool(os.environ.get("RUNPOD_WEBHOOK_POST_OUTPUT"))
    send = progress_sender(job, runpod.serverless.progress_update) if posts else None
    return await handle(as_run(job), _options(), send)


def progress_sender(
    job: dict[str, Any], fallback: Callable[[dict[str, Any], Any], None]
) -> Callable[[dict[str, Any]], threading.Thread | None]:
    """Post progress for the SDK's job (its id, its URL) the way `progress_update` does, one
    thread per update, but keep the thread: the answer waits for the posts in flight instead
    of a fixed gap. An SDK without that thread target falls back to `progress_update`."""
    from runpod.serverless.modules import rp_progress  # noqa: PLC0415 - loaded with the SDK

    target = getattr(rp_progress, "_thread_target", None)

    def send(payload: dict[str, Any]) -> threading.Thread | None:
        if target is None:
            fallback(job, payload)
            return None
        thread = threading.Thread(target=target, args=(job, payload), daemon=True)
        thread.start()
        return thread

    return send


def sdk_log_level(env: MutableMapping[str, str] = os.environ) -> str:
    """The SDK's log level, INFO unless the user chose one, set before the SDK is imported.

    The SDK reads RUNPOD_LOG_LEVEL (then RUNPOD_DEBUG_LEVEL) once, at import, and defaults to
    DEBUG, where it prints every job input (local test mode), every handler output and progress
    payload: secrets and presigned URLs. DEBUG stays available, by setting it explicitly.
    """
    chosen = (env.get("RUNPOD_LOG_LEVEL") or env.get("RUNPOD_DEBUG_LEVEL") or "").strip()
    if not chosen:
        chosen = env["RUNPOD_LOG_LEVEL"] = "INFO"
    return chosen.upper()


def main() -> None:  # pragma: no cover - the worker process
    level = sdk_log_level()
    import runpod  # noqa: PLC0415 - after the level is in the environment
    from runpod.serverless.modules.rp_logger import RunPodLogger  # noqa: PLC0415

    from orchestrator.logs import LogSettings, configure_logging  # noqa: PLC0415

    sdk_log = RunPodLogger()
    if sdk_log.level != level:  # the SDK was imported before us (localpod's worker_boot)
        sdk_log.set_level(level)
    ours = LogSettings.from_env(os.environ)
    configure_logging(
        # The SDK prints JSON when RUNPOD_ENDPOINT_ID is set (a deployed worker, localpod):
        # so do we. A local test in a terminal reads better as text, on both sides.
        json_lines=True if os.environ.get("RUNPOD_ENDPOINT_ID") else None,
        level=ours.level,
        stdlib=True,
        debug_loggers=ours.debug_loggers,
    )
    if level in ("DEBUG", "TRACE"):
        log.warning(
            "the RunPod SDK logs at DEBUG: it prints job inputs (local test mode), results and "
            "progress payloads, secrets and presigned URLs included; unset RUNPOD_LOG_LEVEL",
            runpod_log_level=level,
        )
    runpod.serverless.start({"handler": handler})


if __name__ == "__main__":  # pragma: no cover - the worker process
    main()
