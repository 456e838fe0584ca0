"""Nothing a trainer or its output does can hang the training stage: the reader, the parser,
the log writes, the exit and the stop."""

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
from hypothesis import example, given, settings
from hypothesis import strategies as st

from stages.contract import StopRequest
from stages.errors import JobCancelled, StageFailed
from stages.training import driver
from stages.training import log_lines as tl
from tests.support import fake_trainer
from tests.support.paths import REPO
from tests.support.training_stage import JOB, fake_stage

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
    stage, run = fake_stage(tmp_path, "chatty")  # more output than a pipe holds after the error
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
    _, run = fake_stage(tmp_path, "echo_config")
    assert _within(run)["final_save"] == "epoch2"


def _full_volume(tmp_path: Path) -> None:
    logs = tmp_path.joinpath(*JOB, "logs")
    logs.mkdir(parents=True)
    (logs / "train.log").symlink_to("/dev/full")  # every write: ENOSPC


@pytest.mark.parametrize("mode", ["killed", "no_output"])
def test_a_full_volume_under_train_log_fails_the_job_as_disk_full(
    tmp_path: Path, fake: None, mode: str
) -> None:
    _, run = fake_stage(tmp_path, mode)
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
    stage, run = fake_stage(tmp_path, "ok")
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
    _, run = fake_stage(tmp_path, "orphan")  # exits 1; a helper in its group holds the pipe
    with pytest.raises(StageFailed, match=r"training failed \(other\)"):
        _within(run)
    assert _gone(_helper(tmp_path)), "the trainer's process group outlived the stage"


def test_the_stage_ends_when_the_trainer_exits_though_the_reader_is_dead(
    tmp_path: Path, fake: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(driver.TrainerRun, "_read", lambda self: None)
    _, run = fake_stage(tmp_path, "ok")
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
    stage, run = fake_stage(
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

    stage, run = fake_stage(tmp_path, "stubborn", on_progress=broken)
    try:
        # In this thread: the launcher's parent-death signal fires when the starting thread ends.
        with pytest.raises(RuntimeError, match="the event store is gone"):
            run()
        assert stage.current_run is not None
        assert driver.TrainerRun.wait_exit(stage.current_run, 10), "the trainer outlived its stage"
    finally:
        if stage.current_run is not None:
            stage.current_run.signal_group(signal.SIGKILL)
