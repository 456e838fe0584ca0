"""`video_clip_mode: multiple_overlapping`, done by the service because diffusion-pipe has it
disabled (models/base.py keeps the code commented out and takes one clip per video).

Each video long enough for more than one clip of its frame bucket is cut into overlapping clips
that cover the whole video, with the formula of that commented-out code: at the model's frame
rate, `n = (frames - 1) // target + 1` clips starting at `linspace(0, frames - target, n)`. Every
clip becomes its own file with a copy of the video's caption, in `dataset/clips/`, and the
trainer takes each from its beginning (`single_beginning`). A clip is cut a little longer than
its bucket so diffusion-pipe's frame-rate conversion (which truncates) still finds the bucket.

`plan_clips` is pure; `cut_clips` does the decoding and encoding (PyAV, libx264 at a near-lossless
quality) and is idempotent: a marker names the source files it was made from.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from stages.dataset.folder import VIDEO_EXTS

MARKER = ".clips.json"
ROUND_FRAMES = 4  # diffusion-pipe's default `round_frames` (frames are aligned to 4k+1)
CRF = "10"  # near-lossless: the clips are training data, not a delivery format


@dataclass(frozen=True, slots=True)
class Clip:
    """A run of source frames: `count` frames from frame `start`."""

    start: int
    count: int


def model_frames(source_frames: int, source_fps: float, model_fps: float) -> int:
    """The frame count diffusion-pipe sees after resampling (utils/dataset.py truncates)."""
    return int(source_frames * model_fps / source_fps)


def frame_bucket(frames: int, frame_buckets: Iterable[int]) -> int | None:
    """The largest video bucket `frames` fits (None: too short; diffusion-pipe skips it)."""
    fitting = [b for b in frame_buckets if 1 < b <= frames]
    return max(fitting) if fitting else None


def align_frames(frames: int, round_frames: int = ROUND_FRAMES) -> int:
    return ((frames - 1) // round_frames) * round_frames + 1


def plan_clips(
    source_frames: int,
    source_fps: float,
    model_fps: float,
    frame_buckets: Sequence[int],
    round_frames: int = ROUND_FRAMES,
) -> list[Clip]:
    """The clips to cut from one video; [] when it is too short for any bucket."""
    if source_frames <= 0 or source_fps <= 0:
        return []
    frames = model_frames(source_frames, source_fps, model_fps)
    bucket = frame_bucket(frames, frame_buckets)
    if bucket is None:
        return []
    target = align_frames(bucket, round_frames)
    if frames <= target:  # one clip: the video as it is
        return [Clip(0, source_frames)]
    # Source frames per clip: enough that int(length * model_fps / source_fps) >= target, and
    # enough to reach the next clip's start, which is placed by convert_framerate's own ratio
    # ((N - 1) / (M - 1), a little above source_fps / model_fps): otherwise a frame falls between.
    by_rate = math.ceil(target * source_fps / model_fps) + 1
    by_starts = math.ceil(target * (source_frames - 1) / max(frames - 1, 1)) + 1
    length = min(source_frames, max(by_rate, by_starts))
    clips: list[Clip] = []
    for start_model in clip_starts(frames, target):
        # convert_framerate maps model frame i to source frame i * (N - 1) / (M - 1).
        start = start_model * (source_frames - 1) // max(frames - 1, 1)
        clips.append(Clip(min(start, source_frames - length), length))
    return clips


def clip_starts(frames: int, target: int) -> list[int]:
    """Start frames (at the model's rate) of the clips covering `frames`: diffusion-pipe's
    `torch.linspace(0, frames - target, (frames - 1) // target + 1).int()`, in integers."""
    count = (frames - 1) // target + 1
    if count <= 1:
        return [0]
    return [(frames - target) * k // (count - 1) for k in range(count)]


# --- cutting -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ClipSummary:
    videos: int  # source videos seen
    split: int  # videos cut into more than one clip
    clips: int  # video files in the clips folder (a video that needs no cut counts once)
    reused: bool  # an earlier attempt's clips matched their sources


def _fingerprint(videos_dir: Path, settings: dict[str, Any]) -> str:
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    for path in sorted(videos_dir.iterdir()):
        if path.is_file():
            stat = path.stat()
            digest.update(f"{path.name}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def _read_marker(clips_dir: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((clips_dir / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def cut_clips(
    videos_dir: Path,
    clips_dir: Path,
    *,
    model_fps: float,
    frame_buckets: Sequence[int],
    on_video: Callable[[int, int], Any] | None = None,
) -> ClipSummary:
    """Fill `clips_dir` from `videos_dir` (videos and their `.txt` captions)."""
    settings = {"fps": model_fps, "buckets": sorted(frame_buckets), "crf": CRF}
    fingerprint = _fingerprint(videos_dir, settings)
    marker = _read_marker(clips_dir)
    if marker is not None and marker.get("fingerprint") == fingerprint:
        return ClipSummary(marker["videos"], marker["split"], marker["clips"], reused=True)
    av = _av()
    staging = clips_dir.with_name(f".{clips_dir.name}.tmp")
    shutil.rmtree(staging, ignore_errors=True)  # an attempt killed while cutting
    staging.mkdir(parents=True)
    videos = sorted(
        p for p in videos_dir.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_EXTS
    )
    split = clips = 0
    for done, video in enumerate(videos, start=1):
        stems = _cut_one(av, video, staging, model_fps, frame_buckets)
        split += len(stems) > 1
        clips += len(stems)
        caption = video.with_suffix(".txt")
        if caption.is_file():
            text = caption.read_bytes()
            for stem in stems:
                (staging / f"{stem}.txt").write_bytes(text)
        if on_video is not None:
            on_video(done, len(videos))
    record = {"fingerprint": fingerprint, "videos": len(videos), "split": split, "clips": clips}
    (staging / MARKER).write_text(json.dumps(record), encoding="utf-8")
    shutil.rmtree(clips_dir, ignore_errors=True)
    os.replace(staging, clips_dir)
    return ClipSummary(len(videos), split, clips, reused=False)


def clip_name(stem: str, index: int) -> str:
    return f"{stem}__clip{index:03d}"


def _cut_one(
    av: Any, video: Path, staging: Path, model_fps: float, frame_buckets: Sequence[int]
) -> list[str]:
    """Write the clips of one video into `staging`; returns the stems of the files written."""
    frames, fps = _probe(av, video)
    clips = plan_clips(frames, float(fps), model_fps, frame_buckets) if fps else []
    if fps is None or len(clips) <= 1:
        # One clip (or too short: diffusion-pipe reports and skips it): the file as it came.
        _link_or_copy(video, staging / video.name)
        return [video.stem]
    stems = [clip_name(video.stem, i) for i in range(len(clips))]
    # Clips start in order and overlap little, so an encoder is open only while its frames pass.
    open_: dict[int, tuple[Any, Any]] = {}
    try:
        with av.open(str(video)) as source:
            stream = source.streams.video[0]
            for number, frame in enumerate(source.decode(stream)):
                for index, clip in enumerate(clips):
                    if not clip.start <= number < clip.start + clip.count:
                        continue
                    if index not in open_:
                        open_[index] = _open_clip(av, staging / f"{stems[index]}.mp4", fps, frame)
                    out, encoder = open_[index]
                    image = frame.reformat(format="yuv444p")
                    image.pts = number - clip.start  # one tick of 1/fps per frame
                    image.time_base = 1 / fps
                    for packet in encoder.encode(image):
                        out.mux(packet)
                    if number == clip.start + clip.count - 1:
                        _close_clip(*open_.pop(index))
    finally:
        for out, encoder in open_.values():
            _close_clip(out, encoder)
    return stems


def _open_clip(av: Any, path: Path, fps: Fraction, first: Any) -> tuple[Any, Any]:
    out = av.open(str(path), "w")
    encoder = out.add_stream("libx264", rate=fps)
    encoder.width = first.width
    encoder.height = first.height
    encoder.pix_fmt = "yuv444p"  # no chroma loss, and odd sizes are fine
    encoder.options = {"crf": CRF, "preset": "fast"}
    return out, encoder


def _close_clip(out: Any, encoder: Any) -> None:
    for packet in encoder.encode(None):
        out.mux(packet)
    out.close()


def _probe(av: Any, video: Path) -> tuple[int, Fraction | None]:
    """Frame count (counted by decoding when the container does not say) and frame rate."""
    try:
        with av.open(str(video)) as container:
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate
            frames = int(stream.frames or 0)
            if frames <= 0:
                frames = sum(1 for _ in container.decode(stream))
            return frames, Fraction(rate) if rate else None
    except (OSError, IndexError, ValueError, av.FFmpegError):
        # The report already told the user about an unreadable video; keep it as it came.
        return 0, None


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def _av() -> Any:
    import av  # noqa: PLC0415 - a worker dependency, imported only when videos are cut

    return av
