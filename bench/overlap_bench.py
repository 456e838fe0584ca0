"""Does the base model download overlap the dataset download? Time to the first training step
when both take a while, against each alone.

A tiny job runs through the real pipeline (`orchestrator.pipeline.build_stages` under
`orchestrator.runner.run_job`, as the worker runs a delivery; minipipe trains). Its dataset
comes from a throttled loopback server (tests/support/dataserver.py: the zip sent in pieces with
a pause between), and its model download includes, besides the tiny model built on the worker,
a file from a slow loopback Hub (`FakeHub.delay_s` before the file's bytes). Measured, each on a
fresh root:

- D: the dataset stage's work alone (`stages.dataset.stage.prepare`), throttled;
- M: the model download alone (`ensure_model` on the job's sources), throttled;
- F: the job, from `run_job` to its first training step (the driver's first step sample);
- fixed: what the job spends outside both downloads before its first step: the stages before
  them (the same job with nothing throttled reaches TRAINING this soon) plus the throttled job's
  own trainer start -> first step (minipipe's start, mostly: noisy, so taken from the same job).

Overlapped, F ~= fixed + max(D, M); in series it would be fixed + D + M. The job's time to
TRAINING (both downloads done) against max(D, M) is the same check without the trainer's noise.

Standalone: `.venv/bin/python -m bench.overlap_bench`.
"""

from __future__ import annotations

import dataclasses
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.table import Result, secs
from events.model import Event
from orchestrator.cli.demo import make_dataset
from orchestrator.pipeline import Delivery, build_stages, finish, salvage
from orchestrator.runner import run_job
from orchestrator.settings import Settings
from orchestrator.worker import start_data, validate
from stages.dataset.stage import prepare
from stages.weights.ensure import ensure_model
from stages.weights.sources import HubFiles
from tests.support.dataserver import DataServer
from tests.support.fakehub import FakeHub  # the loopback Hub lives with the tests

DATASET_S = 6.0  # the throttled dataset download
MODEL_S = 6.0  # the slow Hub's pause before the model file's bytes
PIECES = 24  # the dataset zip is sent in this many pieces, DATASET_S / PIECES apart
IMAGES = 4  # one step each (batch 1, one epoch): the job ends soon after its first step
SLOW_REPO = "bench/slow-base"
GOAL = 1.15  # F / (fixed + max(D, M)): overlapped, with some slack for a loaded machine


@dataclass
class Job:
    started: float = 0.0
    first_step: float | None = None
    marks: list[tuple[float, str]] = field(default_factory=list)  # (time, status) transitions
    status: str = ""
    error: str | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def on_sample(self, sample: dict[str, Any]) -> None:
        with self._lock:
            if self.first_step is None and int(sample.get("step") or 0) >= 1:
                self.first_step = time.perf_counter()

    def on_event(self, event: Event) -> None:
        if event.type == event.status:  # a transition, not a fact
            self.marks.append((time.perf_counter(), event.status))

    @property
    def to_first_step(self) -> float:
        if self.first_step is None:
            raise RuntimeError(f"the job reached no training step ({self.status}: {self.error})")
        return self.first_step - self.started

    def reached(self, status: str) -> float:
        """Seconds from the start to the job's first `status` transition."""
        for when, name in self.marks:
            if name == status:
                return when - self.started
        raise RuntimeError(f"the job never reached {status}: {self.timeline()}")

    def timeline(self) -> str:
        return ", ".join(f"{status} +{t - self.started:.2f}" for t, status in self.marks)


