"""Shared test helpers (plain functions, imported by tests)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

from events.facts import FactData
from events.model import Event
from events.store import EventStore, JsonlBackend, MemoryBackend
from orchestrator.plan import dataset_inputs, dataset_rules
from orchestrator.request import TrainingRequest, effective_training
from orchestrator.settings import Settings
from stages.contract import StageContext
from stages.dataset.inputs import DatasetInputs, DatasetRules
from stages.dataset.limits import DownloadLimits


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


class Recorded(list[tuple[str, dict[str, Any]]]):
    """The facts a stage under test recorded, as (event type, data) pairs."""

    def record(self, payload: FactData) -> Event:
        self.append((payload.fact.value, payload.data()))
        return cast(Event, None)


def stage_context(
    job_dir: Path,
    record: Callable[[FactData], Event],
    *,
    job_id: str = "job",
    results: Mapping[str, dict[str, Any]] | None = None,
    resumed: bool = False,
) -> StageContext:
    """The context a stage under test gets: its folder and a way to record facts (a live
    JobMachine's `record`, or `Recorded().record`)."""
    return StageContext(job_id, job_dir, dict(results or {}), record, resumed)


def dataset_rules_for(request: TrainingRequest) -> DatasetRules:
    """The dataset report's rules for `request`, built as the pipeline builds them."""
    return dataset_rules(request, effective_training(request))


def dataset_inputs_for(
    request: TrainingRequest,
    *,
    download_limits: DownloadLimits | None = None,
    settings: Settings | None = None,
) -> DatasetInputs:
    """The dataset stage's inputs for `request`, built as the pipeline builds them."""
    inputs = dataset_inputs(
        request, effective_training(request), settings or Settings(root=Path("/unused"))
    )
    return replace(inputs, download_limits=download_limits) if download_limits else inputs
