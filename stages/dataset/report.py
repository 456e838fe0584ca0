"""The pre-flight dataset report: what diffusion-pipe will train on, before any GPU time.

`build_report(images_dir, videos_dir, rules)` opens every image with Pillow (bomb-guarded),
probes every video with PyAV when installed, reads every caption, and predicts what
diffusion-pipe will drop or choke on (reference/diffusion-pipe.md §3): media without a caption
(`skip_empty_caption` defaults to true), undecodable files, videos shorter than the smallest
frame bucket above 1, images given to a video-only model, animated WebP/GIF. It also counts steps
per epoch the way diffusion-pipe does, per directory: `floor(count x repeats / global batch)`.

`DatasetReport.to_event()` is small (counts and at most `EXAMPLES` names per problem);
`fatal()` lists the problems that must stop the job before a model download.
"""

from __future__ import annotations

import statistics
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from stages.captions.text import has_trigger
from stages.dataset.extract import CAPTION_EXT, IMAGE_EXTS, VIDEO_EXTS, iter_media
from stages.dataset.inputs import DatasetRules
from stages.training.clips import model_frames, plan_clips

EXAMPLES = 20
MAX_PIXELS = 8192 * 8192  # larger than any training bucket by far; more is a decompression bomb
NO_MEDIA = (
    "No images/videos found in the dataset: ensure your zip file contains actual media files "
    "(images: JPG, JPEG, PNG, WebP, BMP, TIFF; videos: MP4, AVI, MOV, MKV, WebM), check that "
    "files aren't nested too deeply in folders, and on macOS create the zip via terminal "
    "(`zip -r`) not Finder"
)

