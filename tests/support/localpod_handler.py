"""A small async RunPod handler for the localpod tests; runs under the real SDK worker loop.

Input: {"steps": 5, "sleep": 0.2, "fail": false, "dir": "<folder>", "tag": "<name>"}.
With "dir", each delivery appends a line to <dir>/<tag>.deliveries, and a stop writes
<dir>/<tag>.cancelled, so tests see redeliveries and CancelledError from outside.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import runpod


async def handler(job: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = job["input"]
    steps = int(spec.get("steps", 5))
    pause = float(spec.get("sleep", 0.2))
    folder = Path(spec["dir"]) if spec.get("dir") else None
    tag = str(spec.get("tag", job["id"]))
    if folder is not None:
        with (folder / f"{tag}.deliveries").open("a") as marks:
            marks.write(job["id"] + "\n")
    try:
        for step in range(1, steps + 1):
            await asyncio.sleep(pause)
            percent = round(100 * step / steps, 1)
            update = {"stage": "training", "step": step, "total_steps": steps, "percent": percent}
            runpod.serverless.progress_update(job, update)
    except asyncio.CancelledError:
        if folder is not None:
            (folder / f"{tag}.cancelled").write_text(job["id"])
        raise
    # Progress posts are fire-and-forget threads: let the last land before the result.
    await asyncio.sleep(0.1)
    if spec.get("fail"):
        return {"error": f"asked to fail after {steps} steps"}
    return {"steps": steps, "echo": spec.get("echo")}


if __name__ == "__main__":
    runpod.serverless.start({"handler": handler})
