"""The dataset stage's plain inputs, built by the pipeline from the request, the catalogue and
the worker's settings (the download and unpacking bounds, `limits`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from pydantic import SecretStr

from stages.dataset.buckets import AspectBuckets, BatchRule
from stages.dataset.limits import DownloadLimits, ExtractLimits
from stages.model_info import ModelInfo
from stages.training.config import TrainerSpec


@dataclass(frozen=True)
class DatasetRules:
    """What the pre-flight report needs to predict diffusion-pipe's view of the dataset."""

    model: ModelInfo
    dataset_type: str  # images | videos | both | precaptioned
    trigger_word: str | None = None
    image_repeats: int = 1
    video_repeats: int = 5
    # The effective training values the report counts with.
    frame_buckets: tuple[int, ...] = (1, 33)
    resolution: int = 1024
    batch_size: int = 1
    gradient_accumulation_steps: int = 1
    epochs: int = 1
    video_clip_mode: str = "single_middle"
    # What diffusion-pipe buckets and batches with: the dataset config's aspect-ratio keys,
    # `image_micro_batch_size_per_gpu` when the request sets one, and the GPUs the worker
    # trains on, of which `pipeline_stages` make one data-parallel rank.
    aspect: AspectBuckets = field(default_factory=AspectBuckets)
    image_batch_size: int | None = None
    num_gpus: int = 1
    pipeline_stages: int = 1

    @property
    def data_parallel(self) -> int:
        """diffusion-pipe's data-parallel world size: GPUs / pipeline_stages."""
        return max(1, self.num_gpus // max(1, self.pipeline_stages))

    @property
    def batch(self) -> BatchRule:
        return BatchRule(
            batch_size=self.batch_size,
            gradient_accumulation_steps=self.gradient_accumulation_steps,
            data_parallel=self.data_parallel,
            image_batch_size=self.image_batch_size,
        )

    @property
    def captions_images(self) -> bool:
        """Images without a caption get one from the captions stage."""
        return self.dataset_type in ("images", "both")

    @property
    def captions_videos(self) -> bool:
        return self.dataset_type in ("videos", "both")


@dataclass(frozen=True)
class DatasetSource:
    """One archive to fetch: the request field it came from and its URL (may hold a secret)."""

    field: str  # images_url | videos_url
    url: str

    def __repr__(self) -> str:  # a presigned URL's query is a credential
        return f"DatasetSource(field={self.field!r}, url=<hidden>)"


@dataclass(frozen=True)
class DatasetInputs:
    sources: tuple[DatasetSource, ...]
    rules: DatasetRules
    hub_token: SecretStr | None = None  # for hf://datasets/ URLs of private or gated repos
    hub_endpoint: str = "https://huggingface.co"
    download_limits: DownloadLimits = field(default_factory=DownloadLimits)
    extract_limits: ExtractLimits = field(default_factory=ExtractLimits)
    # The trainer's spec, so its batch rule is checked once the counts are known (before the
    # model download); None where no job trains (the CLI's dataset check).
    trainer: TrainerSpec | None = None