# Problem keys -> (severity, what it means for the user). "fatal" stops the job.
PROBLEMS: Mapping[str, tuple[str, str]] = {
    "corrupt_images": ("warning", "cannot be decoded; diffusion-pipe skips them"),
    "image_too_large": ("warning", "over the pixel limit (decompression bomb guard); skipped"),
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
        return out

    def _nothing_usable(self) -> str:
        reasons = ", ".join(
            f"{k} {self.problems[k][0]}" for k in self.problems if k != "small_images"
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


# --- probing -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Image:
    name: str
    size: tuple[int, int] | None = None
    problem: str | None = None  # a PROBLEMS key


def probe_image(path: Path, max_pixels: int = MAX_PIXELS) -> _Image:
    """Open and fully decode one image (JPEGs at 1/8 scale: the same entropy data, 60x less
    work), with Pillow's bomb warning turned into an error."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                size = im.size
                if size[0] * size[1] > max_pixels:
                    return _Image(path.name, size, "image_too_large")
                if getattr(im, "is_animated", False) and getattr(im, "n_frames", 1) > 1:
                    return _Image(path.name, size, "animated")
                if im.format == "JPEG":
                    im.draft("RGB", (max(1, size[0] // 8), max(1, size[1] // 8)))
                im.load()
        return _Image(path.name, size)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        return _Image(path.name, None, "image_too_large")
    except (OSError, SyntaxError, ValueError):  # Pillow's errors for unreadable/truncated data
        return _Image(path.name, None, "corrupt_images")


@dataclass(frozen=True)
class _Video:
    name: str
    frames: int | None = None
    fps: float | None = None
    duration: float | None = None
    problem: str | None = None


def _av() -> Any:
    try:
        import av  # noqa: PLC0415 - optional: the report works without it

        return av
    except ImportError:
        return None


def probe_video(path: Path, av: Any) -> _Video:
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                return _Video(path.name, problem="corrupt_videos")
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
            return _Video(path.name, frames, fps, duration)
    except Exception:  # PyAV raises many error types for broken files
        return _Video(path.name, problem="corrupt_videos")


# --- the report --------------------------------------------------------------------------------


def aspect_bucket(width: int, height: int, min_ar: float = 0.5, max_ar: float = 2.0) -> str:
    ar = width / height
    if ar < min_ar or ar > max_ar:
        return "extreme (cropped)"
    if ar < 0.8:
        return "portrait"
    if ar <= 1.25:
        return "square"
    return "landscape"


def _caption(media: Path) -> tuple[str, str | None]:
    """("found"|"missing"|"empty"|"not_utf8", text)."""
    path = media.with_suffix(CAPTION_EXT)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return "missing", None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return "not_utf8", None
    return ("found" if text.strip() else "empty"), text


@dataclass
class _Tally:
    """What one pass over the media found: problems, caption states, usable counts, sizes."""

    rules: DatasetRules
    problems: dict[str, list[str]] = field(default_factory=dict)
    captions: dict[str, int] = field(
        default_factory=lambda: {"found": 0, "missing": 0, "empty": 0, "not_utf8": 0}
    )
    with_trigger: int = 0
    skipped: int = 0  # media diffusion-pipe skips for want of a caption
    usable_images: int = 0
    usable_videos: int = 0
    clips: int = 0
    widths: list[float] = field(default_factory=list)
    heights: list[float] = field(default_factory=list)
    aspects: dict[str, int] = field(default_factory=dict)
    frames: list[float] = field(default_factory=list)
    fps: list[float] = field(default_factory=list)
    durations: list[float] = field(default_factory=list)

    def add(self, key: str, name: str) -> None:
        self.problems.setdefault(key, []).append(name)

    def caption_of(self, path: Path, auto: bool) -> bool:
        """Record the caption's state; True when the file will have a caption to train on."""
        state, text = _caption(path)
        self.captions[state] += 1
        trigger = self.rules.trigger_word
        if state == "found" and text is not None and trigger and has_trigger(text, trigger):
            self.with_trigger += 1
        if state == "missing":
            self.add("missing_captions", path.name)
            if not auto:
                self.skipped += 1
                return False
        elif state == "empty":
            self.add("empty_captions", path.name)
        elif state == "not_utf8":
            self.add("captions_not_utf8", path.name)
            return False
        return True

    def image(self, path: Path, img: _Image) -> None:
        captioned = self.caption_of(path, self.rules.captions_images)
        if img.problem is not None:
            self.add(img.problem, img.name)
            return
        assert img.size is not None
        self.widths.append(img.size[0])
        self.heights.append(img.size[1])
        bucket = aspect_bucket(*img.size)
        self.aspects[bucket] = self.aspects.get(bucket, 0) + 1
        resolution = self.rules.resolution
        if resolution and img.size[0] * img.size[1] < resolution * resolution // 2:
            self.add("small_images", img.name)
        if not self.rules.model.trains_images:
            self.add("unused_images", img.name)
        elif captioned:
            self.usable_images += 1

    def video(self, path: Path, vid: _Video) -> None:
        captioned = self.caption_of(path, self.rules.captions_videos)
        if vid.problem is not None:
            self.add(vid.problem, vid.name)
            return
        if vid.frames is not None:
            self.frames.append(vid.frames)
        if vid.fps is not None:
            self.fps.append(vid.fps)
        if vid.duration is not None:
            self.durations.append(vid.duration)
        model = self.rules.model
        if not model.trains_videos:
            self.add("unused_videos", vid.name)
            return
        # diffusion-pipe buckets a video by its frame count at the model's frame rate.
        seen = vid.frames
        if seen is not None and vid.fps and model.video_fps:
            seen = model_frames(seen, vid.fps, model.video_fps)
        min_frames = _min_frames(self.rules)
        if min_frames is not None and seen is not None and seen < min_frames:
            self.add("short_videos", vid.name)
            return
        if captioned:
            self.usable_videos += 1
            self.clips += _clip_count(vid, self.rules)


def _min_frames(rules: DatasetRules) -> int | None:
    """The smallest frame bucket above 1 (images), for a video model."""
    buckets = [b for b in rules.frame_buckets if isinstance(b, int) and b > 1]
    return min(buckets) if rules.model.trains_videos and buckets else None


def _probe(
    image_paths: Sequence[Path],
    video_paths: Sequence[Path],
    *,
    threads: int,
    on_item: Callable[[int, int], None] | None,
) -> tuple[list[_Image], list[_Video], list[str]]:
    """Open every image (a few threads: Pillow releases the GIL while decoding) and probe every
    video; returns the results in order and any notes."""
    total = len(image_paths) + len(video_paths)
    done = 0

    def tick() -> None:
        nonlocal done
        done += 1
        if on_item is not None:
            on_item(done, total)

    notes: list[str] = []
    images: list[_Image] = []
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        for result in pool.map(probe_image, image_paths):
            images.append(result)
            tick()
    av = _av() if video_paths else None
    videos: list[_Video] = []
    if video_paths and av is None:
        notes.append("PyAV (pip install av) is not installed: videos were not probed")
        videos = [_Video(p.name) for p in video_paths]
    elif video_paths:
        for path in video_paths:
            videos.append(probe_video(path, av))
            tick()
    return images, videos, notes


def _steps(tally: _Tally, rules: DatasetRules) -> tuple[int, int]:
    """(global batch, steps per epoch), counted per directory as diffusion-pipe does."""
    global_batch = rules.batch_size * rules.gradient_accumulation_steps
    steps = 0
    if rules.model.trains_images:
        steps += tally.usable_images * rules.image_repeats // global_batch
    if rules.model.trains_videos:
        steps += tally.clips * rules.video_repeats // global_batch
    return global_batch, steps


def build_report(
    images_dir: Path | None,
    videos_dir: Path | None,
    rules: DatasetRules,
    *,
    threads: int = 4,
    on_item: Callable[[int, int], None] | None = None,
) -> DatasetReport:
    """Check every media file and caption; see the module doc. Pure apart from reading files."""
    image_paths = list(iter_media(images_dir, IMAGE_EXTS)) if images_dir else []
    video_paths = list(iter_media(videos_dir, VIDEO_EXTS)) if videos_dir else []
    images, videos, notes = _probe(image_paths, video_paths, threads=threads, on_item=on_item)
    tally = _Tally(rules)
    for path, img in zip(image_paths, images, strict=True):
        tally.image(path, img)
    for path, vid in zip(video_paths, videos, strict=True):
        tally.video(path, vid)
    global_batch, steps = _steps(tally, rules)
    if tally.usable_images + tally.usable_videos and not steps:
        notes.append(
            f"the global batch ({global_batch}) is larger than the dataset: diffusion-pipe "
            "would drop every bucket"
        )
    return DatasetReport(
        model_type=rules.model.model_type,
        dataset_type=rules.dataset_type,
        images=len(image_paths),
        videos=len(video_paths),
        usable_images=tally.usable_images,
        usable_videos=tally.usable_videos,
        captions_found=tally.captions["found"],
        captions_missing=tally.captions["missing"],
        captions_empty=tally.captions["empty"],
        captions_not_utf8=tally.captions["not_utf8"],
        captions_with_trigger=tally.with_trigger,
        skipped_no_caption=tally.skipped,
        problems={k: (len(v), tuple(v[:EXAMPLES])) for k, v in tally.problems.items()},
        width=Spread.of(tally.widths),
        height=Spread.of(tally.heights),
        aspect_buckets=dict(sorted(tally.aspects.items())),
        frames=Spread.of(tally.frames),
        fps=Spread.of(tally.fps),
        duration_s=Spread.of(tally.durations),
        global_batch=global_batch,
        epochs=rules.epochs,
        steps_per_epoch=steps,
        total_steps=steps * rules.epochs,
        notes=tuple(notes),
        video_clips=tally.clips,
    )


def _clip_count(vid: _Video, rules: DatasetRules) -> int:
    """Training items one usable video gives: 1, or its overlapping clips (training.clips)."""
    model_fps = rules.model.video_fps
    if rules.video_clip_mode != "multiple_overlapping" or not (
        vid.frames and vid.fps and model_fps
    ):
        return 1
    return max(1, len(plan_clips(vid.frames, vid.fps, model_fps, rules.frame_buckets)))


def problem_lines(report: DatasetReport) -> Iterable[tuple[str, int, str, Sequence[str]]]:
    """(severity, count, meaning, examples) per problem, for printing."""
    for key, (count, names) in report.problems.items():
        severity, meaning = PROBLEMS[key]
        yield severity, count, f"{key}: {meaning}", names
