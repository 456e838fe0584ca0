"""One contract job: a tiny Flux job's configs rendered as production renders them, run through
the production training stage (`Training` with a `TrainingPlan`) on the real diffusion-pipe."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from events.store import EventStore
from orchestrator.machine import JobMachine
from orchestrator.plan import trainer_spec
from orchestrator.request import parse_request
from stages.contract import StopRequest
from stages.training.config import JobPaths, render, write_configs
from stages.training.run_folder import run_dirs
from stages.training.stage import Training, TrainingPlan
from tests.support.helpers import stage_context

LORA = "pytorch_lora_weights.safetensors"  # Flux's LoRA file, as the catalogue names it
# Small and quick: 64x64 images, one image per step, a LoRA save every epoch.
BASE_TRAINING: Mapping[str, Any] = {
    "epochs": 2,
    "resolution": 64,
    "batch_size": 1,
    "gradient_accumulation_steps": 1,
    "save_every_n_epochs": 1,
    "lora_rank": 4,
}


def request_body(training: Mapping[str, Any], job_dir: Path) -> dict[str, Any]:
    return {
        "model_type": "flux",
        "dataset": {"type": "precaptioned", "images_url": "https://example.com/set.zip"},
        "training": {**BASE_TRAINING, **training},
        "api_keys": {"huggingface_token": "hf_contractcontractcontract"},
        "output": {"method": "local", "local": {"path": str(job_dir / "published")}},
    }


@dataclass
class ContractJob:
    """A job folder under `root` (whose `models/flux` holds the tiny Flux) and its configs."""

    root: Path
    job_id: str
    training: Mapping[str, Any] = field(default_factory=dict)
    images: int = 2
    runs: list[float] = field(default_factory=list)  # each run's wall time, seconds
    events: list[str] = field(default_factory=list)  # the last run's recorded event types

    @property
    def paths(self) -> JobPaths:
        return JobPaths.for_job(self.root, self.job_id)

    @property
    def job_dir(self) -> Path:
        return self.paths.config_dir.parent

    @property
    def log(self) -> str:
        path = self.job_dir / "logs" / "train.log"
        return path.read_text(encoding="utf-8") if path.exists() else ""

    def run_dir(self) -> Path:
        runs = run_dirs(self.paths.output_dir)
        assert len(runs) == 1, f"one run folder expected in {self.paths.output_dir}: {runs}"
        return runs[0]

    def write(self) -> TrainingPlan:
        """The configs `dpserve plan` would render for this job (paths: this job's folders)."""
        request = parse_request(request_body(self.training, self.job_dir))
        paths = self.paths
        assert paths.images_dir is not None
        if not paths.images_dir.exists():
            paths.images_dir.mkdir(parents=True)
            for i in range(self.images):
                Image.new("RGB", (64, 64), (40 + i * 60, 90, 200 - i * 50)).save(
                    paths.images_dir / f"{i}.png"
                )
                (paths.images_dir / f"{i}.txt").write_text(f"a square, shade {i}")
        configs = render(trainer_spec(request), paths, image_count=self.images)
        _, main = write_configs(configs, paths.config_dir)
        return TrainingPlan("flux", main, LORA, total_steps=self.images * self.epochs)

    @property
    def epochs(self) -> int:
        return int({**BASE_TRAINING, **self.training}["epochs"])

    def copy(self, job_id: str) -> ContractJob:
        """The same job, folders and run folder included, under another id (configs re-rendered
        for its paths), so that several scenarios start from one trained state."""
        shutil.copytree(self.job_dir, self.root / "jobs" / job_id, symlinks=True)
        other = ContractJob(self.root, job_id, self.training, self.images)
        other.write()
        return other

    def run(
        self,
        checkout: Path,
        *,
        stop: StopRequest | None = None,
        on_progress: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        """One `Training.run` on the real trainer; the result plus the recorded event types."""
        plan = self.write()
        store = EventStore.in_memory().open(self.job_id)
        machine = JobMachine(store)
        for status in ("INITIALIZED", "STARTING", "DOWNLOADING", "MODEL_DOWNLOAD", "TRAINING"):
            machine.fire(status)
        stage = Training(
            plan,
            diffusion_pipe_dir=checkout,
            stop=stop,
            stop_grace_s=240.0,  # a checkpoint on a busy CPU; the trainer exits long before
            progress_every_s=0,
            on_progress=on_progress,
        )
        ctx = stage_context(self.job_dir, machine.record, job_id=self.job_id)
        started = time.monotonic()
        try:
            result: dict[str, Any] = stage.run(ctx)
        finally:
            self.runs.append(time.monotonic() - started)
            self.events = [e.type for e in store.events]
        result["events"] = self.events
        return result
