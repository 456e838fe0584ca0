"""The trainer driver's pure parts, and its failure handling against trainers that fail."""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar, cast

import pytest
import tomli_w
from hypothesis import example, given, settings
from hypothesis import strategies as st

from events.store import EventStore
from stages.contract import StopRequest
from stages.errors import JobCancelled, StageFailed
from stages.training import driver
from stages.training import log_lines as tl
from stages.training.command import trainer_command
from stages.training.resume import plan_launch
from stages.training.run_folder import newest_lora, resumable_checkpoint, run_dirs
from stages.training.stage import Training, TrainingPlan
from tests.support import fake_trainer
from tests.support.helpers import stage_context
from tests.support.paths import REPO


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


def test_gpu_command_is_deepspeed_from_the_checkout(tmp_path: Path) -> None:
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


JOB = ("jobs", "j")


def _stage(
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
    from orchestrator.machine import JobMachine  # noqa: PLC0415

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


def _stage_run(tmp_path: Path, mode: str) -> dict[str, object]:
    return _stage(tmp_path, mode)[1]()


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
        _stage_run(tmp_path, mode)
    assert "Last log lines:" in str(info.value)
    assert (tmp_path / "jobs" / "j" / "logs" / "train.log").read_text().startswith("Global batch")


def test_success_needs_the_final_lora_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    result = _stage_run(tmp_path, "ok")
    assert result["final_save"] == "epoch2"
    assert str(result["lora"]).endswith("epoch2/adapter_model.safetensors")
    assert "EPOCH_SAVED" in result["events"]  # type: ignore[operator]


def test_a_launched_trainer_dies_with_its_worker(tmp_path: Path) -> None:
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415
    import time  # noqa: PLC0415

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


# --- nothing a trainer or its output does can hang the stage -------------------------------------
T = TypeVar("T")


def _within(call: Callable[[], T], timeout: float = 25.0) -> T:
    """`call()` in a thread: its result or its exception, or a failure if it has not ended."""
    out: list[tuple[bool, Any]] = []

    def target() -> None:
        try:
            out.append((True, call()))
        except BaseException as exc:  # handed to the test's thread
            out.append((False, exc))

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), f"the training stage hung (still running after {timeout} s)"
    ok, value = out[0]
    if not ok:
        raise value
    return cast(T, value)


