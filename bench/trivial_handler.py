"""The cold-start baseline: the same RunPod SDK worker loop as handler.py, with a handler that
does nothing. `python -u bench/trivial_handler.py` under localpod, as handler.py runs."""

from __future__ import annotations

from typing import Any

import runpod


async def handler(job: dict[str, Any]) -> dict[str, Any]:
    return {"echo": job.get("input")}


if __name__ == "__main__":
    runpod.serverless.start({"handler": handler})
