"""A tiny job on the CPU trainer (minipipe): its configs rendered as production renders them, and
a stage context on an in-memory event log, for tests that run the training stage for real."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import tomli_w
from PIL import Image

from events.store import EventLog
from minipipe.model import build_tiny_model
from orchestrator.machine import JobMachine
from orchestrator.plan import trainer_spec
from orchestrator.request import parse_request
from stages.contract import StageContext
from stages.training.config import JobPaths, render, write_configs
from stages.training.stage import TrainingPlan
from tests.support.helpers import stage_context

IMAGES = 4


def tiny_job(
    tmp_path: Path, epochs: int = 3, **training: Any
) -> tuple[TrainingPlan, JobPaths, Path]:
    """A 4-image tiny job (one step per image per epoch), its configs written; `training`
    overrides the request's training fields."""
    paths = JobPaths.for_job(tmp_path, "job")
    assert paths.images_dir is not None
    paths.images_dir.mkdir(parents=True)
    for i in range(IMAGES):
        Image.new("RGB", (32, 32), (i * 60, 90, 200 - i * 40)).save(paths.images_dir / f"{i}.png")
        (paths.images_dir / f"{i}.txt").write_text(f"a tiny square number {i}")
    build_tiny_model(paths.models_root / "tiny")
    fields = {
        "epochs": epochs,
        "resolution": 32,
        "save_every_n_epochs": 1,
        "checkpoint_every_n_epochs": 1,
        **training,
    }
    request = parse_request(
        {
            "model_type": "tiny",
            "dataset": {"type": "precaptioned", "images_url": "https://example.com/d.zip"},
            "training": fields,
            "output": {"method": "local", "local": {"path": str(tmp_path / "out")}},
        }
    )
    configs = render(trainer_spec(request), paths, image_count=IMAGES)
    _, main = write_configs(configs, paths.config_dir)
    return (
        TrainingPlan("tiny", main, "adapter_model.safetensors", total_steps=IMAGES * epochs),
        paths,
        tmp_path / "jobs" / "job",
    )


def edit_config(plan: TrainingPlan, **changes: Any) -> None:
    """Change top-level keys of the rendered main TOML (None removes one): settings the
    request does not offer, such as a checkpoint at every step."""
    config = tomllib.loads(plan.config.read_text())
    for key, value in changes.items():
        if value is None:
            config.pop(key, None)
        else:
            config[key] = value
    plan.config.write_text(tomli_w.dumps(config))


def training_ctx(job_dir: Path, log: EventLog) -> StageContext:
    """A context whose job has reached TRAINING (once: a second attempt reuses the log)."""
    machine = JobMachine(log)
    if not log.events:
        for status in ("INITIALIZED", "STARTING", "DOWNLOADING", "MODEL_DOWNLOAD", "TRAINING"):
            machine.fire(status)
    return stage_context(job_dir, machine.record)


def trained_steps(job_dir: Path) -> list[int]:
    """Every step the trainer logged, over all attempts, in order."""
    text = (job_dir / "logs" / "train.log").read_text()
    return [int(line.split()[1]) for line in text.splitlines() if line.startswith("steps: ")]
