"""Tiny-model jobs through localpod: the real SDK worker loop running handler.py, minipipe and a
loopback dataset server, as the end-to-end tests drive them."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from events.model import Event
from events.store import EventStore
from localpod import LocalPod
from tests.support.dataserver import DataServer
from tests.support.paths import REPO

HANDLER = REPO / "handler.py"
AUTH = {"Authorization": "Bearer k"}


def tiny_pod(
    tmp_path: Path, *, workers: int = 1, step_sleep: float = 0.0, **options: Any
) -> LocalPod:
    """A LocalPod over handler.py whose volume is `tmp_path/root`. `options` go to LocalPod;
    `env` in them is merged over the defaults."""
    env = {
        "DPS_ROOT": str(tmp_path / "root"),
        "DPS_LEASE_TTL_S": "3",
        "MINIPIPE_STEP_SLEEP": str(step_sleep),
        **options.pop("env", {}),
    }
    return LocalPod(
        HANDLER,
        workers=workers,
        env=env,
        log_dir=tmp_path / "logs",
        ping_timeout_s=None,
        **options,
    )


def tiny_body(
    data: DataServer, tmp_path: Path, path: str = "/d.zip", **training: Any
) -> dict[str, Any]:
    return {
        "input": {
            "model_type": "tiny",
            "dataset": {"type": "precaptioned", "images_url": data.url + path},
            "training": {"epochs": 2, "resolution": 32, **training},
            "output": {"method": "local", "local": {"path": str(tmp_path / "outputs")}},
        }
    }


def submit(pod: LocalPod, body: dict[str, Any]) -> str:
    answer = httpx.post(f"{pod.url}/run", json=body, headers=AUTH)
    answer.raise_for_status()
    return str(answer.json()["id"])


def post(pod: LocalPod, route: str) -> dict[str, Any]:
    """`POST /retry/{id}`, `/cancel/{id}`: the answer, which must be a 200."""
    answer = httpx.post(f"{pod.url}/{route}", headers=AUTH)
    answer.raise_for_status()
    return dict(answer.json())


def job_events(tmp_path: Path, job_id: str) -> list[Event]:
    return EventStore.on_disk(tmp_path / "root").read(job_id)


def until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def has_event(tmp_path: Path, job_id: str, kind: str) -> Callable[[], bool]:
    path = tmp_path / "root" / "jobs" / job_id / "events.jsonl"
    return lambda: path.exists() and f'"type":"{kind}"'.encode() in path.read_bytes()


def trained_steps(tmp_path: Path, job_id: str) -> list[int]:
    """The step numbers the trainer logged for the job (every attempt, in order)."""
    log = (tmp_path / "root" / "jobs" / job_id / "logs" / "train.log").read_text()
    return [int(line.split()[1]) for line in log.splitlines() if line.startswith("steps: ")]


def job_digest(tmp_path: Path, job_id: str) -> dict[str, str]:
    """Every file of a job but its lease (a claim by another worker is not the job's state)."""
    job = tmp_path / "root" / "jobs" / job_id
    return {
        str(p.relative_to(job)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(job.rglob("*"))
        if p.is_file() and "lease" not in p.relative_to(job).parts
    }
