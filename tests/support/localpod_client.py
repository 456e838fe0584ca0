"""Helpers for the localpod tests: the test handler, the client key, and waits on jobs."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx

from localpod import LocalPod
from tests.support.paths import REPO

HANDLER = REPO / "tests" / "support" / "localpod_handler.py"
KEY = "test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}


def run(http: httpx.Client, spec: dict[str, Any], **extra: Any) -> str:
    answer = http.post("/run", json={"input": spec, **extra})
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "IN_QUEUE"
    return str(answer.json()["id"])


def wait_progress(pod: LocalPod, job_id: str, count: int = 1, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with pod.board.cond:
            if len(pod.events.progress.get(job_id, [])) >= count:
                return
        time.sleep(0.05)
    raise TimeoutError(f"no progress for {job_id}")


def wait_file(path: Path, timeout: float = 10) -> str:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)
    return path.read_text()


def health(http: httpx.Client) -> dict[str, Any]:
    answer = http.get("/health")
    assert answer.status_code == 200
    body: dict[str, Any] = answer.json()
    return body
