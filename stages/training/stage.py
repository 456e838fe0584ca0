"""The training stage (TRAINING -> TRAINING_COMPLETE): run the trainer to completion, resuming
from what an earlier attempt left.

`Training` runs a rendered config (`TrainingPlan`); `ConfiguredTraining` first renders the
configs from the job's `TrainerSpec` and the prepared dataset (cutting video clips for
`multiple_overlapping`), then runs them. Success is exit 0 **and** `TRAINING COMPLETE!` **and**
the final save with its LoRA file; anything else is classified (`log_lines.classify_failure`).
"""

from __future__ import annotations

import functools
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from events.facts import Checkpoint, EpochSaved, FactData
from events.vocabulary import Status
from stages.contract import Stage, StageContext, StopRequest
from stages.errors import StageFailed
from stages.throttle import Throttle
from stages.training import checkpoints, failure_text
from stages.training import command as trainer
from stages.training import log_lines as tl
from stages.training.config import JobPaths, TrainerSpec, render, write_configs
from stages.training.driver import HANG_AFTER_TRACEBACK_S, Progress, RunResult, TrainerRun, follow
from stages.training.leftovers import clear_leftovers
from stages.training.resume import plan_launch, with_init_from
from stages.training.run_folder import (
    SavedLora,
    checkpoint_step,
    resumable_checkpoint,
    run_dirs,
    saved_loras,
)
from stages.training.traps import CUT_BY_SERVICE
from stages.weights.sources import HUB_CACHE


@dataclass(frozen=True)
class TrainingPlan:
    """What the training stage needs, decided before it runs."""

    model_type: str
    config: Path  # the main TOML, absolute
    lora_file: str
    total_steps: int | None = None


def final_save_names(config: Mapping[str, Any]) -> tuple[str, ...]:
    """The saves diffusion-pipe may end a run with, when its log does not say which: the end of
    the last epoch is checked before `max_steps`, so either can be the last one."""
    names = [f"epoch{int(config['epochs'])}"]
    if config.get("max_steps"):
        names.append(f"step{int(config['max_steps'])}")
    return tuple(names)


class _RunFacts:
    """Turns the trainer's log facts into recorded facts and progress samples.

    Both save lines are printed before the files are written: a CHECKPOINT or EPOCH_SAVED is
    recorded only once its files are complete on disk (checked at the next line and when the
    run ends)."""

    def __init__(
        self,
        ctx: StageContext,
        output_dir: Path,
        lora_file: str,
        *,
        progress_every_s: float,
        on_progress: Callable[[dict[str, Any]], None] | None,
        keep_checkpoints: int = checkpoints.DEFAULT_KEEP,
    ) -> None:
        self.ctx, self.output_dir, self.lora_file = ctx, output_dir, lora_file
        self.keep_checkpoints = keep_checkpoints
        self.on_progress = on_progress
        self.throttle = Throttle(progress_every_s)
        self.pending: list[tuple[FactData, Callable[[], bool]]] = []

    def settle(self) -> None:
        for item in list(self.pending):
            payload, done = item
            if done():
                self.ctx.record(payload)
                if isinstance(payload, Checkpoint):  # `latest` names it: older ones may go
                    checkpoints.after_checkpoint(self.ctx, self.output_dir, self.keep_checkpoints)
                self.pending.remove(item)

    def __call__(self, fact: tl.LogFact, state: Progress) -> None:
        self.settle()
        if isinstance(fact, tl.CheckpointSaved):
            checkpoint = Checkpoint(tag=fact.tag, step=fact.step)
            done = functools.partial(_checkpoint_done, self.output_dir, fact.tag)
            self.pending.append((checkpoint, done))
        elif isinstance(fact, tl.ModelSaved):
            epoch = {"epoch": fact.epoch} if fact.epoch is not None else {}
            saved = EpochSaved(name=fact.name, step=state.step, **epoch)
            done = functools.partial(_save_done, self.output_dir, fact.name, self.lora_file)
            self.pending.append((saved, done))
        self.settle()
        if not isinstance(fact, tl.Step | tl.EpochStarted):
            return
        if self.on_progress is not None:
            self.on_progress(state.sample())
        if self.throttle.due(force=isinstance(fact, tl.EpochStarted)):
            self.ctx.progress(**state.sample())


