"""The trainer driver: launch diffusion-pipe (or minipipe), follow its log, stop it, resume it.

diffusion-pipe is driven, never modified. What the driver relies on is its contract (the
reference's sections on the command line, output layout, checkpoints, log lines and exit
codes); `minipipe` honours the same contract on the CPU, so only the command differs.
"""

from __future__ import annotations

import collections
import contextlib
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from events.atomic import write_atomic
from events.facts import Checkpoint, EpochSaved, FactData
from events.vocabulary import Status
from stages.contract import Stage, StageContext, StopRequest
from stages.errors import JobCancelled, JobInterrupted, StageFailed
from stages.training import log_lines as tl
from stages.training.run_folder import (
    SavedLora,
    newest_lora,
    resumable_checkpoint,
    run_dirs,
    saved_loras,
)

TAIL_LINES = 40


# -- stopping ---------------------------------------------------------------------------------


# -- launching --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Launch:
    """How to start: fresh, resumed from a checkpoint, or fresh from a saved LoRA."""

    resume_from: str | None  # run folder name for --resume_from_checkpoint
    init_from: Path | None  # a saved LoRA folder for [adapter].init_from_existing
    note: str


def plan_launch(output_dir: Path, lora_file: str) -> Launch:
    """Resume when the newest run folder's `latest` names an existing checkpoint."""
    runs = run_dirs(output_dir)
    if runs:
        tag = resumable_checkpoint(runs[-1])
        if tag is not None:
            return Launch(runs[-1].name, None, f"resuming run {runs[-1].name} from {tag}")
    saved = newest_lora(output_dir, lora_file)
    if saved is not None:
        return Launch(
            None,
            saved.folder,
            f"no usable checkpoint; starting fresh from the saved LoRA {saved.name} "
            "(optimizer state and step counter start over)",
        )
    return Launch(None, None, "starting a new run")


