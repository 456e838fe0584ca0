"""Shared test helpers (plain functions, imported by tests)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from events.store import EventStore, JsonlBackend, MemoryBackend


def raw_lines(store: EventStore, job_id: str) -> list[str]:
    """The stored lines of a job, for either backend."""
    backend = store.backend
    if isinstance(backend, JsonlBackend):
        return backend.path(job_id).read_text(encoding="utf-8").splitlines(keepends=True)
    assert isinstance(backend, MemoryBackend)
    return list(backend.raw_lines(job_id))


def replace_lines(store: EventStore, job_id: str, lines: list[str]) -> None:
    backend = store.backend
    if isinstance(backend, JsonlBackend):
        backend.path(job_id).write_text("".join(lines), encoding="utf-8")
        return
    assert isinstance(backend, MemoryBackend)
    backend.raw_lines(job_id)[:] = lines


def append_n(store: EventStore, job_id: str, n: int, **data: Any) -> None:
    log = store.open(job_id)
    for i in range(n):
        log.append(type="PROGRESS", status="TRAINING", attempt=1, data={"i": i, **data})


def job_dir(root: Path, job_id: str) -> Path:
    return root / "jobs" / job_id