@dataclass
class Setup:
    data: DataServer
    hub: FakeHub
    url: str

    def throttle(self, on: bool) -> None:
        size = len(self.data.files["/d.zip"])
        self.data.chunk_size = -(-size // PIECES)
        self.data.chunk_delay_s["/d.zip"] = DATASET_S / PIECES if on else 0.0
        self.hub.delay_s = MODEL_S if on else 0.0


def _request(url: str, out: Path) -> dict[str, Any]:
    return {
        "model_type": "tiny",
        "dataset": {"type": "precaptioned", "images_url": url, "trigger_word": "shp"},
        "training": {"epochs": 1, "resolution": 64},
        "output": {"method": "local", "local": {"path": str(out)}},
    }


def _plan(setup: Setup, root: Path, job_id: str) -> tuple[Settings, Any]:
    settings = Settings(root=root, hub_endpoint=setup.hub.url, hf_cache_dir=root / "no-cache")
    plan = validate(_request(setup.url, root.parent / f"{root.name}-out"), settings, job_id)
    # The tiny model is built on the worker; a real base model comes from the Hub. Add a Hub
    # file to the same download, so the model stage takes a while the way a real one does.
    slow = HubFiles(SLOW_REPO, "slow-base", files=("config.json",))
    return settings, dataclasses.replace(plan, weights=(*plan.weights, slow))


def dataset_alone(setup: Setup, root: Path) -> float:
    _, plan = _plan(setup, root, "dataset-alone")
    start = time.perf_counter()
    prepare(plan.dataset, plan.job_dir)
    return time.perf_counter() - start


def model_alone(setup: Setup, root: Path) -> float:
    settings, plan = _plan(setup, root, "model-alone")
    start = time.perf_counter()
    ensure_model(plan.entry.model_type, plan.weights, options=settings.weights)
    return time.perf_counter() - start


def job(setup: Setup, root: Path, job_id: str) -> Job:
    """One delivery, wired as orchestrator.worker wires it (no mirror, no RunPod progress)."""
    settings, plan = _plan(setup, root, job_id)
    seen = Job()
    delivery = Delivery(plan=plan, settings=settings, on_sample=seen.on_sample)
    seen.started = time.perf_counter()
    try:
        outcome = run_job(
            root=settings.root,
            job_id=plan.job_id,
            stages=build_stages(delivery),
            secrets=plan.secrets,
            start_data=start_data(plan),
            finish=finish(delivery),
            observers=[seen.on_event],
            salvage=salvage(delivery),
            stop=delivery.stop,
        )
    finally:
        delivery.end()
    seen.status, seen.error = str(outcome.status), outcome.error
    if outcome.status != "COMPLETE":
        raise RuntimeError(f"the bench job ended {outcome.status}: {outcome.error}")
    return seen


def run() -> list[Result]:
    with (
        DataServer() as data,
        FakeHub() as hub,
        tempfile.TemporaryDirectory(prefix="dps-bench-overlap-") as tmp_name,
    ):
        tmp = Path(tmp_name)
        data.files["/d.zip"] = make_dataset(IMAGES, 64)
        hub.add_repo(SLOW_REPO, {"config.json": b'{"_class_name": "SlowBase"}'})
        setup = Setup(data, hub, data.url + "/d.zip")
        setup.throttle(False)
        model_alone(setup, tmp / "warm")  # imports torch once, as a warm worker has
        d0, m0 = dataset_alone(setup, tmp / "d0"), model_alone(setup, tmp / "m0")
        fast = job(setup, tmp / "fast", "fast")
        setup.throttle(True)
        d, m = dataset_alone(setup, tmp / "d"), model_alone(setup, tmp / "m")
        slow = job(setup, tmp / "slow", "slow")
    f0, f = fast.to_first_step, slow.to_first_step
    # What the job spends outside both downloads: the stages before them when nothing is slow
    # (the unthrottled job's time to TRAINING) plus this job's trainer start -> first step.
    before = fast.reached("TRAINING")
    trainer = f - slow.reached("TRAINING")
    fixed = before + trainer
    overlapped, serial = fixed + max(d, m), fixed + d + m
    print(f"  unthrottled: dataset {d0:.2f} s, model {m0:.2f} s, first step {f0:.2f} s")
    print(f"    timeline: {fast.timeline()}")
    print(f"  throttled:   dataset {d:.2f} s, model {m:.2f} s, first step {f:.2f} s")
    print(f"    timeline: {slow.timeline()}")
    print(
        f"  fixed {fixed:.2f} s (before the downloads {before:.2f}, trainer start -> first step "
        f"{trainer:.2f}); fixed + max(D, M) {overlapped:.2f} s, fixed + D + M {serial:.2f} s; "
        f"F/(D+M) {f / (d + m):.2f}, F/max(D,M) {f / max(d, m):.2f}; job at TRAINING after "
        f"{slow.reached('TRAINING'):.2f} s: /max {slow.reached('TRAINING') / max(d, m):.2f}, "
        f"/(D+M) {slow.reached('TRAINING') / (d + m):.2f}"
    )
    note = (
        f"D (dataset alone) {d:.2f} s, M (model download alone) {m:.2f} s; the job reached "
        f"TRAINING after {slow.reached('TRAINING'):.2f} s (max(D, M) {max(d, m):.2f}, D + M "
        f"{d + m:.2f}); fixed {fixed:.2f} s = stages before the downloads {before:.2f} + trainer "
        f"start -> first step {trainer:.2f}; in series: fixed + D + M {serial:.2f} s (F / that "
        f"{f / serial:.2f}); F / (D + M) {f / (d + m):.2f}, F / max {f / max(d, m):.2f}"
    )
    return [
        Result(
            f"time to first training step, dataset {DATASET_S:g} s + model {MODEL_S:g} s",
            secs(f),
            f"fixed + max(D, M) {secs(overlapped)}",
            f / overlapped,
            GOAL,
            note,
        )
    ]


if __name__ == "__main__":
    from bench.table import publish

    publish(run(), Path(tempfile.gettempdir()) / "dps-bench-overlap.md")
    sys.exit(0)
