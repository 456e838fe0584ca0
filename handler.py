"""RunPod Serverless entry point. Thin on purpose: settings, progress, hand over, answer.

Everything a job does lives in `orchestrator.worker.handle` (CPU-testable); this file only binds
it to the SDK. The handler is async so RunPod's cancel reaches it (a sync handler cannot be
cancelled), and training runs in a subprocess that the worker stops with save_quit. Nothing
heavy is imported at module level: the worker's cold start pays only for what it needs.
"""

from __future__ import annotations

from typing import Any

from orchestrator.settings import Settings
from orchestrator.worker import WorkerOptions, handle


def _options() -> WorkerOptions:
    return WorkerOptions(settings=Settings.from_env())


async def handler(job: dict[str, Any]) -> dict[str, Any]:
    """RunPod calls this with {"id": ..., "input": {...}}."""
    import runpod  # noqa: PLC0415 - the SDK is loaded by the worker already; not at import

    def send(payload: dict[str, Any]) -> None:
        runpod.serverless.progress_update(job, payload)

    return await handle(job, _options(), send)


if __name__ == "__main__":  # pragma: no cover - the worker process
    import runpod

    from orchestrator.logs import configure_logging

    configure_logging(json_lines=True)
    runpod.serverless.start({"handler": handler})
