"""Dataset scanning, diffusion-pipe's size buckets, and the resumable, deterministic batch order.

Bucketing follows diffusion-pipe's utils/dataset.py: each image goes to the aspect-ratio bucket
nearest in log space (`_find_closest_ar_bucket`) and, for every resolution, to the size bucket
(ar, width, height, frames) of that area and ratio (`ARBucketDataset.cache_latents`); buckets of
the same key from several directories are one bucket, each trimmed to a multiple of the global
batch (`ConcatenatedBatchedDataset._make_divisible_by`), which drops a bucket smaller than it
with diffusion-pipe's warning. A batch never mixes buckets.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from minipipe.config import DatasetConfig, DirectoryConfig, dedup_and_sort

# Suffixes diffusion-pipe skips when scanning (case-sensitive, as there).
_SKIP_SUFFIXES = {".txt", ".npz", ".json", ".parquet", ".bak", ".db"}
ROUND_TO = 16  # diffusion-pipe's default pixels_round_to_multiple
# (aspect ratio, width, height, frames): diffusion-pipe's size-bucket key (`naming_size_bucket`).
SizeBucket = tuple[float, int, int, int]


@dataclass(frozen=True)
class Item:
    pixels: torch.Tensor  # (3, height, width) of its size bucket, in [-1, 1]
    caption: str


@dataclass(frozen=True)
class Batch:
    """One global batch: `gradient_accumulation_steps` micro-batches from one size bucket."""

    micro_batches: tuple[tuple[Item, ...], ...]

    @property
    def size(self) -> int:
        return sum(len(m) for m in self.micro_batches)


def _round_to(x: float, multiple: int = ROUND_TO) -> int:
    """utils/common.py round_to_nearest_multiple (never 0 here: a tensor needs a side)."""
    return max(multiple, int(round(x / multiple) * multiple))


def closest_ar(width: int, height: int, ars: Sequence[float]) -> float:
    """The AR bucket with the smallest difference in log space (the first on a tie)."""
    log_ars = np.log(np.array(ars))
    return float(ars[int(np.argmin(np.abs(np.log(width / height) - log_ars)))])


def size_bucket(resolution: float, ar: float, frames: int) -> SizeBucket:
    """The (ar, width, height, frames) bucket of one resolution's area at ratio `ar`."""
    area = resolution**2
    width = math.sqrt(area * ar)
    height = area / width
    return (ar, _round_to(width), _round_to(height), frames)


