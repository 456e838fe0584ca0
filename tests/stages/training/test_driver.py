"""The trainer driver's pure parts, and its failure handling against trainers that fail."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from stages.errors import StageFailed
from stages.training import log_lines as tl
from stages.training.command import trainer_command
from stages.training.resume import plan_launch
from stages.training.run_folder import newest_lora, resumable_checkpoint, run_dirs
from tests.support.paths import REPO
from tests.support.training_stage import fake_stage_run


@pytest.mark.parametrize(
    ("line", "fact"),
    [
        (
            "steps: 12 loss: 0.1234 iter time (s): 1.500 samples/sec: 2.667",
            tl.Step(12, 0.1234, 1.5),
        ),
        ("Started new epoch: 3", tl.EpochStarted(3)),
        ("Saving model to directory epoch10", tl.ModelSaved("epoch10")),
        ("Saving model to directory step500", tl.ModelSaved("step500")),
        (
            "[2025-01-01 00:00:00,000] [INFO] [logging.py:128:log_dist] [Rank 0] Saving model "
            "checkpoint: /out/20250101_00-00-00/global_step40/mp_rank_00_model_states.pt",
            tl.CheckpointSaved("global_step40"),
        ),
        ("Resuming training from checkpoint. Resuming at epoch: 4, step: 41", tl.Resumed(4, 41)),
        ("Global batch size = 8", tl.GlobalBatch(8)),
        ("TRAINING COMPLETE!", tl.Finished()),
        ("caching latents: /data/images", None),
        ("trainable params: 1,234 || all params: 5,678", None),
    ],
)
def test_log_lines_become_facts(line: str, fact: tl.LogFact | None) -> None:
    assert tl.parse_line(line) == fact


def test_nan_loss_is_parsed_not_dropped() -> None:
    fact = tl.parse_line("steps: 3 loss: nan iter time (s): 1.0 samples/sec: 1.0")
    assert isinstance(fact, tl.Step)
    assert fact.loss != fact.loss


@pytest.mark.parametrize(
    ("code", "finished", "tail", "reason"),
    [
        (1, False, ["torch.OutOfMemoryError: CUDA out of memory. Tried to allocate"], "gpu_oom"),
        (247, False, ["Killing subprocess 1234"], "host_oom"),
        (-9, False, [], "host_oom"),
        (1, False, ["RuntimeError: Processed dataset was empty. Probably caused"], "empty_dataset"),
        (1, False, ["ModuleNotFoundError: No module named 'flash_attn'"], "flash_attn_missing"),
        (
            1,
            False,
            ["FileNotFoundError: [Errno 2] No such file or directory: '/m/models/x.safetensors'"],
            "missing_model_file",
        ),
        (0, False, ["Started new epoch: 1"], "incomplete"),
        (2, False, ["something else"], "other"),
    ],
)
def test_failures_are_classified(code: int, finished: bool, tail: list[str], reason: str) -> None:
    assert tl.classify_failure(code, finished, tail).reason == reason


def _run(root: Path, name: str, *, latest: str | None, steps: list[int], epochs: list[int]) -> Path:
    run = root / name
    run.mkdir(parents=True)
    for step in steps:
        (run / f"global_step{step}").mkdir()
    for epoch in epochs:
        (run / f"epoch{epoch}").mkdir()
        (run / f"epoch{epoch}" / "adapter_model.safetensors").write_bytes(b"w")
    if latest is not None:
        (run / "latest").write_text(latest)
    return run


def test_plan_resumes_from_the_checkpoint_latest_names(tmp_path: Path) -> None:
    _run(tmp_path, "20250101_00-00-00", latest=None, steps=[], epochs=[1])
    _run(tmp_path, "20250102_00-00-00", latest="global_step40", steps=[20, 40], epochs=[1])
    launch = plan_launch(tmp_path, "adapter_model.safetensors")
    assert launch.resume_from == "20250102_00-00-00"
    assert launch.init_from is None


def test_plan_starts_from_the_newest_lora_when_latest_is_broken(tmp_path: Path) -> None:
    run = _run(tmp_path, "20250102_00-00-00", latest="global_step40", steps=[20], epochs=[1, 2])
    (run / "epoch2" / "tmp").mkdir()  # a save cut short: not complete
    assert resumable_checkpoint(run) is None
    launch = plan_launch(tmp_path, "adapter_model.safetensors")
    assert launch.resume_from is None
    assert launch.init_from == run / "epoch1"
    assert "starting fresh from the saved LoRA epoch1" in launch.note


def test_plan_starts_fresh_when_nothing_is_there(tmp_path: Path) -> None:
    launch = plan_launch(tmp_path / "missing", "adapter_model.safetensors")
    assert (launch.resume_from, launch.init_from) == (None, None)
    assert run_dirs(tmp_path / "missing") == []
    assert newest_lora(tmp_path, "adapter_model.safetensors") is None


def test_gpu_command_is_deepspeed_from_the_checkout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)  # else it names the GPUs
    cmd = trainer_command(
        model_type="wan13",
        config=tmp_path / "main.toml",
        resume_from="20250101_00-00-00",
        diffusion_pipe_dir=tmp_path / "dp",
        num_gpus=2,
        master_port=29611,
    )
    assert cmd.argv[:3] == ["deepspeed", "--num_gpus=2", "train.py"]
    assert "--deepspeed" in cmd.argv
    assert cmd.argv[cmd.argv.index("--config") + 1] == str((tmp_path / "main.toml").resolve())
    assert cmd.argv[-4:] == [
        "--master_port",
        "29611",
        "--resume_from_checkpoint",
        "20250101_00-00-00",
    ]
    assert cmd.cwd == tmp_path / "dp"
    assert cmd.env["NCCL_P2P_DISABLE"] == "1"


def test_no_gpu_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with pytest.raises(StageFailed, match="no GPU is visible"):
        trainer_command(
            model_type="flux",
            config=tmp_path / "m.toml",
            resume_from=None,
            diffusion_pipe_dir=tmp_path,
        )


@pytest.mark.parametrize(
    ("mode", "reason"),
    [
        ("oom", "gpu_oom"),
        ("empty", "empty_dataset"),
        ("incomplete", "incomplete"),
        ("killed", "host_oom"),
        ("no_output", "missing_output"),
    ],
)
def test_a_failing_trainer_is_classified(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str, reason: str
) -> None:
    monkeypatch.setenv("PYTHONPATH", str(REPO))  # the fake trainer lives in tests/
    with pytest.raises(StageFailed, match=rf"training failed \({reason}\)") as info:
        fake_stage_run(tmp_path, mode)
    message = str(info.value)
    assert "the whole trainer output is in the job's logs/train.log" in message
    assert str(tmp_path) not in message  # the answer names no worker path
    assert (tmp_path / "jobs" / "j" / "logs" / "train.log").read_text().startswith("Global batch")


def test_success_needs_the_final_lora_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    result = fake_stage_run(tmp_path, "ok")
    assert result["final_save"] == "epoch2"
    assert str(result["lora"]).endswith("epoch2/adapter_model.safetensors")
    assert "EPOCH_SAVED" in result["events"]  # type: ignore[operator]


def test_a_launched_trainer_dies_with_its_worker(tmp_path: Path) -> None:
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415

    pid_file = tmp_path / "child.pid"
    trainer = tmp_path / "trainer.py"
    trainer.write_text(
        f"import os, time\nopen({str(pid_file)!r}, 'w').write(str(os.getpid()))\ntime.sleep(60)\n"
    )
    worker = tmp_path / "worker.py"
    worker.write_text(
        "import os, subprocess, sys, time\n"
        "subprocess.Popen([sys.executable, '-m', 'stages.training.launch', str(os.getpid()), "
        f"sys.executable, {str(trainer)!r}])\n"
        "time.sleep(60)\n"
    )
    parent = subprocess.Popen([sys.executable, str(worker)], cwd=REPO)
    deadline = time.monotonic() + 20
    while not pid_file.exists() or not pid_file.read_text():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    child = int(pid_file.read_text())
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 10
    while Path(f"/proc/{child}").exists():
        status = (
            Path(f"/proc/{child}/status").read_text()
            if Path(f"/proc/{child}/status").exists()
            else ""
        )
        if "State:\tZ" in status:
            break  # a zombie waiting for init to reap it: dead
        assert time.monotonic() < deadline, "the trainer outlived its worker"
        time.sleep(0.05)