def _gone(pid: int, within: float = 10.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            if "State:\tZ" in Path(f"/proc/{pid}/status").read_text():
                return True  # a zombie waiting to be reaped: dead
        except OSError:
            return True
        time.sleep(0.05)
    return False


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The fake trainer on the path; its helpers killed afterwards, whatever the test did."""
    monkeypatch.setenv("PYTHONPATH", str(REPO))  # the fake trainer lives in tests/
    monkeypatch.setattr(driver, "KILL_WAIT_S", 1.0, raising=False)
    monkeypatch.setattr(driver, "READER_GRACE_S", 0.5, raising=False)
    yield
    helper = tmp_path.joinpath(*JOB, "output", "helper.pid")
    if helper.exists():
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(helper.read_text()), signal.SIGKILL)


def _helper(tmp_path: Path) -> int:
    return int(tmp_path.joinpath(*JOB, "output", "helper.pid").read_text())


def test_the_reader_survives_any_error_and_keeps_draining(
    tmp_path: Path, fake: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    parse = tl.parse_line

    def broken(line: str) -> tl.LogFact | None:
        if line.startswith("chatter"):
            raise RuntimeError("a parser bug")
        return parse(line)

    monkeypatch.setattr(tl, "parse_line", broken)
    stage, run = _stage(tmp_path, "chatty")  # more output than a pipe holds after the error
    assert _within(run)["final_save"] == "epoch2"
    log = tmp_path.joinpath(*JOB, "logs", "train.log").read_text()
    assert log.count("\nchatter ") == fake_trainer.CHATTER_LINES
    assert stage.current_run is not None
    assert isinstance(stage.current_run.read_error, RuntimeError)


HOSTILE = [
    '"steps: 1 loss: - iter time (s): 1" = 1',  # a passthrough key, echoed with the config
    "steps: 1 loss: . iter time (s): e",
    "steps: 1 loss: 1e5e iter time (s): +-",
    "steps: " + "9" * 5000 + " loss: 0.1 iter time (s): 1.0",
    "Started new epoch: " + "9" * 5000,
    "Saving model to directory epoch" + "9" * 5000,
    "Saving model checkpoint: /o/global_step" + "9" * 5000,
    "Resuming at epoch: 1, step: " + "9" * 5000,
    "Global batch size = " + "9" * 5000,
]


def _parses(line: str) -> None:
    fact = tl.parse_line(line)
    if isinstance(fact, tl.ModelSaved):
        assert fact.epoch is None or fact.epoch >= 0
    if isinstance(fact, tl.CheckpointSaved):
        assert fact.step >= 0
    if isinstance(fact, tl.Step):
        assert isinstance(fact.loss, float)
        assert isinstance(fact.iter_time_s, float)


@pytest.mark.parametrize("line", HOSTILE)
def test_hostile_lines_are_not_facts(line: str) -> None:
    _parses(line)
    assert tl.parse_line(line) is None


@settings(max_examples=300, deadline=None)
@given(st.text())
@example(HOSTILE[0])
def test_the_parser_never_raises_on_any_text(line: str) -> None:
    _parses(line)


NUMBERISH = st.text(alphabet="0123456789+-.eEnaif ", max_size=10)


@settings(max_examples=500, deadline=None)
@given(
    st.sampled_from(["", '"', "[Rank 0] ", "x"]),
    NUMBERISH,
    NUMBERISH,
    NUMBERISH,
    st.sampled_from(["", '" = 1', " samples/sec: 1.0", "\n"]),
)
def test_near_miss_progress_lines_never_raise(
    before: str, step: str, loss: str, iter_s: str, after: str
) -> None:
    _parses(f"{before}steps: {step} loss: {loss} iter time (s): {iter_s}{after}")


def test_a_config_echo_that_looks_like_progress_does_not_stop_the_run(
    tmp_path: Path, fake: None
) -> None:
    _, run = _stage(tmp_path, "echo_config")
    assert _within(run)["final_save"] == "epoch2"


def _full_volume(tmp_path: Path) -> None:
    logs = tmp_path.joinpath(*JOB, "logs")
    logs.mkdir(parents=True)
    (logs / "train.log").symlink_to("/dev/full")  # every write: ENOSPC


@pytest.mark.parametrize("mode", ["killed", "no_output"])
def test_a_full_volume_under_train_log_fails_the_job_as_disk_full(
    tmp_path: Path, fake: None, mode: str
) -> None:
    _, run = _stage(tmp_path, mode)
    _full_volume(tmp_path)
    with pytest.raises(StageFailed, match=r"training failed \(disk_full\)") as info:
        _within(run)
    assert "free space" in str(info.value)
    assert "train.log could not be written" in str(info.value)


def test_log_errors_are_classified() -> None:
    full = OSError(errno.ENOSPC, "No space left on device")
    assert tl.classify_failure(247, False, [], log_error=full).reason == "disk_full"
    broken = OSError(errno.EIO, "Input/output error")
    assert tl.classify_failure(2, False, [], log_error=broken).reason == "other"


@pytest.mark.parametrize("volume", ["full", "unopenable"])
def test_a_log_that_cannot_be_written_does_not_stop_a_good_run(
    tmp_path: Path, fake: None, volume: str
) -> None:
    stage, run = _stage(tmp_path, "ok")
    if volume == "full":
        _full_volume(tmp_path)
    else:
        tmp_path.joinpath(*JOB, "logs").write_text("a file where the folder should be")
    result = _within(run)
    assert result["final_save"] == "epoch2"
    assert "EPOCH_SAVED" in result["events"]  # type: ignore[operator]
    assert stage.current_run is not None
    assert isinstance(stage.current_run.log_error, OSError)
    assert any("train.log" in str(m) for m in result["messages"])  # type: ignore[attr-defined]


def test_the_stage_ends_when_the_trainer_exits_though_its_output_stays_open(
    tmp_path: Path, fake: None
) -> None:
    _, run = _stage(tmp_path, "orphan")  # exits 1; a helper in its group holds the pipe
    with pytest.raises(StageFailed, match=r"training failed \(other\)"):
        _within(run)
    assert _gone(_helper(tmp_path)), "the trainer's process group outlived the stage"


def test_the_stage_ends_when_the_trainer_exits_though_the_reader_is_dead(
    tmp_path: Path, fake: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(driver.TrainerRun, "_read", lambda self: None)
    _, run = _stage(tmp_path, "ok")
    with pytest.raises(StageFailed, match=r"training failed \(incomplete\)"):
        _within(run)


def test_a_stop_past_its_grace_ends_the_stage_whatever_the_reader_does(
    tmp_path: Path, fake: None
) -> None:
    stop = StopRequest()

    def cancel_at_step_3(sample: dict[str, Any]) -> None:
        if sample["step"] >= 3:
            stop.set("cancel", "cancelled by the client")

    # Ignores SIGTERM and save_quit; a helper outside its group keeps its output open.
    stage, run = _stage(
        tmp_path, "stubborn", stop=stop, stop_grace_s=0.3, on_progress=cancel_at_step_3
    )
    with pytest.raises(JobCancelled, match="cancelled by the client"):
        _within(run)
    assert stage.current_run is not None
    assert stage.current_run.proc.returncode == -signal.SIGKILL


def test_a_driver_that_fails_does_not_leave_the_trainer_running(tmp_path: Path, fake: None) -> None:
    def broken(sample: dict[str, Any]) -> None:
        if sample["step"] >= 3:
            raise RuntimeError("the event store is gone")

    stage, run = _stage(tmp_path, "stubborn", on_progress=broken)
    try:
        # In this thread: the launcher's parent-death signal fires when the starting thread ends.
        with pytest.raises(RuntimeError, match="the event store is gone"):
            run()
        assert stage.current_run is not None
        assert driver.TrainerRun.wait_exit(stage.current_run, 10), "the trainer outlived its stage"
    finally:
        if stage.current_run is not None:
            stage.current_run.signal_group(signal.SIGKILL)
