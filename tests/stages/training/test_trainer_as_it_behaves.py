"""The training stage against what diffusion-pipe really leaves behind and really does, on the
CPU trainer, which reproduces it (minipipe: `tmp/` with exist_ok=False, a late run folder, a
traceback then silence while caching): stale stop files, half-written saves, a stop before the
run folder exists, a hang after an error, and what the answer says."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from events.store import EventStore
from stages.contract import StopRequest
from stages.errors import JobInterrupted, StageFailed
from stages.training.run_folder import resumable_checkpoint, run_dirs
from stages.training.stage import Training
from tests.support.minipipe_job import edit_config, tiny_job, trained_steps, training_ctx

pytestmark = pytest.mark.slow


def _stop_at(stop: StopRequest, step: int) -> Any:
    def watch(sample: dict[str, Any]) -> None:
        if sample["step"] >= step:
            stop.set("interrupt", "worker received SIGTERM")

    return watch


def test_the_interrupted_answer_names_the_checkpoint_a_retry_resumes_from(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MINIPIPE_STEP_SLEEP", "0.05")
    plan, paths, job_dir = tiny_job(tmp_path, epochs=3)
    ctx = training_ctx(job_dir, EventStore.in_memory().open("job"))
    stop = StopRequest()
    stage = Training(plan, stop=stop, stop_grace_s=60, on_progress=_stop_at(stop, 3))
    with pytest.raises(JobInterrupted) as info:
        stage.run(ctx)
    tag = resumable_checkpoint(run_dirs(paths.output_dir)[-1])
    assert tag is not None
    assert f"a retry resumes from checkpoint {tag}" in str(info.value)


def test_a_stale_save_quit_does_not_end_the_resumed_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stop while a resumed run is still starting up: the driver touches save_quit (the run
    folder exists), the trainer never reaches a step and is stopped, and the file stays."""
    monkeypatch.setenv("MINIPIPE_STEP_SLEEP", "0.05")
    plan, paths, job_dir = tiny_job(tmp_path, epochs=3)
    ctx = training_ctx(job_dir, EventStore.in_memory().open("job"))
    stop = StopRequest()
    with pytest.raises(JobInterrupted):
        Training(plan, stop=stop, stop_grace_s=60, on_progress=_stop_at(stop, 3)).run(ctx)

    monkeypatch.setenv("MINIPIPE_STARTUP_SLEEP", "30")  # caching and loading, before a step
    early = StopRequest()
    early.set("interrupt", "worker received SIGTERM")
    with pytest.raises(JobInterrupted):
        Training(plan, stop=early, stop_grace_s=0.5).run(ctx)
    run = run_dirs(paths.output_dir)[-1]
    assert (run / "save_quit").is_file(), "the stop left its signal file, as it does on a GPU"

    monkeypatch.delenv("MINIPIPE_STARTUP_SLEEP")
    result = Training(plan).run(ctx)
    assert result["final_save"] == "epoch3"
    assert trained_steps(job_dir)[-1] == 12
    assert not (run / "save_quit").exists()