class Training(Stage):
    """Run the trainer to completion, resuming from what an earlier attempt left."""

    name = "training"
    status = Status.TRAINING
    done_status = Status.TRAINING_COMPLETE
    hub_cache: Path | None = None  # the trainer's HF_HUB_CACHE (weights resolved by repo id)

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
        keep_checkpoints: int = checkpoints.DEFAULT_KEEP,
        hang_after_traceback_s: float = HANG_AFTER_TRACEBACK_S,
    ) -> None:
        if keep_checkpoints < 1:
            raise ValueError(f"keep_checkpoints must be at least 1, got {keep_checkpoints}")
        self.plan = plan
        self.keep_checkpoints = keep_checkpoints  # complete checkpoints kept per run folder
        self.cpu_module = cpu_module  # tests swap in trainers that fail on purpose
        self.current_run: TrainerRun | None = None  # the live process, for observers
        self.diffusion_pipe_dir = diffusion_pipe_dir
        self.stop = stop or StopRequest()
        self.stop_grace_s = stop_grace_s
        self.hang_after_traceback_s = hang_after_traceback_s
        self.progress_every_s = progress_every_s
        self.on_progress = on_progress

    def run(self, ctx: StageContext) -> dict[str, Any]:
        config = tomllib.loads(self.plan.config.read_text(encoding="utf-8"))
        output_dir = Path(config["output_dir"])
        checkpoints.before_launch(ctx, output_dir, self.keep_checkpoints)
        for removed in clear_leftovers(output_dir):
            ctx.progress(message=f"Training: removed {removed}")
        launch = plan_launch(output_dir, self.plan.lora_file)
        ctx.progress(message=f"Training: {launch.note}", resume_from=launch.resume_from)
        config_path = self.plan.config
        if launch.init_from is not None:
            config_path = with_init_from(config_path, launch.init_from)
        command = trainer.trainer_command(  # looked up per run: tests swap the trainer
            model_type=self.plan.model_type,
            config=config_path,
            resume_from=launch.resume_from,
            diffusion_pipe_dir=self.diffusion_pipe_dir,
            cpu_module=self.cpu_module,
            hub_cache=self.hub_cache,
        )
        runs_before = {p.name for p in run_dirs(output_dir)}
        progress = Progress(total_steps=self.plan.total_steps, epochs=int(config["epochs"]))
        facts = _RunFacts(
            ctx,
            output_dir,
            self.plan.lora_file,
            progress_every_s=self.progress_every_s,
            on_progress=self.on_progress,
            keep_checkpoints=self.keep_checkpoints,
        )
        run = TrainerRun(command, ctx.job_dir / "logs" / "train.log")
        self.current_run = run
        result = follow(
            run,
            progress=progress,
            output_dir=output_dir,
            runs_before=runs_before,
            resumed=launch.resume_from,
            on_fact=facts,
            stop=self.stop,
            stop_grace_s=self.stop_grace_s,
            hang_after_traceback_s=self.hang_after_traceback_s,
        )
        facts.settle()  # the process has exited: what is on disk now is final
        _note_extra_epoch(ctx, config, result.progress)
        if result.stopped and not (result.exit_code == 0 and result.finished):
            self._raise_stop(output_dir, result)  # a run that finished first is done
        return self._verify_finished(ctx, config, output_dir, result)

    def _raise_stop(self, output_dir: Path, result: RunResult) -> None:
        """The answer names what a retry resumes from, which is on disk, not the last step the
        log showed (steps after the newest checkpoint are trained again)."""
        nxt = plan_launch(output_dir, self.plan.lora_file)
        if nxt.checkpoint is not None:
            then = f"a retry resumes from checkpoint {nxt.checkpoint}"
        elif nxt.init_from is not None:
            then = f"no checkpoint yet; a retry starts from the saved LoRA {nxt.init_from.name}"
        else:
            then = "no checkpoint yet; a retry starts training over"
        raise self.stop.error(f"training stopped at step {result.progress.step}; {then}")

    def _verify_finished(
        self, ctx: StageContext, config: Mapping[str, Any], output_dir: Path, result: RunResult
    ) -> dict[str, Any]:
        # The log names the run's last save; without it (a lost tail), either possible one.
        names = (result.progress.final_save,) if result.progress.final_save else None
        finals = names or final_save_names(config)
        final = finals[0]
        runs = run_dirs(output_dir)
        save: SavedLora | None = None
        if runs:
            saves = {s.name: s for s in saved_loras(runs[-1], self.plan.lora_file)}
            save = next((saves[name] for name in finals if name in saves), None)
        log_note = ""
        if result.log_error is not None:
            log_note = f" train.log could not be written ({result.log_error}), so it is incomplete."
        if result.exit_code == 0 and result.finished and save is not None:
            if log_note:
                ctx.progress(message=log_note.strip())
            return {
                "run_dir": _rel(runs[-1], ctx.job_dir),
                "lora": _rel(save.file, ctx.job_dir),
                "final_save": save.name,
                "steps": result.progress.step,
                "epochs_completed": save.number if save.kind == "epoch" else None,
                "final_loss": result.progress.loss,
                "files": [_rel(save.file, ctx.job_dir)],
            }
        failure = tl.classify_failure(
            result.exit_code,
            result.finished,
            result.tail,
            log_error=result.log_error,
            hung=result.hung,
        )
        if result.exit_code == 0 and result.finished and failure.reason != "disk_full":
            failure = tl.Failure(
                "missing_output",
                f"the trainer reported success but {final}/{self.plan.lora_file} is missing",
            )
        roots = [str(self.diffusion_pipe_dir), str(ctx.job_dir), str(output_dir)]
        why = "\n".join(failure_text.summary(result.tail, roots))
        raise StageFailed(
            f"training failed ({failure.reason}): {failure.advice}.{log_note}\n{why}\n"
            "(the whole trainer output is in the job's logs/train.log)"
        )


