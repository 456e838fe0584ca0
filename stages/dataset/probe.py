"""Probing one media file: an image fully decoded with Pillow (bomb-guarded), a video's frames,
rate and duration read with PyAV when it is installed. Each answers with the problem it found
(a `report.PROBLEMS` key) instead of raising."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

# Past twice Image.MAX_IMAGE_PIXELS, Pillow's Image.open raises DecompressionBombError, and
# diffusion-pipe (utils/dataset.py, which leaves the limit as it is) skips the image, as minipipe
# does. Below that it trains on it: over HUGE_PIXELS that is worth a warning, not a skip.
HUGE_PIXELS = 8192 * 8192  # far past any training bucket; every load decodes all of it


@dataclass(frozen=True)
class ImageProbe:
    name: str
    size: tuple[int, int] | None = None
    problem: str | None = None  # a PROBLEMS key: the trainer will not use the image
    huge: bool = False  # used, but over HUGE_PIXELS (not decoded here: the trainer will)


def probe_image(path: Path, huge_pixels: int = HUGE_PIXELS) -> ImageProbe:
    """Open and fully decode one image (JPEGs at 1/8 scale: the same entropy data, 60x less
    work); one Pillow refuses to open as a decompression bomb is `image_too_large`, as it is
    for the trainer."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the trainer's too
            with Image.open(path) as im:
                size = im.size
                if getattr(im, "is_animated", False) and getattr(im, "n_frames", 1) > 1:
                    return ImageProbe(path.name, size, "animated")
                if size[0] * size[1] > huge_pixels:
                    return ImageProbe(path.name, size, huge=True)
                if im.format == "JPEG":
                    im.draft("RGB", (max(1, size[0] // 8), max(1, size[1] // 8)))
                im.load()
        return ImageProbe(path.name, size)
    except Image.DecompressionBombError:
        return ImageProbe(path.name, None, "image_too_large")
    except (OSError, SyntaxError, ValueError):  # Pillow's errors for unreadable/truncated data
        return ImageProbe(path.name, None, "corrupt_images")


@dataclass(frozen=True)
class VideoProbe:
    name: str
    frames: int | None = None
    fps: float | None = None
    duration: float | None = None
    problem: str | None = None
    size: tuple[int, int] | None = None  # (width, height): its aspect-ratio bucket


def load_av() -> Any:
    try:
        import av  # noqa: PLC0415 - optional: the report works without it

        return av
    except ImportError:
        return None


def probe_video(path: Path, av: Any) -> VideoProbe:
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                return VideoProbe(path.name, problem="corrupt_videos")
            stream = container.streams.video[0]
            fps = float(stream.average_rate or stream.guessed_rate or 0) or None
            duration = None
            if stream.duration is not None and stream.time_base is not None:
                duration = float(stream.duration * stream.time_base)
            elif container.duration is not None:
                duration = container.duration / 1_000_000
            frames = int(stream.frames or 0)
            if not frames:  # some containers do not store it: count by demuxing, no decoding
                frames = sum(1 for p in container.demux(stream) if p.size)
            if duration is None and fps:
                duration = frames / fps
            width, height = stream.codec_context.width, stream.codec_context.height
            size = (int(width), int(height)) if width and height else None
            return VideoProbe(path.name, frames, fps, duration, size=size)
    except Exception:  # PyAV raises many error types for broken files
        return VideoProbe(path.name, problem="corrupt_videos")
