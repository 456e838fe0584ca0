"""Checkpoint pruning with the real CPU trainer: a run keeps only the newest N checkpoints, a
worker SIGKILLed between a checkpoint and its prune catches up on the next delivery, and the
request's `training.keep_checkpoints` reaches the stage through the whole worker."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from events.audit import audit
from events.model import Event
from events.store import EventStore
from orchestrator.settings import Settings
from orchestrator.worker import WorkerOptions, handle
from stages.training.checkpoints import PRUNING_PREFIX
from stages.training.run_folder import resumable_checkpoint, run_dirs
from stages.training.stage import Training
from tests.support.checkpoint_job import IMAGES, JOB_ID, job_context, tiny_job
from tests.support.dataserver import DataServer
from tests.support.media import shades_zip
from tests.support.paths import REPO

pytestmark = pytest.mark.slow


def _checkpoints(output_dir: Path) -> list[str]:
    """Every global_stepN folder in every run folder, by step."""
    found = [p.name for run in run_dirs(output_dir) for p in run.iterdir()]
    tags = [n for n in found if n.startswith("global_step")]
    return sorted(tags, key=lambda t: int(t.removeprefix("global_step")))


def _saves(output_dir: Path) -> list[str]:
    return sorted(p.name for run in run_dirs(output_dir) for p in run.glob("epoch*"))


def _leftovers(output_dir: Path) -> list[str]:
    return [p.name for run in run_dirs(output_dir) for p in run.glob(f"{PRUNING_PREFIX}*")]


def _messages(events: list[Event]) -> list[str]:
    return [str(e.data["message"]) for e in events if e.type == "PROGRESS" and "message" in e.data]


def _steps(job_dir: Path) -> list[int]:
    text = (job_dir / "logs" / "train.log").read_text()
    return [int(line.split()[1]) for line in text.splitlines() if line.startswith("steps: ")]


def test_a_run_keeps_only_the_newest_n_checkpoints(tmp_path: Path) -> None:
    epochs, keep = 4, 2
    plan = tiny_job(tmp_path, epochs)
    ctx, store = job_context(tmp_path)
    output_dir = ctx.job_dir / "output"
    # At each step line, the checkpoints of earlier steps: their lines came before this one, so
    # the stage has recorded (and pruned after) them. The trainer runs ahead of the reader, so a
    # checkpoint of this step or a later one may already be on disk, not yet known to the stage.
    on_disk: list[list[str]] = []

    def known(sample: dict[str, Any]) -> None:
        tags = _checkpoints(output_dir)
        on_disk.append([t for t in tags if int(t.removeprefix("global_step")) < sample["step"]])

    stage = Training(plan, progress_every_s=0, keep_checkpoints=keep, on_progress=known)
    result = stage.run(ctx)
    assert result["final_save"] == f"epoch{epochs}"
    events = store.read(JOB_ID)
    recorded = [e.data["tag"] for e in events if e.type == "CHECKPOINT"]
    assert recorded == [f"global_step{IMAGES * e}" for e in range(1, epochs + 1)]
    assert _checkpoints(output_dir) == recorded[-keep:]
    [run] = run_dirs(output_dir)
    assert resumable_checkpoint(run) == recorded[-1]
    assert _saves(output_dir) == [f"epoch{e}" for e in range(1, epochs + 1)]  # all kept
    assert _leftovers(output_dir) == []
    assert max(len(tags) for tags in on_disk) == keep  # pruned during the run, not at its end
    pruned = [e.data["pruned_checkpoints"] for e in events if "pruned_checkpoints" in e.data]
    assert pruned == [[recorded[0]], [recorded[1]]]
    assert audit(events).ok


def test_a_worker_killed_between_checkpoint_and_prune_prunes_on_the_next_delivery(
    tmp_path: Path,
) -> None:
    epochs, keep, kill_at = 3, 1, 2  # killed right after global_step8 is recorded
    plan = tiny_job(tmp_path, epochs)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    args = [str(tmp_path), str(keep), str(kill_at), str(plan.config), str(plan.total_steps)]
    killed = subprocess.run(
        [sys.executable, "-m", "tests.support.checkpoint_job", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert killed.returncode == -9, killed.stderr[-2000:]
    ctx, store = job_context(tmp_path)
    output_dir = ctx.job_dir / "output"
    before = store.read(JOB_ID)
    assert [e.data["tag"] for e in before if e.type == "CHECKPOINT"] == [
        "global_step4",
        "global_step8",
    ]
    assert not any("pruned_checkpoints" in e.data for e in before)  # killed before the prune
    assert _checkpoints(output_dir) == ["global_step4", "global_step8"]
    steps_before = _steps(ctx.job_dir)

    at_launch: list[list[str]] = []

    def first_step(_sample: dict[str, Any]) -> None:
        if not at_launch:
            at_launch.append(_checkpoints(output_dir))

    result = Training(plan, progress_every_s=0, keep_checkpoints=keep, on_progress=first_step).run(
        ctx
    )
    assert result["final_save"] == f"epoch{epochs}"
    assert at_launch == [["global_step8"]]  # pruned before the trainer started
    steps_after = _steps(ctx.job_dir)[len(steps_before) :]
    assert steps_after[0] == 9  # resumed from the newest checkpoint, global_step8
    assert steps_after[-1] == IMAGES * epochs
    delivery = store.read(JOB_ID)[len(before) :]
    messages = _messages(delivery)
    pruned_at = next(i for i, m in enumerate(messages) if "(global_step4)" in m)
    launched_at = next(i for i, m in enumerate(messages) if m.startswith("Training: resuming"))
    assert pruned_at < launched_at
    assert messages[launched_at].endswith("from global_step8")
    assert _checkpoints(output_dir) == ["global_step12"]
    # The kill came while epoch2 was being saved (its line follows the checkpoint's), and the
    # resume starts after it; the saves before and after are all kept.
    assert {"epoch1", f"epoch{epochs}"} <= set(_saves(output_dir))
    assert _leftovers(output_dir) == []


# --- through the worker: the request's field reaches the stage -------------------------------
@pytest.fixture
def data() -> Iterator[DataServer]:
    with DataServer() as srv:
        srv.files["/d.zip"] = shades_zip(4)
        yield srv


def test_the_request_field_reaches_the_stage_through_the_worker(
    tmp_path: Path, data: DataServer
) -> None:
    # The worker's setting says 3; the request's 1 wins (precedence: test_keep_checkpoints.py).
    body = {
        "model_type": "tiny",
        "dataset": {"type": "precaptioned", "images_url": data.url + "/d.zip"},
        "training": {
            "epochs": 3,
            "resolution": 32,
            "checkpoint_every_n_epochs": 1,
            "keep_checkpoints": 1,
        },
        "output": {"method": "local", "local": {"path": str(tmp_path / "outputs")}},
    }
    settings = Settings(root=tmp_path / "root", retry_wait_s=0.05, keep_checkpoints=3)
    options = WorkerOptions(settings=settings, progress_every_s=0)
    response = asyncio.run(handle({"id": "keep", "input": body}, options, lambda _p: None))
    assert response["status"] == "success", response
    events = EventStore.on_disk(tmp_path / "root").read("keep")
    recorded = [e.data["tag"] for e in events if e.type == "CHECKPOINT"]
    assert len(recorded) == 3
    assert _checkpoints(tmp_path / "root" / "jobs" / "keep" / "output") == recorded[-1:]
    assert audit(events).ok
