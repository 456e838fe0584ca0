"""Following one trainer process: its own process group, its log teed to `train.log`, its log
lines parsed into facts, and a stop (save_quit, then the process group) when one is requested.

Nothing the trainer or its output does may hang a job: the reader survives any error and keeps
draining the pipe (a trainer blocked on a full pipe never exits), writes to `train.log` are
best effort (a full or failing volume), and `follow` ends once the process is gone, waiting only
a bounded time for a reader that has not signalled the end.

diffusion-pipe is driven, never modified; `minipipe` honours the same contract on the CPU.
"""

from __future__ import annotations

import collections
import contextlib
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from stages.contract import StopRequest
from stages.training import launch
from stages.training import log_lines as tl
from stages.training.command import TrainerCommand
from stages.training.run_folder import run_dirs

log = structlog.get_logger(__name__)

TAIL_LINES = 40
KILL_WAIT_S = 10.0  # after SIGTERM, and again after SIGKILL, for the process to exit
READER_GRACE_S = 10.0  # after the process is gone, for the reader to reach the end of output
# diffusion-pipe can print a traceback and never exit (an exception while caching text
# embeddings): silence this long after a traceback ends the run. Model loading after a harmless
# traceback can be quiet for minutes, so the bound is generous.
HANG_AFTER_TRACEBACK_S = 900.0


@dataclass
class Progress:
    """What the log said so far in this attempt."""

    total_steps: int | None
    epochs: int
    step: int = 0
    epoch: int = 0
    loss: float | None = None
    iter_time_s: float | None = None
    finished: bool = False
    first_step: int | None = None
    last_save: str | None = None  # the last "Saving model to directory" name
    resumed_at: tuple[int, int] | None = None  # (epoch, step) diffusion-pipe resumed at
    started_at: float = field(default_factory=time.monotonic)

    @property
    def final_save(self) -> str | None:
        """The last save before TRAINING COMPLETE!: the run's result (nothing saves after it)."""
        return self.last_save if self.finished else None

    def sample(self) -> dict[str, Any]:
        percent = eta = None
        if self.total_steps:
            percent = round(min(100.0, 100.0 * self.step / self.total_steps), 1)
            done_here = self.step - (self.first_step or self.step)
            elapsed = time.monotonic() - self.started_at
            if done_here > 0 and self.step < self.total_steps:
                eta = round(elapsed / done_here * (self.total_steps - self.step))
        return {
            "step": self.step,
            "total_steps": self.total_steps,
            "epoch": self.epoch,
            "epochs": self.epochs,
            "loss": self.loss,
            "iter_time_s": self.iter_time_s,
            "percent": percent,
            "eta_seconds": eta,
        }


@dataclass(frozen=True)
class RunResult:
    exit_code: int | None  # None: still not reaped after SIGKILL (stuck in the kernel)
    finished: bool
    stopped: bool
    tail: list[str]
    progress: Progress
    log_error: OSError | None = None  # why train.log is incomplete, if it is
    hung: bool = False  # stopped: silent too long after printing a traceback


