"""`resume_from`: a new job that continues an earlier one on the same volume.

Checked with the rest of the request, before the new job's folder exists: the earlier job must
be on this volume, and a checkpoint can only continue the same model type, dataset, GPU count
and `pipeline_stages` (diffusion-pipe's checkpoint is laid out for them). `resume_from_lora`
starts fresh from the earlier job's newest saved LoRA instead, so only the model type must
match. An earlier job whose training finished with the same training values hands over its
training result too, so the new job publishes that LoRA without training again (how a publish
the Hub deferred is finished once RunPod no longer keeps the job for `POST /retry`). The copy
itself is the inherit stage's (`stages.inherit`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from events.fold import JobView, fold
from events.store import EVENTS_FILE, EventStore, job_path
from orchestrator.errors import Problem
from orchestrator.plan import JobPlan
from orchestrator.settings import Settings
from stages.inherit.inputs import InheritInputs
from stages.training.run_folder import newest_lora

FIELD = "resume_from"
ADOPTED_STAGES = ("dataset", "captions")  # their files come along with a checkpoint
FINISHED_STAGES = ("training",)  # adopted too when the training values are the same


def continuation(plan: JobPlan, settings: Settings) -> tuple[InheritInputs | None, list[Problem]]:
    """The inherit stage's inputs for a request with `resume_from`, or the problems that refuse
    it. A job that already has a log took over its files on its first delivery: not checked
    again (the earlier job may be gone by now)."""
    origin_id = plan.request.resume_from
    if origin_id is None:
        return None, []
    lora = plan.request.resume_from_lora
    origin_dir = job_path(settings.root, origin_id)
    inputs = InheritInputs(
        origin_id=origin_id,
        origin_root=settings.root,
        mode="lora" if lora else "checkpoint",
        lora_file=plan.entry.lora_file,
        adopt=() if lora else ADOPTED_STAGES + _finished(plan, origin_dir),
        worker=settings.worker_name,
        lease_ttl_s=settings.lease_ttl_s,
    )
    if (plan.job_dir / EVENTS_FILE).exists():
        return inputs, []
    if origin_id == plan.job_id:
        return None, [(FIELD, "names this job itself; POST /retry/{id} resumes a job in place")]
    if not (origin_dir / EVENTS_FILE).is_file():
        return None, [(FIELD, f"no job {origin_id} on this worker's volume")]
    problems = _changes(plan, settings, origin_id, origin_dir, lora=lora)
    return (None, problems) if problems else (inputs, [])


def _changes(
    plan: JobPlan, settings: Settings, origin_id: str, origin_dir: Path, *, lora: bool
) -> list[Problem]:
    before = _recorded_request(origin_dir)
    events = EventStore.on_disk(settings.root).read(origin_id)
    view = fold(events)
    started = next((e.data for e in events if e.type == "INITIALIZED"), {})
    model_type = before.get("model_type") or started.get("model_type")
    if model_type != plan.entry.model_type:
        return [
            (
                FIELD,
                f"job {origin_id} trained {model_type or 'no model yet'}, not "
                f"{plan.entry.model_type}: a LoRA cannot continue on another model",
            )
        ]
    if lora:
        if newest_lora(origin_dir / "output", plan.entry.lora_file) is None:
            return [(FIELD, f"job {origin_id} has no saved LoRA yet to start from")]
        return []
    changed = [name for name, same in _fixed_under_resume(plan, view, before) if not same]
    if not changed:
        return []
    return [
        (
            FIELD,
            f"this request changes the {', '.join(changed)} of job {origin_id}, which its "
            'checkpoint cannot follow; send "resume_from_lora": true to start from its newest '
            "saved LoRA with a fresh optimizer instead",
        )
    ]


def _fixed_under_resume(
    plan: JobPlan, view: JobView, before: dict[str, Any]
) -> list[tuple[str, bool]]:
    gpus_before = (view.dataset_report or {}).get("num_gpus")
    stages_before = dict(before.get("training") or {}).get("pipeline_stages", 1)
    return [
        ("dataset", _dataset(before) == _dataset(plan.shown_request)),
        ("GPU count", gpus_before is None or gpus_before == plan.dataset.rules.num_gpus),
        ("pipeline_stages", stages_before == plan.training.get("pipeline_stages", 1)),
    ]


def _dataset(request: Mapping[str, Any]) -> dict[str, Any]:
    """What of a request's dataset a checkpoint depends on. The Gemini model only chose how
    captions were made, and the captions come along (a job recorded before the field existed
    has none)."""
    dataset = dict(request.get("dataset") or {})
    dataset.pop("gemini_model", None)
    return dataset


def _finished(plan: JobPlan, origin_dir: Path) -> tuple[str, ...]:
    """The training stage, when the earlier job asked for the same training (its recorded
    request, masked as this one's is shown): its LoRA is this request's LoRA. Whether that
    training finished is the inherit stage's to see (it adopts only recorded results)."""
    before = _recorded_request(origin_dir).get("training")
    same = before is not None and before == plan.shown_request.get("training")
    return FINISHED_STAGES if same else ()


def _recorded_request(origin_dir: Path) -> dict[str, Any]:
    """The earlier job's request as it kept it (masked; written by its prepare stage)."""
    from stages.training.prepare import REQUEST_FILE  # noqa: PLC0415 - it loads the weights code

    try:
        data = json.loads((origin_dir / REQUEST_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
