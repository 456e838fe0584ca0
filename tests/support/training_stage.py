"""A Training stage on the fake trainer (tests/support/fake_trainer.py), for the driver tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import tomli_w

from events.store import EventStore
from orchestrator.machine import JobMachine
from stages.contract import StopRequest
from stages.training.stage import Training, TrainingPlan
from tests.support.helpers import stage_context

JOB = ("jobs", "j")


def fake_stage(
    tmp_path: Path,
    mode: str,
    *,
    stop: StopRequest | None = None,
    stop_grace_s: float = 300.0,
    on_progress: Callable[[dict[str, Any]], None] | None = None,
) -> tuple[Training, Callable[[], dict[str, object]]]:
    """A Training stage on the fake trainer in `mode`, and a call that runs it."""
    job = tmp_path.joinpath(*JOB)
    (job / "config").mkdir(parents=True)
    config = job / "config" / "tiny.toml"
    config.write_text(
        tomli_w.dumps(
            {
                "output_dir": str(job / "output"),
                "epochs": 2,
                "fake_mode": mode,
                "fake_lora_file": "adapter_model.safetensors",
            }
        )
    )
    log = EventStore.in_memory().open("j")
    machine = JobMachine(log)
    for status in ("INITIALIZED", "STARTING", "DOWNLOADING", "MODEL_DOWNLOAD", "TRAINING"):
        machine.fire(status)
    ctx = stage_context(job, machine.record, job_id="j")
    stage = Training(
        TrainingPlan("tiny", config, "adapter_model.safetensors", total_steps=4),
        cpu_module="tests.support.fake_trainer",
        stop=stop,
        stop_grace_s=stop_grace_s,
        on_progress=on_progress,
    )

    def run() -> dict[str, object]:
        result: dict[str, object] = stage.run(ctx)
        result["events"] = [e.type for e in log.events]
        result["messages"] = [e.data.get("message") for e in log.events if e.type == "PROGRESS"]
        return result

    return stage, run


def fake_stage_run(tmp_path: Path, mode: str) -> dict[str, object]:
    return fake_stage(tmp_path, mode)[1]()