class TrainerRun:
    """One trainer process: its own process group, its log teed to a file, facts to a queue."""

    def __init__(self, command: TrainerCommand, log_path: Path) -> None:
        self.log_error: OSError | None = None  # the first failed write to train.log
        self.lines_not_logged = 0
        self.read_error: Exception | None = None  # the first error the reader survived
        self.last_output_at = time.monotonic()
        self.traceback_seen = False
        self._log_fd = self._open_log(log_path)
        # Through `stages.training.launch`, so the trainer dies with this worker instead of
        # training on as an orphan (a killed worker process on a machine that stays up).
        argv = [sys.executable, "-m", "stages.training.launch", str(os.getpid()), *command.argv]
        try:
            self.proc = subprocess.Popen(
                argv,
                cwd=command.cwd,
                env=command.env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                text=True,
                errors="replace",
                bufsize=1,
                start_new_session=True,  # a process group we can stop whole
            )
        except BaseException:
            self._close_log()
            raise
        self.facts: queue.Queue[tl.LogFact | None] = queue.Queue()
        self._tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
        self._tail_lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, name="trainer-log", daemon=True)
        self._reader.start()

    @property
    def tail(self) -> list[str]:
        """The last lines (a copy: the reader may still be appending)."""
        with self._tail_lock:
            return list(self._tail)

    def _open_log(self, log_path: Path) -> int | None:
        try:
            log_path.parent.mkdir(parents=True, exist_ok=True)
            flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
            return os.open(log_path, flags, 0o644)
        except OSError as exc:  # train without a log rather than not at all
            self._log_failed(exc)
            return None

    def _read(self) -> None:
        """The reader thread: every line to the log, the tail and the parser; it survives any
        error, and on every path closes the pipe and puts the end marker."""
        stdout = self.proc.stdout
        assert stdout is not None
        try:
            for line in stdout:
                self._take(line)
        except Exception as exc:  # the pipe itself failed: nothing more can be read
            self._read_failed(exc)
        finally:
            # A trainer still writing gets EPIPE and fails, instead of blocking on a full pipe.
            with contextlib.suppress(Exception):
                stdout.close()
            self._close_log()
            self.facts.put(None)  # end of output

    def _take(self, line: str) -> None:
        self.last_output_at = time.monotonic()
        if tl.TRACEBACK_START in line:
            self.traceback_seen = True
        try:
            self._write_log(line)
            with self._tail_lock:
                self._tail.append(line.rstrip("\n"))
            fact = tl.parse_line(line)
            if fact is not None:
                self.facts.put(fact)
        except Exception as exc:  # one bad line must not stop the draining
            self._read_failed(exc)

    def _write_log(self, line: str) -> None:
        """Best effort: a full or failing volume loses log lines, never the run."""
        if self._log_fd is None:
            self.lines_not_logged += 1
            return
        data = memoryview(line.encode("utf-8", "replace"))
        try:
            while data:
                data = data[os.write(self._log_fd, data) :]
        except OSError as exc:
            self.lines_not_logged += 1
            self._log_failed(exc)

    def _log_failed(self, exc: OSError) -> None:
        if self.log_error is None:
            self.log_error = exc
            log.warning("train.log could not be written; training goes on", error=str(exc))

    def _read_failed(self, exc: Exception) -> None:
        if self.read_error is None:
            self.read_error = exc
            log.warning("trainer log reader failed on a line; reading goes on", error=repr(exc))

    def _close_log(self) -> None:
        fd, self._log_fd = self._log_fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)

    def signal_group(self, sig: signal.Signals) -> None:
        """`sig` to the launcher's process group and to the trainer's, which is its own."""
        for group in {self.proc.pid} | launch.groups_below(self.proc.pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(group, sig)

    def kill_tree(self) -> None:
        """SIGKILL every process of the trainer: the launcher is the tree's subreaper, so its
        descendants are all of it, even one that left the process group; then the group."""
        for pid in launch.descendants(self.proc.pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        self.signal_group(signal.SIGKILL)

    def wait_exit(self, timeout: float) -> bool:
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return False
        return True

    def close(self, timeout: float = 10.0) -> None:
        """Wait a bounded time for the reader; it closes the log itself (it may be mid-write)."""
        self._reader.join(timeout)


def _current_run_dir(output_dir: Path, before: set[str], resumed: str | None) -> Path | None:
    if resumed:
        return output_dir / resumed
    new = [p for p in run_dirs(output_dir) if p.name not in before]
    return new[-1] if new else None


def follow(
    run: TrainerRun,
    *,
    progress: Progress,
    output_dir: Path,
    runs_before: set[str],
    resumed: str | None,
    on_fact: Callable[[tl.LogFact, Progress], None],
    stop: StopRequest,
    stop_grace_s: float,
    hang_after_traceback_s: float = HANG_AFTER_TRACEBACK_S,
) -> RunResult:
    """Drain the trainer's facts until it has exited and its output has ended; on a stop
    request, save_quit, then SIGTERM and SIGKILL the group once the grace has passed (at once
    when the run has no folder yet: nothing to save). A trainer silent for
    `hang_after_traceback_s` after printing a traceback is stopped too. Never waits on the
    reader alone: once the process is gone (exited, or killed), the reader gets
    `READER_GRACE_S` to reach the end, then the run ends with what it has."""
    try:
        return _follow(
            run,
            progress,
            output_dir=output_dir,
            runs_before=runs_before,
            resumed=resumed,
            on_fact=on_fact,
            stop=stop,
            stop_grace_s=stop_grace_s,
            hang_after_traceback_s=hang_after_traceback_s,
        )
    except BaseException:
        run.kill_tree()  # a driver that failed must not leave it training
        raise


def _follow(
    run: TrainerRun,
    progress: Progress,
    *,
    output_dir: Path,
    runs_before: set[str],
    resumed: str | None,
    on_fact: Callable[[tl.LogFact, Progress], None],
    stop: StopRequest,
    stop_grace_s: float,
    hang_after_traceback_s: float,
) -> RunResult:
    stop_deadline: float | None = None
    output_ended = killed = hung = False
    gone_at: float | None = None  # when the process exited, or was killed
    while True:
        try:
            fact = run.facts.get(timeout=0.2)
        except queue.Empty:
            pass
        else:
            if fact is None:
                output_ended = True
            else:
                _apply(fact, progress)
                on_fact(fact, progress)
        if stop.requested and stop_deadline is None:
            asked = _ask_to_save_and_quit(output_dir, runs_before, resumed)
            # Before its run folder exists, diffusion-pipe is caching or loading the model:
            # there is nothing to checkpoint yet, so it is stopped at once.
            stop_deadline = time.monotonic() + (stop_grace_s if asked else 0.0)
        if stop_deadline is not None and not killed and time.monotonic() > stop_deadline:
            _kill(run)
            killed = True
        if (
            not killed
            and run.traceback_seen
            and time.monotonic() - run.last_output_at > hang_after_traceback_s
        ):
            log.warning("the trainer printed a traceback and went silent; stopping it")
            _kill(run)
            killed = hung = True
        if run.proc.poll() is not None or killed:
            if output_ended:
                break
            if gone_at is None:
                gone_at = time.monotonic()
            elif time.monotonic() - gone_at > READER_GRACE_S:
                break
    if not output_ended:
        # Something still holds the output open (a rank that outlived its launcher): stop it,
        # so that the reader reaches the end and nothing trains on unwatched.
        run.kill_tree()
    run.close(timeout=10.0 if output_ended else 1.0)
    for _ in range(run.facts.qsize()):  # what the reader had read by now; no more waiting
        late = run.facts.get_nowait()
        if late is not None:
            _apply(late, progress)
            on_fact(late, progress)
    return RunResult(
        run.proc.poll(),
        progress.finished,
        stop.requested,
        run.tail,
        progress,
        run.log_error,
        hung=hung,
    )


def _ask_to_save_and_quit(output_dir: Path, runs_before: set[str], resumed: str | None) -> bool:
    """Acted on at the next step boundary: checkpoint, then exit 0. False when the run has no
    folder yet. Best effort: where the file cannot be made (a full volume), the grace passes
    and the process group is stopped."""
    run_dir = _current_run_dir(output_dir, runs_before, resumed)
    if run_dir is None or not run_dir.is_dir():
        return False
    with contextlib.suppress(OSError):
        (run_dir / "save_quit").touch()
    return True


def _kill(run: TrainerRun) -> None:
    """SIGTERM the group, then SIGKILL the tree; each waits a bounded time, then it returns
    anyway."""
    run.signal_group(signal.SIGTERM)
    if not run.wait_exit(KILL_WAIT_S):
        run.kill_tree()
        run.wait_exit(KILL_WAIT_S)


def _apply(fact: tl.LogFact, progress: Progress) -> None:
    if isinstance(fact, tl.Step):
        progress.step, progress.loss, progress.iter_time_s = fact.step, fact.loss, fact.iter_time_s
        if progress.first_step is None:
            progress.first_step = fact.step - 1
        progress.epoch = progress.epoch or 1  # the first epoch is not announced in the log
    elif isinstance(fact, tl.EpochStarted):
        progress.epoch = fact.epoch
    elif isinstance(fact, tl.Resumed):
        progress.epoch, progress.step = fact.epoch, fact.step
        progress.resumed_at = (fact.epoch, fact.step)
    elif isinstance(fact, tl.ModelSaved):
        progress.last_save = fact.name
    elif isinstance(fact, tl.Finished):
        progress.finished = True
