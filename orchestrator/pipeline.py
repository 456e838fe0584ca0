"""A job's stages for a request, in order, wired to one delivery's settings and stop signal.

prepare (STARTING) -> dataset (DOWNLOADING) -> captions (CAPTIONING, when asked) ->
weights (MODEL_DOWNLOAD) -> training (TRAINING) -> publish (UPLOADING).
The base model starts downloading in the background during `prepare`, so it overlaps the
dataset download and captioning; `weights` waits for it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from events.atomic import write_atomic
from events.redact import Redactor
from events.vocabulary import Status
from orchestrator.request import TrainingRequest, effective_training
from orchestrator.settings import Settings
from stages.captions.stage import Captions
from stages.contract import Stage, StageContext, StopRequest
from stages.dataset.stage import Dataset
from stages.errors import StageFailed
from stages.publish.common import PublishInputs
from stages.publish.stage import (
    Publish,
    PublishOptions,
    complete_event_data,
    publish,
    response_from_results,
)
from stages.training.config import CUT_BY_SERVICE, JobPaths, preflight, render, write_configs
from stages.training.run_folder import newest_lora
from stages.training.stage import Training, TrainingPlan
from stages.weights.stage import Weights, start_model_download

CAPTIONED_TYPES = frozenset({"images", "videos", "both"})
REQUEST_FILE = "request.json"


@dataclass
class Delivery:
    """What one delivery of a job shares between its stages and the handler."""

    job_id: str
    request: TrainingRequest
    settings: Settings
    stop: StopRequest = field(default_factory=StopRequest)
    on_sample: Callable[[dict[str, Any]], None] | None = None
    publish_options: PublishOptions | None = None
    captions_factory: Callable[[], Stage] | None = None  # tests swap in a tiny captioner
    stop_grace_s: float = 300.0

    @property
    def job_dir(self) -> Path:
        return self.settings.root / "jobs" / self.job_id

    def hub_token(self) -> str | None:
        token = self.request.hf_download_token()
        return token.get_secret_value() if token is not None else None

    def publish_opts(self) -> PublishOptions:
        return self.publish_options or PublishOptions(hub_endpoint=self.settings.hub_endpoint)


class Prepare(Stage):
    """STARTING: check the request against the trainer's rules, keep a redacted copy, and start
    the base-model download in the background."""

    name = "prepare"
    status = Status.STARTING

    def __init__(self, delivery: Delivery, weights: Weights) -> None:
        self.delivery = delivery
        self.weights = weights

    def run(self, ctx: StageContext) -> dict[str, Any]:
        request = self.delivery.request
        preflight(request)  # a config diffusion-pipe would refuse fails here, before downloads
        # masked() hides the secret fields; the redactor also catches a secret's value pasted
        # into any other field (a token in a URL path, a trigger word).
        shown = Redactor(request.secret_values()).data(request.masked())
        write_atomic(ctx.job_dir / REQUEST_FILE, json.dumps(shown, indent=2) + "\n")
        self.weights.download = start_model_download(
            request.model_type, settings=self.delivery.settings, token=self.delivery.hub_token()
        )
        return {"files": [REQUEST_FILE], "model_download": "started"}


class ConfiguredTraining(Training):
    """Training whose configs are rendered when it starts, from the prepared dataset."""

    def __init__(self, delivery: Delivery) -> None:
        self.delivery = delivery
        super().__init__(
            TrainingPlan(delivery.request.model_type, Path("unset"), ""),
            diffusion_pipe_dir=delivery.settings.diffusion_pipe_dir,
            stop=delivery.stop,
            stop_grace_s=delivery.stop_grace_s,
            on_progress=delivery.on_sample,
        )

    def run(self, ctx: StageContext) -> dict[str, Any]:
        request = self.delivery.request
        dataset = ctx.results.get("dataset", {})
        paths = JobPaths.for_job(self.delivery.settings.root, self.delivery.job_id)
        video_count = dataset.get("videos")
        if video_count:
            video_count = self._cut_clips(ctx, paths, video_count)
        configs = render(
            request,
            paths,
            image_count=dataset.get("images"),
            video_count=video_count,
        )
        _, main = write_configs(configs, paths.config_dir)
        self.plan = TrainingPlan(
            request.model_type,
            main,
            request.model.lora_file,
            total_steps=dataset.get("total_steps"),
        )
        return super().run(ctx)

    def _cut_clips(self, ctx: StageContext, paths: JobPaths, videos: int) -> int:
        """multiple_overlapping: cut the captioned videos into clips; returns the clip count."""
        request = self.delivery.request
        eff = effective_training(request)
        entry = request.model
        if eff.get("video_clip_mode") != CUT_BY_SERVICE or not entry.trains_videos:
            return videos
        assert paths.videos_dir is not None
        assert paths.clips_dir is not None
        assert entry.video_fps is not None, f"{entry.model_type} has no video frame rate"
        from stages.training.clips import cut_clips  # noqa: PLC0415 - PyAV, only when cutting

        ctx.progress(message=f"cutting {videos} video(s) into overlapping clips")
        summary = cut_clips(
            paths.videos_dir,
            paths.clips_dir,
            model_fps=entry.video_fps,
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


def needs_captions(request: TrainingRequest) -> bool:
    return request.dataset.type in CAPTIONED_TYPES


def build_stages(delivery: Delivery) -> list[Stage]:
    request, settings = delivery.request, delivery.settings
    weights = Weights(request.model_type, settings=settings, token=delivery.hub_token())
    stages: list[Stage] = [Prepare(delivery, weights), Dataset(settings=settings)]
    if needs_captions(request):
        stages.append(delivery.captions_factory() if delivery.captions_factory else Captions())
    stages += [weights, ConfiguredTraining(delivery), Publish(delivery.publish_opts())]
    return stages


def finish(delivery: Delivery) -> Callable[[Mapping[str, dict[str, Any]]], dict[str, Any]]:
    """The COMPLETE event's data: the seed's COMPLETE update plus the response to return."""

    def data(results: Mapping[str, dict[str, Any]]) -> dict[str, Any]:
        response = response_from_results(delivery.job_id, delivery.request.model_type, results)
        return {**complete_event_data(results["publish"]), "response": response}

    return data


def salvage(delivery: Delivery) -> Callable[[StageContext], dict[str, Any] | None]:
    """On cancel: publish the newest complete LoRA, if training saved one."""

    def run(ctx: StageContext) -> dict[str, Any] | None:
        request = delivery.request
        saved = newest_lora(ctx.job_dir / "output", request.model.lora_file)
        if saved is None:
            return None
        training = {
            "lora": str(saved.file.relative_to(ctx.job_dir)),
            "final_save": saved.name,
            "epochs_completed": saved.number if saved.kind == "epoch" else None,
        }
        inputs = PublishInputs(
            job_id=delivery.job_id,
            job_dir=ctx.job_dir,
            request=request,
            training=training,
            dataset_report=dict(ctx.results.get("dataset", {})),
        )
        try:
            published = publish(inputs, delivery.publish_opts())
        except StageFailed as exc:
            return {"error": str(exc)}
        return {"latest_epoch": saved.name, "output": published["output"]}

    return run
