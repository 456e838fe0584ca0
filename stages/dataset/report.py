"""The pre-flight dataset report: what diffusion-pipe will train on, before any GPU time.

`check.build_report` fills it in; each problem it can find is a `PROBLEMS` key with its severity
and what it means for the user. `DatasetReport.to_event()` is small (counts and at most
`EXAMPLES` names per problem); `fatal()` lists the problems that must stop the job before a
model download.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from stages.dataset.buckets import Bucket

EXAMPLES = 20
NO_MEDIA = (
    "No images/videos found in the dataset: ensure your zip file contains actual media files "
    "(images: JPG, JPEG, PNG, WebP, BMP, TIFF; videos: MP4, AVI, MOV, MKV, WebM), check that "
    "files aren't nested too deeply in folders, and on macOS create the zip via terminal "
    "(`zip -r`) not Finder"
)

# Problem keys -> (severity, what it means for the user). "fatal" stops the job.
STILL_USED = frozenset({"small_images", "huge_images"})  # warnings about media that is trained on
PROBLEMS: Mapping[str, tuple[str, str]] = {
    "corrupt_images": ("warning", "cannot be decoded; diffusion-pipe skips them"),
    "image_too_large": (
        "warning",
        "over twice Pillow's MAX_IMAGE_PIXELS: it refuses them as decompression bombs, so "
        "diffusion-pipe skips them",
    ),
    "huge_images": (
        "warning",
        "over 67 megapixels: trained on, but every load decodes the whole image (slow, GBs of "
        "memory); downscale them",
    ),
    "animated": (
        "fatal",
        "animated WebP/GIF: diffusion-pipe raises NotImplementedError on "
        "animated WebP; convert them to a still image or an MP4",
    ),
    "corrupt_videos": ("warning", "cannot be decoded; diffusion-pipe skips them"),
    "short_videos": (
        "warning",
        "fewer frames (at the model's frame rate) than the smallest frame bucket; diffusion-pipe "
        "drops them",
    ),
    "unused_images": ("warning", "this model trains on videos only; the images are ignored"),
    "unused_videos": ("warning", "this model trains on images only; the videos are ignored"),
    "missing_captions": (
        "warning",
        "no .txt caption; diffusion-pipe skips them "
        "(skip_empty_caption) unless captioning writes one",
    ),
    "empty_captions": ("warning", "the caption file is empty"),
    "captions_not_utf8": (
        "fatal",
        "caption is not UTF-8 text; diffusion-pipe would crash reading it; save it as UTF-8",
    ),
    "small_images": ("warning", "smaller than the training resolution; they are upscaled"),
    "bucket_dropped": (
        "warning",
        "training items (media x repeats) diffusion-pipe leaves out of every epoch: it trims "
        "each size bucket (aspect ratio and frame count) to a multiple of the global batch and "
        "drops a bucket smaller than that whole; lower training.batch_size or "
        "training.gradient_accumulation_steps, raise dataset.image_repeats/video_repeats, or "
        "crop the media to fewer aspect ratios",
    ),
}


@dataclass(frozen=True)
class Spread:
    min: float
    median: float
    max: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread | None:
        if not values:
            return None
        return cls(min(values), float(statistics.median(values)), max(values))

    def as_dict(self) -> dict[str, float]:
        return {
            "min": round(self.min, 3),
            "median": round(self.median, 3),
            "max": round(self.max, 3),
        }


@dataclass(frozen=True)
class DatasetReport:
    model_type: str
    dataset_type: str
    images: int  # image files found (before any is dropped)
    videos: int
    usable_images: int  # what diffusion-pipe will train on, for this model and request
    usable_videos: int
    captions_found: int
    captions_missing: int
    captions_empty: int
    captions_not_utf8: int
    captions_with_trigger: int
    skipped_no_caption: int  # media diffusion-pipe would skip for want of a caption
    problems: Mapping[str, tuple[int, tuple[str, ...]]]  # key -> (count, a few names)
    width: Spread | None = None
    height: Spread | None = None
    aspect_buckets: Mapping[str, int] = field(default_factory=dict)
    frames: Spread | None = None
    fps: Spread | None = None
    duration_s: Spread | None = None
    global_batch: int = 1
    epochs: int = 1
    steps_per_epoch: int = 0
    total_steps: int = 0
    notes: tuple[str, ...] = ()
    video_clips: int = 0  # training items from the usable videos (more with multiple_overlapping)
    num_gpus: int = 1  # the GPUs the worker trains on
    data_parallel: int = 1  # diffusion-pipe's data-parallel world size (GPUs / pipeline_stages)
    buckets: tuple[Bucket, ...] = ()  # the size buckets the steps are counted over
    dropped_items: int = 0  # items per epoch the per-bucket trimming leaves out

    def fatal(self) -> list[str]:
        """Messages for the problems that must stop the job now."""
        out: list[str] = []
        if self.usable_images + self.usable_videos == 0:
            out.append(NO_MEDIA if self.images + self.videos == 0 else self._nothing_usable())
        if self.dataset_type == "precaptioned" and self.captions_missing:
            count, names = self.problems["missing_captions"]
            out.append(
                f'dataset.type is "precaptioned" but {count} media file(s) have no caption '
                f"(.txt with the same name): {_few(names)}; add the captions or use dataset.type "
                '"images"/"videos"/"both" to caption them automatically'
            )
        for key, (severity, meaning) in PROBLEMS.items():
            if severity == "fatal" and key in self.problems:
                count, names = self.problems[key]
                out.append(f"{count} file(s) {meaning}: {_few(names)}")
        if self.usable_images + self.usable_videos and not self.steps_per_epoch:
            gpus = f" on {self.data_parallel} GPUs" if self.data_parallel > 1 else ""
            out.append(
                f"training.batch_size: 0 steps per epoch: every size bucket (aspect ratio and "
                f"frame count) holds fewer items than the global batch ({self.global_batch}"
                f'{gpus}), so diffusion-pipe would drop them all ("Processed dataset was '
                'empty"); lower training.batch_size or training.gradient_accumulation_steps, '
                "raise dataset.image_repeats/video_repeats, or crop the media to fewer aspect "
                "ratios"
            )
        return out

    def _nothing_usable(self) -> str:
        reasons = ", ".join(
            f"{k} {self.problems[k][0]}" for k in self.problems if k not in STILL_USED
        )
        return f"No usable images/videos in the dataset for {self.model_type} ({reasons})"

    def to_event(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "model_type": self.model_type,
            "dataset_type": self.dataset_type,
            "images": self.images,
            "videos": self.videos,
            "usable_images": self.usable_images,
            "usable_videos": self.usable_videos,
            "video_clips": self.video_clips,
            "captions": {
                "found": self.captions_found,
                "missing": self.captions_missing,
                "empty": self.captions_empty,
                "not_utf8": self.captions_not_utf8,
                "with_trigger": self.captions_with_trigger,
            },
            "skipped_no_caption": self.skipped_no_caption,
            "problems": {
                k: {"count": c, "examples": list(n[:EXAMPLES]), "severity": PROBLEMS[k][0]}
                for k, (c, n) in self.problems.items()
            },
            "global_batch": self.global_batch,
            "epochs": self.epochs,
            "steps_per_epoch": self.steps_per_epoch,
            "total_steps": self.total_steps,
            "num_gpus": self.num_gpus,
            "data_parallel": self.data_parallel,
            "dropped_items": self.dropped_items,
            "buckets": [b.as_dict() for b in self.buckets],
        }
        for name in ("width", "height", "frames", "fps", "duration_s"):
            spread = getattr(self, name)
            if spread is not None:
                data[name] = spread.as_dict()
        if self.aspect_buckets:
            data["aspect_buckets"] = dict(self.aspect_buckets)
        if self.notes:
            data["notes"] = list(self.notes)
        fatal = self.fatal()
        if fatal:
            data["fatal"] = fatal
        return data


def _few(names: Sequence[str], n: int = 5) -> str:
    more = f" and {len(names) - n} more" if len(names) > n else ""
    return ", ".join(names[:n]) + more


def problem_lines(report: DatasetReport) -> Iterable[tuple[str, int, str, Sequence[str]]]:
    """(severity, count, meaning, examples) per problem, for printing."""
    for key, (count, names) in report.problems.items():
        severity, meaning = PROBLEMS[key]
        yield severity, count, f"{key}: {meaning}", names