def _to_tensor(image: Image.Image, width: int, height: int) -> torch.Tensor:
    fitted = ImageOps.fit(image, (width, height), method=Image.Resampling.BICUBIC)
    array = np.asarray(fitted, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def _open_rgb(path: Path) -> Image.Image:
    """Decode one image to RGB. Raises what Pillow raises: `UnidentifiedImageError`, `OSError`
    for truncated data, `DecompressionBombError` when the header claims more than twice
    `Image.MAX_IMAGE_PIXELS`, `ValueError`/`SyntaxError` for some malformed headers."""
    with Image.open(path) as img:
        img.load()
        if img.mode in ("RGBA", "LA", "P"):
            # A transparent background becomes white, as in diffusion-pipe.
            rgba = img.convert("RGBA")
            white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            return Image.alpha_composite(white, rgba).convert("RGB")
        return img.convert("RGB")


def _buckets(
    directory: DirectoryConfig, cfg: DatasetConfig, size: tuple[int, int]
) -> list[SizeBucket]:
    """The size buckets one image of `size` goes to: one per resolution (an image is frames 1)."""
    resolutions = directory.resolutions or dedup_and_sort(list(cfg.resolutions))
    ar = closest_ar(size[0], size[1], directory.ars)
    # An image has 1 frame and diffusion-pipe always adds the frame bucket 1, so that is its
    # bucket; videos (frames > 1) are not opened by minipipe.
    return [size_bucket(res, ar, 1) for res in resolutions]


def _pixels(
    path: Path, directory: DirectoryConfig, cfg: DatasetConfig
) -> list[tuple[SizeBucket, torch.Tensor]] | str:
    """The image in each of its size buckets, or why it cannot be used (the exception's text).

    diffusion-pipe opens every media file inside `except Exception` and skips the ones that
    fail (utils/dataset.py, `_metadata_map_fn`); Pillow has no single error type for a bad
    file, so the same broad catch is the only one that never lets a file end the run."""
    try:
        image = _open_rgb(path)
        return [
            (key, _to_tensor(image, key[1], key[2])) for key in _buckets(directory, cfg, image.size)
        ]
    except Exception as exc:
        return str(exc) or type(exc).__name__


def load_items(cfg: DatasetConfig, log: Callable[[str], None]) -> dict[SizeBucket, list[Item]]:
    """Every image in each of its size buckets (one per resolution), repeated `num_repeats`."""
    buckets: dict[SizeBucket, list[Item]] = {}
    for directory in cfg.directories:
        for path in sorted(directory.path.glob("*")):
            if not path.is_file() or path.suffix in _SKIP_SUFFIXES:
                continue
            caption_file = path.with_suffix(".txt")
            if caption_file.is_file():
                caption = caption_file.read_text(encoding="utf-8").strip()
            elif directory.skip_empty_caption:
                log(f"WARNING: Cound not find caption for {path}. Skipping image.")
                continue
            else:
                log(f"WARNING: Cound not find caption for {path}. Using empty caption.")
                caption = ""
            pixels = _pixels(path, directory, cfg)
            if isinstance(pixels, str):
                # diffusion-pipe's line (a DeepSpeed logger warning there); minipipe: images only.
                log(
                    f"WARNING: Media file {path} could not be opened. Skipping. "
                    f"The exception was: {pixels}"
                )
                continue
            caption = directory.caption_prefix + caption
            for key, tensor in pixels:
                item = Item(pixels=tensor, caption=caption)
                buckets.setdefault(key, []).extend([item] * directory.num_repeats)
    return buckets


class BatchOrder:
    """Per-epoch batch list, deterministic from (seed, epoch) so a resume can skip to a position.

    As diffusion-pipe (one data-parallel rank): each size bucket is trimmed to a multiple of the
    global batch, a bucket smaller than it is dropped with diffusion-pipe's warning, and no
    bucket left is "Processed dataset was empty". Batches are cut within a bucket.
    """

    def __init__(
        self,
        buckets: dict[SizeBucket, list[Item]],
        micro_batch_size: int,
        accumulation: int,
        seed: int,
        log: Callable[[str], None],
    ) -> None:
        self.micro = micro_batch_size
        self.accumulation = accumulation
        self.seed = seed
        global_bs = micro_batch_size * accumulation
        for key, items in buckets.items():
            if len(items) < global_bs:
                log(
                    f"WARNING: size bucket {key} is being completely dropped because it "
                    "doesn't have enough images"
                )
        self.buckets = {k: v for k, v in buckets.items() if len(v) >= global_bs}
        self.steps_per_epoch = sum(len(v) // global_bs for v in self.buckets.values())
        if self.steps_per_epoch == 0:
            raise RuntimeError(
                "Processed dataset was empty. Probably caused by rounding down for each size "
                "bucket.\nTry decreasing the global batch size, or increasing num_repeats."
            )

    def epoch_batches(self, epoch: int) -> list[Batch]:
        rng = random.Random(self.seed * 1_000_003 + epoch)  # noqa: S311 - order, not secrets
        global_bs = self.micro * self.accumulation
        batches: list[Batch] = []
        for key in sorted(self.buckets):
            items = list(self.buckets[key])
            rng.shuffle(items)
            for start in range(0, len(items) - global_bs + 1, global_bs):
                chunk = items[start : start + global_bs]
                micro = tuple(
                    tuple(chunk[i : i + self.micro]) for i in range(0, global_bs, self.micro)
                )
                batches.append(Batch(micro_batches=micro))
        rng.shuffle(batches)
        return batches
