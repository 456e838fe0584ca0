"""The real diffusion-pipe through the production training stage, on the CPU (`make contract`).

Each scenario renders a tiny Flux job's configs as production does and runs `Training.run`: the
real `trainer_command`, `python -m stages.training.launch PID deepspeed ... train.py --deepspeed
--config ...` from the checkout. The only adaptations are environmental (contract/shim).

Sizes: 2 images of 64x64, one per step, 2 epochs: 4 steps, a LoRA save per epoch. The stop is
requested at the first step line and diffusion-pipe acts on it at the next step boundary, so the
stopped run's checkpoint is before the end of epoch 2 (step 4) unless the driver lags two whole
steps behind the trainer. The stopped job is the starting point of the resume, kill and stale
save_quit scenarios (each on its own copy).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from stages.contract import StopRequest
from stages.errors import JobInterrupted, StageFailed
from stages.training.run_folder import resumable_checkpoint
from tests.contract.job import LORA, ContractJob

# A run is 1-4 minutes on a busy 2-core CPU; the kill scenario runs the trainer twice.
pytestmark = [pytest.mark.contract, pytest.mark.timeout(1800)]

STEPS = 4  # 2 images x 2 epochs
RESUMED = "Resuming training from checkpoint"


def summary(name: str, job: ContractJob, outcome: str) -> None:
    runs = " + ".join(f"{s:.1f}" for s in job.runs)
    print(f"\ncontract {name}: {outcome}; run wall time (s): {runs}")


def stop_at_first_step(stop: StopRequest) -> Any:
    def on_progress(sample: dict[str, Any]) -> None:
        if (sample.get("step") or 0) >= 1 and not stop.requested:
            stop.set("interrupt", "contract test stop")

    return on_progress


def checkpoint_step(job: ContractJob) -> int:
    tag = resumable_checkpoint(job.run_dir())
    assert tag is not None, f"no resumable checkpoint in {job.run_dir()}"
    return int(tag.removeprefix("global_step"))


def assert_finished(job: ContractJob, result: dict[str, Any], final: str) -> None:
    assert result["final_save"] == final
    assert (job.run_dir() / final / LORA).is_file()
    assert (job.job_dir / result["lora"]).is_file()
    assert "TRAINING COMPLETE!" in job.log


@pytest.fixture(scope="module")
def stopped(
    root: Path, checkout: Path, trainer_env: None
) -> tuple[ContractJob, BaseException | None]:
    """A job stopped through the stage's StopRequest (save_quit), and what the run raised."""
    job = ContractJob(root, "stopped")
    stop = StopRequest()
    raised: BaseException | None = None
    try:
        job.run(checkout, stop=stop, on_progress=stop_at_first_step(stop))
    except BaseException as exc:  # asserted by test_save_quit_stops_at_a_checkpoint
        raised = exc
    return job, raised


def test_fresh_run(root: Path, checkout: Path) -> None:
    job = ContractJob(root, "fresh")
    result = job.run(checkout)
    assert_finished(job, result, "epoch2")
    assert result["steps"] == STEPS
    assert (job.run_dir() / "epoch1" / LORA).is_file()
    assert "CHECKPOINT" in result["events"]
    assert result["events"].count("EPOCH_SAVED") == 2
    summary("fresh run", job, f"ok, {result['steps']} steps, loss {result['final_loss']}")


def test_save_quit_stops_at_a_checkpoint(stopped: tuple[ContractJob, BaseException | None]) -> None:
    job, raised = stopped
    assert isinstance(raised, JobInterrupted), raised
    assert "Manually quitting" in job.log
    assert not (job.run_dir() / "save_quit").exists()  # diffusion-pipe removes it
    step = checkpoint_step(job)
    assert 1 <= step < STEPS
    assert "CHECKPOINT" in job.events
    summary("save_quit", job, f"stopped ({raised}); checkpoint global_step{step}")


def test_resume_finishes_the_stopped_run(
    stopped: tuple[ContractJob, BaseException | None], checkout: Path
) -> None:
    job = stopped[0].copy("resumed")
    step = checkpoint_step(job)
    result = job.run(checkout)
    assert f"{RESUMED}. Resuming at epoch" in job.log
    assert f"step: {step + 1}" in job.log
    assert_finished(job, result, "epoch2")
    summary("resume", job, f"ok from global_step{step}, final {result['final_save']}")


def test_kill_during_an_epoch_save_then_resume(
    stopped: tuple[ContractJob, BaseException | None],
    checkout: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    job = stopped[0].copy("killed")
    step = checkpoint_step(job)
    monkeypatch.setenv("CONTRACT_KILL_AT_SAVE", "epoch2")
    with pytest.raises(StageFailed) as killed:
        job.run(checkout)
    assert (job.run_dir() / "epoch2" / "tmp").is_dir(), "the kill came during the epoch2 save"
    print(
        f"\ncontract kill during save: the killed run failed: {str(killed.value).splitlines()[0]}"
    )
    assert checkpoint_step(job) == step  # the last checkpoint is from before that save
    monkeypatch.delenv("CONTRACT_KILL_AT_SAVE")

    try:
        result = job.run(checkout)
    except StageFailed as exc:
        summary("kill during save", job, f"FAILED on resume: {str(exc).splitlines()[0]}")
        raise
    assert job.log.count(RESUMED) >= 1
    assert_finished(job, result, "epoch2")
    assert not (job.run_dir() / "epoch2" / "tmp").exists()
    summary("kill during save", job, f"ok, resumed from global_step{step}")


def test_a_stale_save_quit_does_not_stop_the_resume(
    stopped: tuple[ContractJob, BaseException | None], checkout: Path
) -> None:
    job = stopped[0].copy("stale")
    (job.run_dir() / "save_quit").touch()  # left by an attempt that ended before dp saw it
    try:
        result = job.run(checkout)
    except StageFailed as exc:
        summary("stale save_quit", job, f"FAILED: {str(exc).splitlines()[0]}")
        raise
    assert RESUMED in job.log.split("Manually quitting")[-1]
    assert "Manually quitting" not in job.log.split(RESUMED)[-1]
    assert_finished(job, result, "epoch2")
    summary("stale save_quit", job, f"ok, {result['steps']} steps")


@pytest.mark.parametrize(
    ("max_steps", "final"),
    [
        pytest.param(3, "step3", id="within-the-epochs"),
        # diffusion-pipe checks for the end of the last epoch before max_steps: epoch2, not step10
        pytest.param(10, "epoch2", id="beyond-the-epochs"),
    ],
)
def test_max_steps(root: Path, checkout: Path, max_steps: int, final: str) -> None:
    job = ContractJob(root, f"max_steps_{max_steps}", training={"max_steps": max_steps})
    try:
        result = job.run(checkout)
    except StageFailed as exc:
        summary(f"max_steps={max_steps}", job, f"FAILED: {str(exc).splitlines()[0]}")
        raise
    assert_finished(job, result, final)
    assert f"Saving model to directory {final}" in job.log
    summary(f"max_steps={max_steps}", job, f"ok, final {result['final_save']}")