def test_a_save_killed_midway_is_redone_on_the_next_attempt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed while writing epoch2/ (after diffusion-pipe made epoch2/tmp/): the resume starts
    from the checkpoint before that save and reaches it again, where `tmp/` already exists."""
    plan, paths, job_dir = tiny_job(tmp_path, epochs=3)
    # A checkpoint after every step (the minutes timer at its smallest), none at epoch ends.
    edit_config(plan, checkpoint_every_n_epochs=None, checkpoint_every_n_minutes=1e-9)
    log = EventStore.in_memory().open("job")
    ctx = training_ctx(job_dir, log)
    monkeypatch.setenv("MINIPIPE_DIE_IN_SAVE", "epoch2")
    with pytest.raises(StageFailed, match="training failed"):
        Training(plan).run(ctx)
    run = run_dirs(paths.output_dir)[-1]
    assert (run / "epoch2" / "tmp").is_dir()
    killed_at = resumable_checkpoint(run)
    assert killed_at is not None
    assert int(killed_at.removeprefix("global_step")) < 8

    monkeypatch.delenv("MINIPIPE_DIE_IN_SAVE")
    result = Training(plan).run(ctx)
    assert result["final_save"] == "epoch3"
    assert (run / "epoch2" / "adapter_model.safetensors").is_file()
    assert not (run / "epoch2" / "tmp").exists()
    notes = [e.data.get("message", "") for e in log.events if e.type == "PROGRESS"]
    assert any("epoch2/ (a save that was interrupted)" in n for n in notes)


def test_a_stop_before_the_run_folder_exists_ends_the_trainer_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fresh run is caching and loading the model: there is nothing to checkpoint, so the
    trainer is stopped without waiting for a grace it cannot use, and the job can be retried."""
    monkeypatch.setenv("MINIPIPE_STARTUP_SLEEP", "20")
    plan, paths, job_dir = tiny_job(tmp_path, epochs=2)
    ctx = training_ctx(job_dir, EventStore.in_memory().open("job"))
    stop = StopRequest()
    stage = Training(plan, stop=stop, stop_grace_s=600)
    threading.Timer(1.0, stop.set, ("interrupt", "worker received SIGTERM")).start()
    with pytest.raises(JobInterrupted) as info:
        stage.run(ctx)
    assert "a retry starts training over" in str(info.value)
    assert trained_steps(job_dir) == []  # stopped before a step: the grace was not spent
    assert run_dirs(paths.output_dir) == []

    monkeypatch.delenv("MINIPIPE_STARTUP_SLEEP")
    assert Training(plan).run(ctx)["final_save"] == "epoch2"


def test_a_trainer_silent_after_a_traceback_is_stopped_with_that_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """diffusion-pipe prints the traceback of a failed text-embedding cache and never exits."""
    monkeypatch.setenv("MINIPIPE_HANG_IN_CACHING", "1")
    plan, _, job_dir = tiny_job(tmp_path, epochs=2)
    ctx = training_ctx(job_dir, EventStore.in_memory().open("job"))
    stage = Training(plan, hang_after_traceback_s=2.0)
    with pytest.raises(StageFailed, match=r"training failed \(hung_after_error\)") as info:
        stage.run(ctx)
    message = str(info.value)
    assert "RuntimeError: text encoder failed while caching embeddings" in message
    assert "at minipipe/train.py:" in message or "at train.py:" in message
    assert str(tmp_path) not in message
    assert "/site-packages/" not in message
    assert "Traceback" in (job_dir / "logs" / "train.log").read_text()  # all of it is kept


@pytest.mark.parametrize(
    ("max_steps", "final"),
    [(5, "step5"), (8, "epoch2"), (20, "epoch2")],
    ids=["within-the-epochs", "at-the-last-step", "beyond-the-epochs"],
)
def test_the_final_save_is_the_one_the_trainer_made(
    tmp_path: Path, max_steps: int, final: str
) -> None:
    """diffusion-pipe checks for the end of the last epoch before `max_steps`: with 2 epochs of
    4 steps, max_steps 8 or 20 ends with epoch2, not step8 or step20."""
    plan, _paths, job_dir = tiny_job(tmp_path, epochs=2, max_steps=max_steps)
    result = Training(plan).run(training_ctx(job_dir, EventStore.in_memory().open("job")))
    assert result["final_save"] == final
    assert result["lora"].endswith(f"{final}/adapter_model.safetensors")
    assert trained_steps(job_dir)[-1] == min(max_steps, 8)


def test_a_finished_run_resumed_trains_one_more_epoch_and_says_so(tmp_path: Path) -> None:
    """A worker killed after the final checkpoint, before its answer was recorded: the retry
    resumes from that checkpoint, whose loader state is the epoch after the last, and
    diffusion-pipe trains that epoch too."""
    plan, _paths, job_dir = tiny_job(tmp_path, epochs=2)
    log = EventStore.in_memory().open("job")
    ctx = training_ctx(job_dir, log)
    assert Training(plan).run(ctx)["final_save"] == "epoch2"
    result = Training(plan).run(ctx)
    assert result["final_save"] == "epoch3"
    assert trained_steps(job_dir) == list(range(1, 13))  # no step trained twice
    notes = [e.data for e in log.events if e.type == "PROGRESS" and "extra_epoch" in e.data]
    assert [n["extra_epoch"] for n in notes] == [3]
    assert "had finished all 2 epochs" in notes[0]["message"]
