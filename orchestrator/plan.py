"""A job's plan: every stage's plain inputs, built once per delivery from the validated request.

The request schema and the catalogue stay here, in the orchestrator; the stages get plain,
typed inputs (their `inputs` modules) and never read either. The effective training values
(`request.effective`) are computed once, in `plan_job`, and carried into every input that needs
them: the dataset report's rules, the trainer's spec, the model card.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from events.redact import Redactor, mask_keys
from events.store import job_path
from orchestrator.catalogue import ModelEntry
from orchestrator.request import TrainingRequest, effective_training
from orchestrator.request.schema import S3Output
from orchestrator.settings import Settings
from stages.captions.inputs import CaptionInputs
from stages.dataset.buckets import AspectBuckets
from stages.dataset.inputs import DatasetInputs, DatasetRules, DatasetSource
from stages.inherit.inputs import InheritInputs
from stages.publish.inputs import Destination, HubDestination, PublishSpec, S3Destination
from stages.training.command import visible_gpus
from stages.training.config import AR_BUCKETS, JobPaths, TrainerSpec
from stages.weights.sources import Source

CAPTIONED_TYPES = frozenset({"images", "videos", "both"})


@dataclass(frozen=True)
class JobPlan:
    """One delivery's inputs for every stage, and what the job shows of its request."""

    job_id: str
    request: TrainingRequest
    entry: ModelEntry
    training: Mapping[str, Any]  # the effective training values, secrets included
    secrets: tuple[str, ...]
    job_dir: Path  # <root>/jobs/<job_id>, the id checked
    paths: JobPaths
    dataset: DatasetInputs
    captions: CaptionInputs | None  # None: the dataset comes captioned
    weights: tuple[Source, ...]
    trainer: TrainerSpec
    publish: PublishSpec
    shown_request: dict[str, Any]  # the request as kept on the volume: masked and redacted
    keep_checkpoints: int  # complete checkpoints the training stage keeps per run folder
    # `resume_from`: what this job takes over from an earlier one (`orchestrator.continuation`).
    inherit: InheritInputs | None = None

    @property
    def hub_token(self) -> str | None:
        """The token for downloading gated weights and private datasets."""
        token = self.request.hf_download_token()
        return token.get_secret_value() if token is not None else None


def plan_job(
    request: TrainingRequest, settings: Settings, job_id: str, *, num_gpus: int | None = None
) -> JobPlan:
    """`num_gpus`: the GPUs the trainer will use (None: this worker's, `training_gpus`)."""
    training = effective_training(request)
    secrets = tuple(request.secret_values())
    shown = Redactor(secrets).data(request.masked(training))
    trainer = trainer_spec(request, training)
    gpus = training_gpus(request.model.model_type) if num_gpus is None else num_gpus
    return JobPlan(
        job_id=job_id,
        request=request,
        entry=request.model,
        training=training,
        secrets=secrets,
        job_dir=job_path(settings.root, job_id),
        paths=JobPaths.for_job(settings.root, job_id),
        dataset=replace(dataset_inputs(request, training, settings, gpus), trainer=trainer),
        captions=caption_inputs(request),
        weights=request.model.sources(),
        trainer=trainer,
        publish=publish_spec(request, training),
        shown_request=shown,
        keep_checkpoints=keep_checkpoints(request, settings),
    )


def keep_checkpoints(request: TrainingRequest, settings: Settings) -> int:
    """The request's `training.keep_checkpoints`, else the worker's DPS_KEEP_CHECKPOINTS."""
    asked = request.training.keep_checkpoints
    return asked if asked is not None else settings.keep_checkpoints


def training_gpus(model_type: str) -> int:
    """The GPUs the trainer runs on: minipipe (`tiny`) is one process; diffusion-pipe gets
    `--num_gpus` from the same count (`stages.training.command`). At least 1: with none the
    launch fails with its own message."""
    return 1 if model_type == "tiny" else max(1, visible_gpus())