def free_port() -> int:
    """A free TCP port for this job's --master_port (two jobs on one host must not share)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def visible_gpus() -> int:
    """GPUs this worker may use: CUDA_VISIBLE_DEVICES if set, else `nvidia-smi -L`."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip() and d.strip() != "-1"])
    try:
        out = subprocess.run(
            ["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(1 for line in out.stdout.splitlines() if line.startswith("GPU "))


@dataclass(frozen=True)
class TrainerCommand:
    argv: list[str]
    cwd: Path
    env: dict[str, str]


def trainer_command(
    *,
    model_type: str,
    config: Path,
    resume_from: str | None,
    diffusion_pipe_dir: Path,
    num_gpus: int | None = None,
    master_port: int | None = None,
    python: str = sys.executable,
    nccl_workaround: bool = True,
    cpu_module: str = "minipipe",
) -> TrainerCommand:
    """The command line for `model_type`: minipipe for `tiny`, deepspeed + train.py otherwise."""
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    resume = ["--resume_from_checkpoint", resume_from] if resume_from else []
    if model_type == "tiny":
        argv = [python, "-u", "-m", cpu_module, "--config", str(config.resolve()), *resume]
        return TrainerCommand(argv, config.parent, env)
    gpus = num_gpus if num_gpus is not None else visible_gpus()
    if gpus < 1:
        raise StageFailed("no GPU is visible to this worker; diffusion-pipe needs at least one")
    if nccl_workaround:  # the README's setting for consumer cards; harmless elsewhere
        env.setdefault("NCCL_P2P_DISABLE", "1")
        env.setdefault("NCCL_IB_DISABLE", "1")
    argv = [
        "deepspeed",
        f"--num_gpus={gpus}",
        "train.py",
        "--deepspeed",
        "--config",
        str(config.resolve()),
        "--master_port",
        str(master_port or free_port()),
        *resume,
    ]
    # Several model loaders use paths relative to the checkout: run from its root.
    return TrainerCommand(argv, diffusion_pipe_dir, env)


def with_init_from(config: Path, lora_folder: Path) -> Path:
    """A copy of the main TOML whose [adapter] starts from a saved LoRA folder."""
    data = tomllib.loads(config.read_text(encoding="utf-8"))
    data.setdefault("adapter", {})["init_from_existing"] = str(lora_folder.resolve())
    target = config.with_name(f"{config.stem}.init_from_existing.toml")
    write_atomic(target, tomli_w.dumps(data))
    return target


# -- following a run --------------------------------------------------------------------------
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


# -- the stage --------------------------------------------------------------------------------
@dataclass(frozen=True)
class TrainingPlan:
    """What the training stage needs, decided before it runs."""

    model_type: str
    config: Path  # the main TOML, absolute
    lora_file: str
    total_steps: int | None = None


def final_save_name(config: Mapping[str, Any]) -> str:
    """diffusion-pipe's last save: step{max_steps} when set, else epoch{epochs}."""
    if config.get("max_steps"):
        return f"step{int(config['max_steps'])}"
    return f"epoch{int(config['epochs'])}"


class Training(Stage):
    """Run the trainer to completion, resuming from what an earlier attempt left."""

    name = "training"
    status = Status.TRAINING
    done_status = Status.TRAINING_COMPLETE

    def __init__(
        self,
        plan: TrainingPlan,
        *,
        diffusion_pipe_dir: Path = Path("/opt/diffusion-pipe"),
        stop: StopRequest | None = None,
        stop_grace_s: float = 300.0,
        progress_every_s: float = 30.0,
        on_progress: Callable[[dict[str, Any]], None] | None = None,
        cpu_module: str = "minipipe",
    ) -> None:
        self.plan = plan
        self.cpu_module = cpu_module  # tests swap in trainers that fail on purpose
        self.current_run: TrainerRun | None = None  # the live process, for observers
        self.diffusion_pipe_dir = diffusion_pipe_dir
        self.stop = stop or StopRequest()
        self.stop_grace_s = stop_grace_s
        self.progress_every_s = progress_every_s
        self.on_progress = on_progress

    def run(self, ctx: StageContext) -> dict[str, Any]:
        config = tomllib.loads(self.plan.config.read_text(encoding="utf-8"))
        output_dir = Path(config["output_dir"])
        launch = plan_launch(output_dir, self.plan.lora_file)
        ctx.progress(message=f"Training: {launch.note}", resume_from=launch.resume_from)
        config_path = self.plan.config
        if launch.init_from is not None:
            config_path = with_init_from(config_path, launch.init_from)
        command = trainer_command(
            model_type=self.plan.model_type,
            config=config_path,
            resume_from=launch.resume_from,
            diffusion_pipe_dir=self.diffusion_pipe_dir,
            cpu_module=self.cpu_module,
        )
        runs_before = {p.name for p in run_dirs(output_dir)}
        progress = Progress(total_steps=self.plan.total_steps, epochs=int(config["epochs"]))
        last_sample = [0.0]

        # Both lines are printed before the files are written: a fact is recorded only once
        # its files are complete on disk (checked at the next line and when the run ends).
        pending: list[tuple[FactData, Callable[[], bool]]] = []

        def settle() -> None:
            for item in list(pending):
                payload, done = item
                if done():
                    ctx.record(payload)
                    pending.remove(item)

        def on_fact(fact: tl.LogFact, state: Progress) -> None:
            settle()
            if isinstance(fact, tl.CheckpointSaved):
                tag = fact.tag
                pending.append(
                    (
                        Checkpoint(tag=tag, step=fact.step),
                        lambda: _checkpoint_done(output_dir, tag),
                    )
                )
            elif isinstance(fact, tl.ModelSaved):
                saved = EpochSaved(name=fact.name, step=state.step)
                if fact.epoch is not None:
                    saved = EpochSaved(name=fact.name, step=state.step, epoch=fact.epoch)
                name = fact.name
                pending.append((saved, lambda: _save_done(output_dir, name, self.plan.lora_file)))
            settle()
            if self.on_progress is not None and isinstance(fact, tl.Step | tl.EpochStarted):
                self.on_progress(state.sample())
            now = time.monotonic()
            new_epoch = isinstance(fact, tl.EpochStarted)
            if isinstance(fact, tl.Step | tl.EpochStarted) and (
                new_epoch or now - last_sample[0] >= self.progress_every_s
            ):
                last_sample[0] = now
                ctx.progress(**state.sample())

        run = TrainerRun(command, ctx.job_dir / "logs" / "train.log")
        self.current_run = run
        result = follow(
            run,
            progress=progress,
            output_dir=output_dir,
            runs_before=runs_before,
            resumed=launch.resume_from,
            on_fact=on_fact,
            stop=self.stop,
            stop_grace_s=self.stop_grace_s,
        )
        settle()  # the process has exited: what is on disk now is final
        if result.stopped and not (result.exit_code == 0 and result.finished):
            self._raise_stop(result)  # a run that finished before the stop took effect is done
        return self._verify_finished(ctx, config, output_dir, result)

    def _raise_stop(self, result: RunResult) -> None:
        reason = self.stop.reason or "stop requested"
        message = f"{reason}; training stopped at step {result.progress.step}"
        if self.stop.kind == "cancel":
            raise JobCancelled(message)
        raise JobInterrupted(message)

    def _verify_finished(
        self, ctx: StageContext, config: Mapping[str, Any], output_dir: Path, result: RunResult
    ) -> dict[str, Any]:
        final = final_save_name(config)
        runs = run_dirs(output_dir)
        save: SavedLora | None = None
        if runs:
            save = next(
                (s for s in saved_loras(runs[-1], self.plan.lora_file) if s.name == final), None
            )
        if result.exit_code == 0 and result.finished and save is not None:
            return {
                "run_dir": _rel(runs[-1], ctx.job_dir),
                "lora": _rel(save.file, ctx.job_dir),
                "final_save": final,
                "steps": result.progress.step,
                "epochs_completed": int(config["epochs"]) if final.startswith("epoch") else None,
                "final_loss": result.progress.loss,
                "files": [_rel(save.file, ctx.job_dir)],
            }
        failure = tl.classify_failure(result.exit_code, result.finished, result.tail)
        if result.exit_code == 0 and result.finished:
            failure = tl.Failure(
                "missing_output",
                f"the trainer reported success but {final}/{self.plan.lora_file} is missing",
            )
        last = "\n".join(result.tail[-15:])
        raise StageFailed(
            f"training failed ({failure.reason}): {failure.advice}.\nLast log lines:\n{last}"
        )


def _checkpoint_done(output_dir: Path, tag: str) -> bool:
    """`latest` names this checkpoint (or a later one) and its folder exists."""
    runs = run_dirs(output_dir)
    if not runs:
        return False
    current = resumable_checkpoint(runs[-1])
    if current is None:
        return False
    step = int(tag.removeprefix("global_step"))
    return int(current.removeprefix("global_step")) >= step


def _save_done(output_dir: Path, name: str, lora_file: str) -> bool:
    runs = run_dirs(output_dir)
    return bool(runs) and any(s.name == name for s in saved_loras(runs[-1], lora_file))


def _rel(path: Path, base: Path) -> str:
    return str(path.relative_to(base)) if path.is_relative_to(base) else str(path)
