"""A job's stages for its plan, in order, wired to one delivery's settings and stop signal.

[inherit (STARTING), for `resume_from`] -> access (STARTING: destinations, keys and dataset
URLs answer) -> prepare (STARTING) -> dataset (DOWNLOADING) ->
captions (CAPTIONING, when asked) -> weights (MODEL_DOWNLOAD) -> training (TRAINING) ->
publish (UPLOADING).
The base model starts downloading in the background during `prepare`, so it overlaps the
dataset download and captioning; `weights` waits for the same `ModelDownload`. JoyCaption, when
images will be captioned, starts beside it; `captions` waits for that one.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from orchestrator.access_inputs import access_inputs, gemini_settings
from orchestrator.catalogue import JOYCAPTION
from orchestrator.plan import JobPlan
from orchestrator.response import complete_event_data, response_from_results
from orchestrator.settings import Settings
from stages.access.stage import Access
from stages.captions.inputs import CaptionInputs
from stages.captions.stage import Captions
from stages.contract import Stage, StageContext, StopRequest
from stages.dataset.stage import Dataset
from stages.errors import StageFailed
from stages.inherit.stage import Inherit
from stages.publish.common import PublishInputs, RetryPolicy
from stages.publish.stage import (
    Publish,
    PublishOptions,
    dataset_report,
    publish,
    record_verified,
)
from stages.training.prepare import Prepare
from stages.training.run_folder import newest_lora
from stages.training.stage import ConfiguredTraining
from stages.weights.stage import ModelDownload, Weights

CaptionsFactory = Callable[[CaptionInputs], Stage]  # tests swap in a tiny captioner
PUBLISH_WAIT_ENV = "DPS_HUB_PUBLISH_MAX_WAIT_S"


@dataclass
class Delivery:
    """What one delivery of a job shares between its stages and the handler."""

    plan: JobPlan
    settings: Settings
    stop: StopRequest = field(default_factory=StopRequest)
    on_sample: Callable[[dict[str, Any]], None] | None = None
    publish_options: PublishOptions | None = None
    captions_factory: CaptionsFactory | None = None
    stop_grace_s: float = 300.0
    _download: ModelDownload | None = field(default=None, init=False, repr=False)
    _captioner: ModelDownload | None = field(default=None, init=False, repr=False)

    @property
    def job_id(self) -> str:
        return self.plan.job_id

    def model_download(self) -> ModelDownload:
        """The delivery's one model download, started by prepare and awaited by weights."""
        if self._download is None:
            plan = self.plan
            self._download = ModelDownload(
                plan.entry.model_type, plan.weights, self.settings.weights, token=plan.hub_token
            )
        return self._download

    def captioner_download(self) -> ModelDownload | None:
        """JoyCaption's download when images will be captioned, started by prepare beside the
        base model's and awaited by the captions stage; None otherwise."""
        captions = self.plan.captions
        if captions is None or not captions.images:
            return None
        if self._captioner is None:
            self._captioner = ModelDownload(
                "joycaption", JOYCAPTION, self.settings.weights, token=self.plan.hub_token
            )
        return self._captioner

    def end(self) -> None:
        """The job has ended, however it ended: stop its model downloads if they still run."""
        for download in (self._download, self._captioner):
            if download is not None:
                download.cancel()

    def publish_opts(self) -> PublishOptions:
        """The publish's settings; the LoRA is always checked against the weights under the
        worker's models root, whoever built the options."""
        options = self.publish_options or PublishOptions(
            hub_endpoint=self.settings.hub_endpoint,
            local_roots=self.settings.local_output_roots,
            addresses=self.settings.addresses,
            hf_policy=hub_policy(os.environ),
        )
        if options.models_root is None:
            options = replace(options, models_root=self.settings.models_root)
        return options


def hub_policy(env: Mapping[str, str]) -> RetryPolicy:
    """The Hub publish's retries; `DPS_HUB_PUBLISH_MAX_WAIT_S` bounds the time a publish
    waits, in all, for the Hub's rate limit and the repo's commit budget (default 900 s: see
    `stages.publish.common.PUBLISH_WAIT_S`); a longer wait defers the publish at once."""
    raw = (env.get(PUBLISH_WAIT_ENV) or "").strip()
    if not raw:
        return RetryPolicy()
    try:
        wait = float(raw)
    except ValueError:
        raise ValueError(f"{PUBLISH_WAIT_ENV} must be a number of seconds, got {raw!r}") from None
    if wait < 0:
        raise ValueError(f"{PUBLISH_WAIT_ENV} must be at least 0, got {raw!r}")
    return RetryPolicy(publish_wait_s=wait)


def build_stages(delivery: Delivery) -> list[Stage]:
    plan, settings = delivery.plan, delivery.settings
    download = delivery.model_download()
    # A captions factory (tests) brings its own captioner: no JoyCaption download then.
    captioner = delivery.captioner_download() if delivery.captions_factory is None else None
    also = (captioner,) if captioner is not None else ()
    prepare = Prepare(plan.shown_request, download, plan.entry.info, also=also)
    # A continued job takes over its origin's files first: later checks then see them in place.
    inherited: list[Stage] = [Inherit(plan.inherit)] if plan.inherit is not None else []
    captions = None
    if plan.captions is not None:
        if delivery.captions_factory is not None:
            captions = delivery.captions_factory(plan.captions)
        else:
            captions = Captions(plan.captions, model=captioner, stop=delivery.stop)
    # Every outside party the job needs answers before anything downloads (prepare starts the
    # model's download): a bad destination, key or dataset URL costs no GPU time.
    access = Access(access_inputs(plan, delivery.publish_opts(), gemini_settings(captions)))
    stages: list[Stage] = [*inherited, access, prepare, Dataset(plan.dataset)]
    if captions is not None:
        stages.append(captions)
    training = ConfiguredTraining(
        plan.trainer,
        plan.paths,
        diffusion_pipe_dir=settings.diffusion_pipe_dir,
        stop=delivery.stop,
        stop_grace_s=delivery.stop_grace_s,
        on_progress=delivery.on_sample,
        keep_checkpoints=plan.keep_checkpoints,
    )
    weights = Weights(download, stop=delivery.stop)
    stages += [weights, training, Publish(plan.publish, delivery.publish_opts())]
    return stages


def finish(delivery: Delivery) -> Callable[[Mapping[str, dict[str, Any]]], dict[str, Any]]:
    """The COMPLETE event's data: the seed's COMPLETE update plus the response to return."""

    def data(results: Mapping[str, dict[str, Any]]) -> dict[str, Any]:
        model_type = delivery.plan.entry.model_type
        response = response_from_results(delivery.job_id, model_type, results)
        return {**complete_event_data(results["publish"]), "response": response}

    return data


def salvage(delivery: Delivery) -> Callable[[StageContext], dict[str, Any] | None]:
    """On cancel: publish the newest complete LoRA, if training saved one."""

    def run(ctx: StageContext) -> dict[str, Any] | None:
        plan = delivery.plan
        saved = newest_lora(ctx.job_dir / "output", plan.entry.lora_file)
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
            spec=plan.publish,
            training=training,
            dataset_report=dataset_report(ctx.results),
        )
        try:
            published = publish(inputs, delivery.publish_opts(), record_verified(ctx.record))
        except StageFailed as exc:
            return {"error": str(exc)}
        return {"latest_epoch": saved.name, "output": published["output"]}

    return run