def _note_extra_epoch(ctx: StageContext, config: Mapping[str, Any], progress: Progress) -> None:
    """diffusion-pipe resumed past its last epoch trains one more (its loader state after the
    final checkpoint is the next epoch): said, so that nobody takes it for work lost."""
    epochs = int(config["epochs"])
    if progress.resumed_at is not None and progress.resumed_at[0] > epochs:
        ctx.progress(
            message=f"Training: the run had finished all {epochs} epochs before this attempt; "
            f"diffusion-pipe trains one more (epoch {progress.resumed_at[0]}) when resumed "
            "after its final checkpoint, and that epoch's save is the result",
            extra_epoch=progress.resumed_at[0],
        )


def _checkpoint_done(output_dir: Path, tag: str) -> bool:
    """`latest` names this checkpoint (or a later one) and its folder exists."""
    runs = run_dirs(output_dir)
    if not runs:
        return False
    current = resumable_checkpoint(runs[-1])
    if current is None:
        return False
    return checkpoint_step(current) >= checkpoint_step(tag)


def _save_done(output_dir: Path, name: str, lora_file: str) -> bool:
    runs = run_dirs(output_dir)
    return bool(runs) and any(s.name == name for s in saved_loras(runs[-1], lora_file))


def _rel(path: Path, base: Path) -> str:
    return str(path.relative_to(base)) if path.is_relative_to(base) else str(path)


class ConfiguredTraining(Training):
    """Training whose configs are rendered when it starts, from the job's `TrainerSpec` and the
    prepared dataset (its counts enable the batch check; its videos may be cut into clips)."""

    def __init__(
        self,
        spec: TrainerSpec,
        paths: JobPaths,
        *,
        diffusion_pipe_dir: Path = Path("/opt/diffusion-pipe"),
        stop: StopRequest | None = None,
        stop_grace_s: float = 300.0,
        on_progress: Callable[[dict[str, Any]], None] | None = None,
        keep_checkpoints: int = checkpoints.DEFAULT_KEEP,
    ) -> None:
        self.spec, self.paths = spec, paths
        self.hub_cache = paths.models_root / HUB_CACHE
        super().__init__(
            TrainingPlan(spec.model.model_type, paths.config_dir, spec.model.lora_file),
            diffusion_pipe_dir=diffusion_pipe_dir,
            stop=stop,
            stop_grace_s=stop_grace_s,
            on_progress=on_progress,
            keep_checkpoints=keep_checkpoints,
        )

    def run(self, ctx: StageContext) -> dict[str, Any]:
        dataset = ctx.results.get("dataset", {})
        video_count = dataset.get("videos")
        if video_count:
            video_count = self._cut_clips(ctx, video_count)
        configs = render(
            self.spec,
            self.paths,
            image_count=dataset.get("images"),
            video_count=video_count,
            num_gpus=int(dataset.get("data_parallel") or 1),  # as the dataset stage counted
        )
        _, main = write_configs(configs, self.paths.config_dir)
        self.plan = TrainingPlan(
            self.spec.model.model_type,
            main,
            self.spec.model.lora_file,
            total_steps=dataset.get("total_steps"),
        )
        return super().run(ctx)

    def _cut_clips(self, ctx: StageContext, videos: int) -> int:
        """multiple_overlapping: cut the captioned videos into clips; returns the clip count."""
        model, eff = self.spec.model, self.spec.training
        if eff.get("video_clip_mode") != CUT_BY_SERVICE or not model.trains_videos:
            return videos
        assert self.paths.videos_dir is not None
        assert self.paths.clips_dir is not None
        assert model.video_fps is not None, f"{model.model_type} has no video frame rate"
        from stages.training.clips import cut_clips  # noqa: PLC0415 - PyAV, only when cutting

        ctx.progress(message=f"cutting {videos} video(s) into overlapping clips")
        summary = cut_clips(
            self.paths.videos_dir,
            self.paths.clips_dir,
            model_fps=model.video_fps,
            frame_buckets=list(eff["frame_buckets"]),
            on_video=lambda done, total: ctx.progress(
                message=f"cutting clips: video {done} of {total}"
            ),
        )
        ctx.progress(
            message=f"{summary.clips} clip(s) from {summary.videos} video(s) "
            f"({summary.split} cut into several)",
            clips=summary.clips,
        )
        return summary.clips
