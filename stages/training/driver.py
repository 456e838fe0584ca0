"""Following one trainer process: its own process group, its log teed to `train.log`, its log
lines parsed into facts, and a stop (save_quit, then the process group) when one is requested.

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

from stages.contract import StopRequest
from stages.training import log_lines as tl
from stages.training.command import TrainerCommand
from stages.training.run_folder import run_dirs

TAIL_LINES = 40


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
    started_at: float = field(default_factory=time.monotonic)

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
    exit_code: int
    finished: bool
    stopped: bool
    tail: list[str]
    progress: Progress


class TrainerRun:
    """One trainer process: its own process group, its log teed to a file, facts to a queue."""

    def __init__(self, command: TrainerCommand, log_path: Path) -> None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = log_path.open("a", encoding="utf-8")
        # Through `stages.training.launch`, so the trainer dies with this worker instead of
        # training on as an orphan (a killed worker process on a machine that stays up).
        argv = [sys.executable, "-m", "stages.training.launch", str(os.getpid()), *command.argv]
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
        self.facts: queue.Queue[tl.LogFact | None] = queue.Queue()
        self.tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
        self._reader = threading.Thread(target=self._read, name="trainer-log", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._log.write(line)
            self._log.flush()
            self.tail.append(line.rstrip("\n"))
            fact = tl.parse_line(line)
            if fact is not None:
                self.facts.put(fact)
        self.facts.put(None)  # end of output

    def signal_group(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)

    def wait_exit(self, timeout: float) -> bool:
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return False
        return True

    def close(self) -> None:
        self._reader.join(timeout=10)
        self._log.close()


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
) -> RunResult:
    """Drain the trainer's facts until it exits; on a stop request, save_quit then kill."""
    stop_deadline: float | None = None
    ended = False
    while not ended:
        try:
            fact = run.facts.get(timeout=0.2)
        except queue.Empty:
            fact = None
        else:
            if fact is None:
                ended = True
            else:
                _apply(fact, progress)
                on_fact(fact, progress)
        if stop.requested and stop_deadline is None:
            run_dir = _current_run_dir(output_dir, runs_before, resumed)
            if run_dir is not None and run_dir.is_dir():
                # Acted on at the next step boundary: checkpoint, then exit 0.
                (run_dir / "save_quit").touch()
            stop_deadline = time.monotonic() + stop_grace_s
        if stop_deadline is not None and time.monotonic() > stop_deadline and not ended:
            run.signal_group(signal.SIGTERM)
            if not run.wait_exit(10):
                run.signal_group(signal.SIGKILL)
            stop_deadline = float("inf")
    run.proc.wait()
    run.close()
    return RunResult(
        run.proc.returncode, progress.finished, stop.requested, list(run.tail), progress
    )


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
    elif isinstance(fact, tl.Finished):
        progress.finished = True
