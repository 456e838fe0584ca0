"""RunPod Serverless entry point. Thin on purpose: validate, hand over, answer.

What exists today: request validation with the seed's error shape. The stages that train and
publish are built in later issues; until then a valid request is answered with a plain
"not built yet" failure instead of pretending to train. Nothing heavy is imported here: the
worker's cold start pays only for what the first job needs.
"""

from __future__ import annotations

from typing import Any

from orchestrator.request import RequestError, parse_request

NOT_BUILT = (
    "this worker validates requests but cannot train yet: the dataset, weights, training "
    "and publish stages are not built in this version"
)


def failed(message: str) -> dict[str, Any]:
    """The seed's error response."""
    return {"status": "failed", "error": message}


async def handler(job: dict[str, Any]) -> dict[str, Any]:
    """RunPod calls this with {"id": ..., "input": {...}}."""
    raw = job.get("input")
    if not isinstance(raw, dict):
        return failed("input: the request body must be a JSON object under 'input'")
    try:
        parse_request(raw)
    except RequestError as exc:
        return failed(str(exc))
    return failed(NOT_BUILT)


if __name__ == "__main__":  # pragma: no cover - the worker process
    import runpod

    runpod.serverless.start({"handler": handler})