def dataset_rules(
    request: TrainingRequest, training: Mapping[str, Any], num_gpus: int = 1
) -> DatasetRules:
    """The report's rules; its buckets are the ones the renderer writes (`AR_BUCKETS`)."""
    spec = request.dataset
    image_micro = training.get("image_micro_batch_size_per_gpu")
    stages = training.get("pipeline_stages", 1)
    return DatasetRules(
        model=request.model.info,
        dataset_type=spec.type,
        trigger_word=spec.trigger_word,
        image_repeats=spec.image_repeats,
        video_repeats=spec.video_repeats,
        frame_buckets=tuple(b for b in training.get("frame_buckets", (1,)) if isinstance(b, int)),
        resolution=int(training.get("resolution") or 0),
        batch_size=int(training["batch_size"]),
        gradient_accumulation_steps=int(training["gradient_accumulation_steps"]),
        epochs=int(training["epochs"]),
        video_clip_mode=str(training.get("video_clip_mode")),
        aspect=AspectBuckets(
            enabled=bool(AR_BUCKETS["enable_ar_bucket"]),
            min_ar=float(AR_BUCKETS["min_ar"]),
            max_ar=float(AR_BUCKETS["max_ar"]),
            count=int(AR_BUCKETS["num_ar_buckets"]),
        ),
        image_batch_size=image_micro if _positive_int(image_micro) else None,
        num_gpus=num_gpus,
        pipeline_stages=stages if _positive_int(stages) else 1,
    )


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def dataset_inputs(
    request: TrainingRequest, training: Mapping[str, Any], settings: Settings, num_gpus: int = 1
) -> DatasetInputs:
    spec = request.dataset
    sources = tuple(
        DatasetSource(name, url)
        for name, url in (("images_url", spec.images_url), ("videos_url", spec.videos_url))
        if url is not None
    )
    return DatasetInputs(
        sources=sources,
        rules=dataset_rules(request, training, num_gpus),
        hub_token=request.hf_download_token(),
        hub_endpoint=settings.hub_endpoint,
        download_limits=replace(settings.download_limits, addresses=settings.addresses),
        extract_limits=settings.extract_limits,
    )


def caption_inputs(request: TrainingRequest) -> CaptionInputs | None:
    kind = request.dataset.type
    if kind not in CAPTIONED_TYPES:
        return None
    return CaptionInputs(
        images=kind in ("images", "both"),
        videos=kind in ("videos", "both"),
        trigger_word=request.dataset.trigger_word,
        gemini_api_key=request.api_keys.gemini_api_key,
        gemini_model=request.dataset.gemini_model,
    )


def trainer_spec(
    request: TrainingRequest, training: Mapping[str, Any] | None = None
) -> TrainerSpec:
    entry = request.model
    return TrainerSpec(
        model=entry.info,
        model_template=entry.model_template,
        training=training if training is not None else effective_training(request),
        passthrough=request.training.passthrough(),
        image_repeats=request.dataset.image_repeats,
        video_repeats=request.dataset.video_repeats,
    )


def destination(request: TrainingRequest) -> Destination:
    output = request.output
    hf, s3, local = output.huggingface, output.s3, output.local
    return Destination(
        method=output.method,
        huggingface=(
            HubDestination(token=hf.token, repo_id=hf.repo_id, private=hf.private)
            if hf is not None and hf.token is not None
            else None
        ),
        s3=_s3(s3) if s3 is not None else None,
        local_path=Path(local.path) if local is not None and local.path else None,
        upload_epochs=output.upload_epochs,
    )


def _s3(spec: S3Output) -> S3Destination | None:
    keys: tuple[SecretStr | None, SecretStr | None] = (spec.access_key, spec.secret_key)
    if not spec.bucket or keys[0] is None or keys[1] is None:
        return None
    return S3Destination(
        bucket=spec.bucket,
        access_key=keys[0],
        secret_key=keys[1],
        endpoint_url=spec.endpoint_url,
        region=spec.region,
        key_prefix=spec.key_prefix,
    )


def publish_spec(
    request: TrainingRequest, training: Mapping[str, Any] | None = None
) -> PublishSpec:
    values = training if training is not None else effective_training(request)
    return PublishSpec(
        model=request.model.info,
        destination=destination(request),
        trigger_word=request.dataset.trigger_word,
        card_training=mask_keys(values),
        secrets=tuple(request.secret_values()),
    )
