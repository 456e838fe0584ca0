"""The pre-flight check of a dataset folder: every media file probed, every caption read, and
what diffusion-pipe will train on predicted (reference/diffusion-pipe.md §3): media without a
caption (`skip_empty_caption` defaults to true), undecodable files, videos shorter than the
smallest frame bucket above 1 at the model's frame rate, images given to a video-only model,
animated WebP/GIF. Steps per epoch are counted the way diffusion-pipe does, per size bucket
(`buckets`), and the items its trimming drops are a warning. `build_report` returns the
`report.DatasetReport`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from stages.captions.text import has_trigger
from stages.dataset.buckets import Bucket, Member, size_buckets
from stages.dataset.folder import CAPTION_EXT, IMAGE_EXTS, VIDEO_EXTS, iter_media
from stages.dataset.inputs import DatasetRules
from stages.dataset.probe import ImageProbe, VideoProbe, load_av, probe_image, probe_video
from stages.dataset.report import EXAMPLES, DatasetReport, Spread
from stages.training.clips import model_frames, plan_clips


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
    members: list[Member] = field(default_factory=list)  # what the trainer buckets
    guessed: int = 0  # usable videos bucketed without their frames or size (not probed)

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

    def image(self, path: Path, img: ImageProbe) -> None:
        captioned = self.caption_of(path, self.rules.captions_images)
        if img.problem is not None:
            self.add(img.problem, img.name)
            return
        assert img.size is not None
        if img.huge:
            self.add("huge_images", img.name)
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
            self.members.append(Member(img.name, *img.size, 1, self.rules.image_repeats))

    def video(self, path: Path, vid: VideoProbe) -> None:
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
            members = _video_members(vid, seen, self.rules)
            self.clips += len(members)
            self.members += members
            self.guessed += vid.size is None or seen is None


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
) -> tuple[list[ImageProbe], list[VideoProbe], list[str]]:
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
    images: list[ImageProbe] = []
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        for result in pool.map(probe_image, image_paths):
            images.append(result)
            tick()
    av = load_av() if video_paths else None
    videos: list[VideoProbe] = []
    if video_paths and av is None:
        notes.append("PyAV (pip install av) is not installed: videos were not probed")
        videos = [VideoProbe(p.name) for p in video_paths]
    elif video_paths:
        for path in video_paths:
            videos.append(probe_video(path, av))
            tick()
    return images, videos, notes


def _buckets(tally: _Tally, rules: DatasetRules) -> list[Bucket]:
    return size_buckets(
        tally.members, aspect=rules.aspect, frame_buckets=rules.frame_buckets, batch=rules.batch
    )


def _bucket_problems(buckets: Sequence[Bucket], tally: _Tally) -> None:
    """The items the per-bucket trimming drops, as one warning naming the buckets."""
    for bucket in buckets:
        if bucket.dropped:
            tally.add("bucket_dropped", bucket.describe())


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
    buckets = _buckets(tally, rules)
    _bucket_problems(buckets, tally)
    steps = sum(b.steps for b in buckets)  # no steps: `DatasetReport.fatal` says so
    dropped = sum(b.dropped for b in buckets)
    if tally.guessed:
        notes.append(
            f"{tally.guessed} video(s) without a measured size or frame count: the step count "
            "takes each as square and in the smallest frame bucket"
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
        problems={
            k: (dropped if k == "bucket_dropped" else len(v), tuple(v[:EXAMPLES]))
            for k, v in tally.problems.items()
        },
        width=Spread.of(tally.widths),
        height=Spread.of(tally.heights),
        aspect_buckets=dict(sorted(tally.aspects.items())),
        frames=Spread.of(tally.frames),
        fps=Spread.of(tally.fps),
        duration_s=Spread.of(tally.durations),
        global_batch=rules.batch.default_global_batch,
        epochs=rules.epochs,
        steps_per_epoch=steps,
        total_steps=steps * rules.epochs,
        notes=tuple(notes),
        video_clips=tally.clips,
        num_gpus=rules.num_gpus,
        data_parallel=rules.data_parallel,
        buckets=tuple(buckets),
        dropped_items=dropped,
    )


def _video_members(vid: VideoProbe, seen: int | None, rules: DatasetRules) -> list[Member]:
    """What one usable video trains as: itself, or its overlapping clips (training.clips), each
    with its frame count at the model's rate. Unprobed: square, in the smallest frame bucket."""
    width, height = vid.size or (1, 1)
    repeats = rules.video_repeats
    model_fps = rules.model.video_fps
    if seen is None:
        seen = _min_frames(rules) or 1
    if rules.video_clip_mode != "multiple_overlapping" or not (
        vid.frames and vid.fps and model_fps
    ):
        return [Member(vid.name, width, height, seen, repeats)]
    clips = plan_clips(vid.frames, vid.fps, model_fps, rules.frame_buckets)
    if len(clips) <= 1:  # the video is used as it is
        return [Member(vid.name, width, height, seen, repeats)]
    return [
        Member(f"{vid.name}#{i}", width, height, model_frames(c.count, vid.fps, model_fps), repeats)
        for i, c in enumerate(clips)
    ]
