"""Trainer driver costs, measured against minipipe alone on the same config in the same run.

1. Overhead: `python -m minipipe --config X` run directly vs through the training stage
   (process group, log tee, parsing, events). Goal: ratio <= 1.10.
2. Resume cost: an uninterrupted run vs one SIGKILLed at 50% and resumed through the driver.
   Reports the extra wall time and the steps trained twice.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from PIL import Image

from bench.table import Result, secs
from events.store import EventStore
from minipipe.model import build_tiny_model
from orchestrator.machine import JobMachine
from orchestrator.plan import trainer_spec
from orchestrator.request import parse_request
from stages.contract import StageContext
from stages.errors import StageFailed
from stages.training.config import JobPaths, render, write_configs
from stages.training.stage import Training, TrainingPlan

EPOCHS = 12
IMAGES = 8


def _prepare(root: Path) -> tuple[TrainingPlan, Path]:
    paths = JobPaths.for_job(root, "bench")
    assert paths.images_dir is not None
    paths.images_dir.mkdir(parents=True)
    for i in range(IMAGES):
        Image.new("RGB", (32, 32), (i * 30, 90, 250 - i * 30)).save(paths.images_dir / f"{i}.png")
        (paths.images_dir / f"{i}.txt").write_text(f"square number {i}")
    build_tiny_model(paths.models_root / "tiny")
    request = parse_request(
        {
            "model_type": "tiny",
            "dataset": {"type": "precaptioned", "images_url": "https://example.com/d.zip"},
            "training": {"epochs": EPOCHS, "resolution": 32, "checkpoint_every_n_epochs": 2},
            "output": {"method": "local", "local": {"path": str(root / "out")}},
        }
    )
    _, main = write_configs(
        render(trainer_spec(request), paths, image_count=IMAGES), paths.config_dir
    )
    total = IMAGES * EPOCHS
    return TrainingPlan(
        "tiny", main, "adapter_model.safetensors", total_steps=total
    ), root / "jobs" / "bench"


def _ctx(job_dir: Path) -> StageContext:
    machine = JobMachine(EventStore.in_memory().open("bench"))
    for status in ("INITIALIZED", "STARTING", "DOWNLOADING", "MODEL_DOWNLOAD", "TRAINING"):
        machine.fire(status)
    return StageContext("bench", job_dir, {}, machine.record, resumed=False)


def _clean(job_dir: Path) -> None:
    shutil.rmtree(job_dir / "output", ignore_errors=True)
    shutil.rmtree(job_dir / "logs", ignore_errors=True)


def _steps(job_dir: Path) -> list[int]:
    text = (job_dir / "logs" / "train.log").read_text()
    return [int(line.split()[1]) for line in text.splitlines() if line.startswith("steps: ")]


def direct(plan: TrainingPlan, job_dir: Path) -> float:
    _clean(job_dir)
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "minipipe", "--config", str(plan.config)],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return time.perf_counter() - start


def driven(plan: TrainingPlan, job_dir: Path) -> float:
    _clean(job_dir)
    start = time.perf_counter()
    Training(plan).run(_ctx(job_dir))
    return time.perf_counter() - start


def killed_and_resumed(plan: TrainingPlan, job_dir: Path) -> tuple[float, int]:
    _clean(job_dir)
    ctx = _ctx(job_dir)
    half = (plan.total_steps or 2) // 2
    stage = Training(plan)

    def kill_at_half(sample: dict[str, Any]) -> None:
        if sample["step"] >= half and stage.current_run is not None:
            stage.current_run.signal_group(signal.SIGKILL)

    stage.on_progress = kill_at_half
    start = time.perf_counter()
    with contextlib.suppress(StageFailed):  # the kill is the point
        stage.run(ctx)
    first = _steps(job_dir)
    Training(plan).run(ctx)
    elapsed = time.perf_counter() - start
    second = _steps(job_dir)[len(first) :]
    return elapsed, len(set(first) & set(second))


def run() -> list[Result]:
    with tempfile.TemporaryDirectory() as tmp:
        plan, job_dir = _prepare(Path(tmp))
        direct(plan, job_dir)  # warm the page cache and imports once
        runs = [(direct(plan, job_dir), driven(plan, job_dir)) for _ in range(3)]
        d = sorted(r[0] for r in runs)[1]
        o = sorted(r[1] for r in runs)[1]
        whole = driven(plan, job_dir)
        resumed, redone = killed_and_resumed(plan, job_dir)
    return [
        Result(
            f"trainer driver overhead ({plan.total_steps} steps)",
            secs(o),
            f"minipipe alone {secs(d)}",
            o / d,
            1.10,
        ),
        Result(
            "resume cost: SIGKILL at 50% + resume",
            secs(resumed),
            f"uninterrupted {secs(whole)}",
            resumed / whole,
            None,
            f"extra {resumed - whole:.1f} s, {redone} steps trained twice",
        ),
    ]


def main() -> None:
    for r in run():
        print(r)
