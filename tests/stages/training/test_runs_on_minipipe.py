"""The driver with the real CPU trainer: a full run, a SIGKILL and a save_quit stop, resumed."""

from __future__ import annotations

import random
import signal
import threading
from pathlib import Path
from typing import Any

import pytest
from safetensors.torch import load_file

from events.store import EventStore
from stages.contract import StopRequest
from stages.errors import JobInterrupted
from stages.training.stage import Training
from tests.support.minipipe_job import tiny_job, trained_steps, training_ctx

pytestmark = pytest.mark.slow


def test_a_full_run_produces_a_trained_lora_and_events(tmp_path: Path) -> None:
    plan, paths, job_dir = tiny_job(tmp_path)
    log = EventStore.in_memory().open("job")
    samples: list[dict[str, Any]] = []
    stage = Training(plan, progress_every_s=0, on_progress=samples.append)
    result = stage.run(training_ctx(job_dir, log))
    lora = job_dir / result["lora"]
    assert lora.name == "adapter_model.safetensors"
    assert result["final_save"] == "epoch3"
    weights = load_file(str(lora))
    first = load_file(str(next(paths.output_dir.glob("*/epoch1/adapter_model.safetensors"))))
    assert any(not (weights[k] == first[k]).all() for k in weights)  # it kept learning
    assert any(k.endswith("lora_B.weight") and weights[k].abs().sum() > 0 for k in weights)
    kinds = [e.type for e in log.events]
    assert kinds.count("EPOCH_SAVED") == 3
    assert "CHECKPOINT" in kinds
    progress = [e.data for e in log.events if e.type == "PROGRESS" and "loss" in e.data]
    assert progress
    assert all(p["loss"] is None or p["loss"] == p["loss"] for p in progress)  # finite, not NaN
    assert samples[-1]["step"] == result["steps"] == 12
    assert samples[-1]["percent"] == 100.0


def test_sigkill_after_a_checkpoint_loses_only_the_steps_since(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MINIPIPE_STEP_SLEEP", "0.05")
    plan, _, job_dir = tiny_job(tmp_path, epochs=4)
    log = EventStore.in_memory().open("job")
    ctx = training_ctx(job_dir, log)
    kill_after = random.Random().randint(1, 3)  # steps past the first checkpoint
    stage = Training(plan, progress_every_s=0)
    killed = threading.Event()
    seen_checkpoint: list[int] = []

    def watch(sample: dict[str, Any]) -> None:
        checkpoints = [e.data["step"] for e in log.events if e.type == "CHECKPOINT"]
        if checkpoints and not seen_checkpoint:
            seen_checkpoint.append(checkpoints[0])
        if (
            seen_checkpoint
            and sample["step"] >= seen_checkpoint[0] + kill_after
            and not killed.is_set()
        ):
            killed.set()
            assert stage.current_run is not None
            stage.current_run.signal_group(signal.SIGKILL)

    stage.on_progress = watch
    with pytest.raises(Exception, match="training failed"):
        stage.run(ctx)
    assert killed.is_set()
    before = trained_steps(job_dir)
    last_checkpoint = max(e.data["step"] for e in log.events if e.type == "CHECKPOINT")
    resumed = Training(plan, progress_every_s=0).run(ctx)
    after = trained_steps(job_dir)[len(before) :]
    assert resumed["final_save"] == "epoch4"
    assert after[0] == last_checkpoint + 1  # the step counter continues
    redone = set(before) & set(after)
    assert len(redone) <= max(before) - last_checkpoint
    assert after[-1] == 16


def test_a_stop_request_checkpoints_and_the_next_attempt_finishes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MINIPIPE_STEP_SLEEP", "0.05")
    plan, _, job_dir = tiny_job(tmp_path, epochs=3)
    log = EventStore.in_memory().open("job")
    ctx = training_ctx(job_dir, log)
    stop = StopRequest()

    def stop_at_step_3(sample: dict[str, Any]) -> None:
        if sample["step"] >= 3:
            stop.set("interrupt", "worker received SIGTERM")

    stage = Training(plan, stop=stop, stop_grace_s=60, on_progress=stop_at_step_3)
    with pytest.raises(JobInterrupted, match="worker received SIGTERM"):
        stage.run(ctx)
    assert stage.current_run is not None
    assert stage.current_run.proc.returncode == 0
    assert "Manually quitting" in (job_dir / "logs" / "train.log").read_text()
    stopped_at = max(trained_steps(job_dir))
    result = Training(plan).run(ctx)
    assert result["final_save"] == "epoch3"
    assert trained_steps(job_dir)[-1] == 12
    assert min(trained_steps(job_dir)[stopped_at:]) >= stopped_at  # nothing before the stop again


def test_without_a_checkpoint_it_starts_from_the_newest_lora(tmp_path: Path) -> None:
    plan, paths, job_dir = tiny_job(tmp_path, epochs=2)
    log = EventStore.in_memory().open("job")
    ctx = training_ctx(job_dir, log)
    Training(plan).run(ctx)
    for latest in paths.output_dir.glob("*/latest"):
        latest.unlink()  # as if the checkpoint were lost
    Training(plan).run(ctx)
    assert "Initializing LoRA weights from" in (job_dir / "logs" / "train.log").read_text()
    notes = [e.data.get("message", "") for e in log.events if e.type == "PROGRESS"]
    assert any("starting fresh from the saved LoRA epoch2" in n for n in notes)
