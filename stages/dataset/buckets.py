"""Steps per epoch as diffusion-pipe counts them: per size bucket, on every data-parallel rank.

Read from diffusion-pipe's utils/dataset.py at the pin (8f83dbf). Each media file goes to the
aspect-ratio bucket nearest in log space (`_find_closest_ar_bucket`; the buckets are
`geomspace(min_ar, max_ar, num_ar_buckets)` rounded to 3 decimals, or 1.0 alone without AR
bucketing) and to the largest frame bucket it fills (1 is always one; a video never goes to 1).
With one resolution a size bucket is that (ratio, frames) pair; the same bucket from several
directories is one bucket. Each bucket is trimmed to a multiple of its global batch
(`ConcatenatedBatchedDataset._make_divisible_by`): micro batch (the image one for frame bucket 1)
x gradient accumulation x data-parallel world size (GPUs / pipeline_stages, train.py), and a
bucket smaller than that is dropped whole. Steps per epoch are the batches left, summed.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

ROUND_DECIMAL_DIGITS = 3  # utils/dataset.py rounds bucket ratios to this


@dataclass(frozen=True)
class AspectBuckets:
    """The dataset config's aspect-ratio keys (`enable_ar_bucket`, `min_ar`, `max_ar`,
    `num_ar_buckets`), as the renderer writes them."""

    enabled: bool = True
    min_ar: float = 0.5
    max_ar: float = 2.0
    count: int = 7

    def ratios(self) -> tuple[float, ...]:
        """diffusion-pipe's `self.ars`: `dedup_and_sort(np.geomspace(...))`, or (1.0,)."""
        if not self.enabled:
            return (1.0,)
        values = np.geomspace(self.min_ar, self.max_ar, num=self.count)
        return tuple(sorted({float(round(v, ROUND_DECIMAL_DIGITS)) for v in values}))


def closest_ratio(width: int, height: int, ratios: Sequence[float]) -> float:
    """The bucket ratio nearest `width / height` in log space (the first of a tie)."""
    log_ratios = np.log(np.array(ratios))
    return ratios[int(np.argmin(np.abs(np.log(width / height) - log_ratios)))]


def frame_bucket(frames: int, frame_buckets: Iterable[int]) -> int | None:
    """The largest frame bucket `frames` fills (1 is always one); None when diffusion-pipe skips
    the item: no bucket fits, or a video (frames > 1) would only fit the image bucket."""
    fitting = [b for b in {*frame_buckets, 1} if b <= frames]
    if not fitting:
        return None
    best = max(fitting)
    return None if frames > 1 and best == 1 else best


@dataclass(frozen=True)
class Member:
    """One media file (or clip) as the trainer buckets it, with its directory's repeats."""

    name: str
    width: int
    height: int
    frames: int  # at the model's frame rate; 1 for an image
    repeats: int


@dataclass(frozen=True)
class Bucket:
    """One size bucket: how many items (files x repeats) it holds and how many one epoch trains."""

    ratio: float
    frames: int
    files: tuple[str, ...]
    items: int
    global_batch: int

    @property
    def steps(self) -> int:
        return self.items // self.global_batch

    @property
    def dropped(self) -> int:
        return self.items - self.steps * self.global_batch

    @property
    def label(self) -> str:
        kind = "image" if self.frames == 1 else f"{self.frames} frames"
        return f"aspect {self.ratio:.{ROUND_DECIMAL_DIGITS}f} ({kind})"

    def describe(self) -> str:
        """One line for the report: which bucket, and what it loses."""
        if not self.steps:
            return (
                f"{self.label}: {self.items} item(s), fewer than the global batch "
                f"{self.global_batch}, all dropped"
            )
        return (
            f"{self.label}: {self.items} item(s), {self.dropped} dropped to make "
            f"{self.steps} batch(es) of {self.global_batch}"
        )

    def as_dict(self) -> dict[str, float | int]:
        return {
            "aspect": self.ratio,
            "frames": self.frames,
            "items": self.items,
            "global_batch": self.global_batch,
            "steps": self.steps,
            "dropped": self.dropped,
        }


@dataclass(frozen=True)
class BatchRule:
    """The global batch per bucket: micro batch x gradient accumulation x data-parallel ranks."""

    batch_size: int
    gradient_accumulation_steps: int
    data_parallel: int = 1
    image_batch_size: int | None = None  # image_micro_batch_size_per_gpu, for frame bucket 1

    def global_batch(self, frames: int) -> int:
        micro = self.image_batch_size if frames == 1 and self.image_batch_size else self.batch_size
        return micro * self.gradient_accumulation_steps * self.data_parallel

    @property
    def default_global_batch(self) -> int:
        """The one train.py prints ("Global batch size = N"): the plain micro batch's."""
        return self.batch_size * self.gradient_accumulation_steps * self.data_parallel


def size_buckets(
    members: Iterable[Member],
    *,
    aspect: AspectBuckets,
    frame_buckets: Iterable[int],
    batch: BatchRule,
) -> list[Bucket]:
    """The size buckets the members fill, in (frames, ratio) order; members diffusion-pipe
    skips for their length are left out (the report names them as short videos)."""
    ratios = aspect.ratios()
    buckets = tuple(frame_buckets)
    files: dict[tuple[float, int], list[str]] = {}
    items: dict[tuple[float, int], int] = {}
    for member in members:
        frames = frame_bucket(member.frames, buckets)
        if frames is None:
            continue
        key = (closest_ratio(member.width, member.height, ratios), frames)
        files.setdefault(key, []).append(member.name)
        items[key] = items.get(key, 0) + member.repeats
    return [
        Bucket(
            ratio,
            frames,
            tuple(files[ratio, frames]),
            items[ratio, frames],
            batch.global_batch(frames),
        )
        for ratio, frames in sorted(items, key=lambda k: (k[1], k[0]))
    ]
