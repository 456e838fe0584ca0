"""Dataset scanning and the resumable, deterministic batch order."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from minipipe.config import DatasetConfig

# Suffixes diffusion-pipe skips when scanning (case-sensitive, as there).
_SKIP_SUFFIXES = {".txt", ".npz", ".json", ".parquet", ".bak", ".db"}
ROUND_TO = 16  # diffusion-pipe's default pixels_round_to_multiple


@dataclass(frozen=True)
class Item:
    pixels: torch.Tensor  # (3, R, R) in [-1, 1]
    caption: str


@dataclass(frozen=True)
class Batch:
    """One global batch: `gradient_accumulation_steps` micro-batches from one size bucket."""

    micro_batches: tuple[tuple[Item, ...], ...]

    @property
    def size(self) -> int:
        return sum(len(m) for m in self.micro_batches)


def _to_tensor(image: Image.Image, side: int) -> torch.Tensor:
    fitted = ImageOps.fit(image, (side, side), method=Image.Resampling.BICUBIC)
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


def _pixels(path: Path, sides: list[int]) -> list[torch.Tensor] | str:
    """The image at every bucket side, or why it cannot be used (the exception's text).

    diffusion-pipe opens every media file inside `except Exception` and skips the ones that
    fail (utils/dataset.py, `_metadata_map_fn`); Pillow has no single error type for a bad
    file, so the same broad catch is the only one that never lets a file end the run."""
    try:
        image = _open_rgb(path)
        return [_to_tensor(image, side) for side in sides]
    except Exception as exc:
        return str(exc) or type(exc).__name__


def load_items(cfg: DatasetConfig, log: Callable[[str], None]) -> dict[int, list[Item]]:
    """Every image at every resolution (diffusion-pipe duplicates per resolution), by bucket."""
    sides = sorted({max(ROUND_TO, round(r / ROUND_TO) * ROUND_TO) for r in cfg.resolutions})
    buckets: dict[int, list[Item]] = {side: [] for side in sides}
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
            pixels = _pixels(path, sides)
            if isinstance(pixels, str):
                # diffusion-pipe's line (a DeepSpeed logger warning there); minipipe: images only.
                log(
                    f"WARNING: Media file {path} could not be opened. Skipping. "
                    f"The exception was: {pixels}"
                )
                continue
            caption = directory.caption_prefix + caption
            for side, tensor in zip(sides, pixels, strict=True):
                item = Item(pixels=tensor, caption=caption)
                buckets[side].extend([item] * directory.num_repeats)
    return buckets


class BatchOrder:
    """Per-epoch batch list, deterministic from (seed, epoch) so a resume can skip to a position.

    Like diffusion-pipe, each bucket is truncated to a multiple of the global batch size.
    """

    def __init__(
        self,
        buckets: dict[int, list[Item]],
        micro_batch_size: int,
        accumulation: int,
        seed: int,
        log: Callable[[str], None],
    ) -> None:
        self.buckets = {k: v for k, v in buckets.items() if v}
        self.micro = micro_batch_size
        self.accumulation = accumulation
        self.seed = seed
        global_bs = micro_batch_size * accumulation
        for side, items in buckets.items():
            if len(items) < global_bs:
                log(
                    f"WARNING: size bucket {side}x{side} has {len(items)} items, fewer than the "
                    f"global batch size {global_bs}; dropped"
                )
        self.steps_per_epoch = sum(len(v) // global_bs for v in self.buckets.values())
        if self.steps_per_epoch == 0:
            raise RuntimeError(
                "Processed dataset was empty. "
                "Probably caused by rounding down for each size bucket."
            )

    def epoch_batches(self, epoch: int) -> list[Batch]:
        rng = random.Random(self.seed * 1_000_003 + epoch)  # noqa: S311 - order, not secrets
        global_bs = self.micro * self.accumulation
        batches: list[Batch] = []
        for side in sorted(self.buckets):
            items = list(self.buckets[side])
            rng.shuffle(items)
            for start in range(0, len(items) - global_bs + 1, global_bs):
                chunk = items[start : start + global_bs]
                micro = tuple(
                    tuple(chunk[i : i + self.micro]) for i in range(0, global_bs, self.micro)
                )
                batches.append(Batch(micro_batches=micro))
        rng.shuffle(batches)
        return batches
