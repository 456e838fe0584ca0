"""multiple_overlapping, cut by the service: the clip plan against diffusion-pipe's arithmetic,
the cut files read back with PyAV, the report's counts and the rendered configs."""

from __future__ import annotations

import itertools
import json
import math
import os
import tomllib
from pathlib import Path
from typing import Any

import av
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from events.store import EventStore
from orchestrator.cli.dataset import app as dataset_app
from orchestrator.machine import JobMachine
from orchestrator.pipeline import Delivery, build_stages
from orchestrator.plan import plan_job, trainer_spec
from orchestrator.request import TrainingRequest, parse_request
from orchestrator.settings import Settings
from stages.dataset.check import build_report
from stages.training.clips import (
    MARKER,
    align_frames,
    clip_name,
    clip_starts,
    cut_clips,
    frame_bucket,
    model_frames,
    plan_clips,
)
from stages.training.config import JobPaths, preflight, render
from stages.training.stage import ConfiguredTraining
from tests.support.fake_trainer import install_deepspeed
from tests.support.helpers import dataset_rules_for, stage_context
from tests.support.media import fade_video as video

WAN_FPS = 16.0
BUCKETS = [1, 33]
RATES = [8.0, 12.0, 15.0, 16.0, 23.976, 24.0, 25.0, 29.97, 30.0, 50.0, 60.0]


def read(path: Path) -> tuple[int, float, list[int]]:
    """(frames the container declares, its frame rate, each decoded frame's grey level)."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        levels = [int(f.to_ndarray(format="rgb24")[4, 4, 0]) for f in container.decode(stream)]
        assert stream.average_rate is not None
        return int(stream.frames), float(stream.average_rate), levels


# --- the plan ----------------------------------------------------------------------------------


@given(frames=st.integers(1, 3000), target=st.sampled_from([5, 9, 17, 33, 49, 65, 81]))
def test_clip_starts_match_diffusion_pipes_linspace(frames: int, target: int) -> None:
    if frames < target:
        return
    count = (frames - 1) // target + 1
    expected = torch.linspace(0, frames - target, count).int().tolist() if count > 1 else [0]
    ours = clip_starts(frames, target)
    assert len(ours) == len(expected)
    # float32 linspace may land one below an exact integer; the integer form never does
    assert all(0 <= o - e <= 1 for o, e in zip(ours, expected, strict=True))


@settings(max_examples=400)
@given(
    source_frames=st.integers(1, 4000),
    source_fps=st.sampled_from(RATES),
    buckets=st.sampled_from([[1, 33], [1, 17, 33, 49], [1, 17], [1, 81], [1, 9, 25, 49]]),
)
def test_every_clip_fills_its_bucket_and_the_clips_cover_the_video(
    source_frames: int, source_fps: float, buckets: list[int]
) -> None:
    frames = model_frames(source_frames, source_fps, WAN_FPS)
    bucket = frame_bucket(frames, buckets)
    clips = plan_clips(source_frames, source_fps, WAN_FPS, buckets)
    if bucket is None:
        assert clips == []  # too short: diffusion-pipe skips it, so do we
        return
    target = align_frames(bucket)
    assert len(clips) == (frames - 1) // target + 1  # the commented-out formula's count
    step = math.ceil(source_fps / WAN_FPS)
    for clip in clips:
        assert clip.start >= 0
        assert clip.start + clip.count <= source_frames
        # What diffusion-pipe computes when it reads the cut file: at least the bucket
        assert model_frames(clip.count, source_fps, WAN_FPS) >= target
    assert clips[0].start == 0
    for a, b in itertools.pairwise(clips):
        assert a.start <= b.start <= a.start + a.count  # in order, no gap
    assert clips[-1].start + clips[-1].count >= source_frames - step  # the end is used


# --- cutting -----------------------------------------------------------------------------------


def test_a_long_video_is_cut_into_overlapping_clips_with_its_caption(tmp_path: Path) -> None:
    videos = tmp_path / "videos"
    videos.mkdir()
    video(videos / "long.mp4", 120)  # 4 s at 30 fps: 64 frames at 16 fps, two clips of 33
    (videos / "long.txt").write_text("ohwx, a grey fade")
    video(videos / "short.mp4", 62)  # exactly 33 frames at 16 fps: one clip, kept as it came
    (videos / "short.txt").write_text("ohwx, a short fade")
    clips_dir = tmp_path / "clips"

    summary = cut_clips(videos, clips_dir, model_fps=WAN_FPS, frame_buckets=BUCKETS)

    assert (summary.videos, summary.split, summary.clips, summary.reused) == (2, 1, 3, False)
    plan = plan_clips(120, 30.0, WAN_FPS, BUCKETS)
    assert len(plan) == 2
    source = read(videos / "long.mp4")[2]
    for index, clip in enumerate(plan):
        path = clips_dir / f"{clip_name('long', index)}.mp4"
        declared, fps, levels = read(path)
        assert declared == len(levels) == clip.count
        assert fps == 30.0
        assert model_frames(declared, fps, WAN_FPS) >= 33
        # the right frames: the source's own grey levels there, give or take the re-encoding
        assert abs(levels[0] - source[clip.start]) <= 3
        assert abs(levels[-1] - source[clip.start + clip.count - 1]) <= 3
        assert path.with_suffix(".txt").read_text() == "ohwx, a grey fade"
    assert (clips_dir / "short.mp4").read_bytes() == (videos / "short.mp4").read_bytes()
    assert (clips_dir / "short.txt").read_text() == "ohwx, a short fade"
    assert not (clips_dir / "long.mp4").exists()
    assert not list(tmp_path.glob(".clips*"))  # no staging folder left

    again = cut_clips(videos, clips_dir, model_fps=WAN_FPS, frame_buckets=BUCKETS)
    assert again.reused
    assert (again.videos, again.split, again.clips) == (2, 1, 3)


def test_a_changed_caption_or_a_killed_cut_is_redone(tmp_path: Path) -> None:
    videos = tmp_path / "videos"
    videos.mkdir()
    video(videos / "a.mp4", 120)
    (videos / "a.txt").write_text("first")
    clips_dir = tmp_path / "clips"
    cut_clips(videos, clips_dir, model_fps=WAN_FPS, frame_buckets=BUCKETS)
    caption = videos / "a.txt"
    caption.write_text("second caption")
    os.utime(caption, ns=(caption.stat().st_atime_ns, caption.stat().st_mtime_ns + 10**9))
    redone = cut_clips(videos, clips_dir, model_fps=WAN_FPS, frame_buckets=BUCKETS)
    assert not redone.reused
    assert (clips_dir / f"{clip_name('a', 1)}.txt").read_text() == "second caption"

    staging = tmp_path / ".clips.tmp"  # what a worker killed mid-cut leaves
    staging.mkdir()
    (staging / "half.mp4").write_bytes(b"\0" * 10)
    (clips_dir / MARKER).unlink()
    cut_clips(videos, clips_dir, model_fps=WAN_FPS, frame_buckets=BUCKETS)
    assert not staging.exists()
    assert sorted(p.name for p in clips_dir.glob("*.mp4")) == [
        f"{clip_name('a', 0)}.mp4",
        f"{clip_name('a', 1)}.mp4",
    ]


def test_an_unreadable_video_is_kept_as_it_came(tmp_path: Path) -> None:
    videos = tmp_path / "videos"
    videos.mkdir()
    (videos / "broken.mp4").write_bytes(b"not a video at all")
    summary = cut_clips(videos, tmp_path / "clips", model_fps=WAN_FPS, frame_buckets=BUCKETS)
    assert (summary.videos, summary.clips) == (1, 1)
    assert (tmp_path / "clips" / "broken.mp4").read_bytes() == b"not a video at all"


# --- the request, the report and the configs ---------------------------------------------------


def wan_request(**training: Any) -> TrainingRequest:
    return parse_request(
        {
            "model_type": "wan13",
            "dataset": {"type": "precaptioned", "videos_url": "https://x.invalid/v.zip"},
            "training": {"video_clip_mode": "multiple_overlapping", **training},
        }
    )


def test_the_seed_readme_wan_example_passes_preflight() -> None:
    preflight(trainer_spec(wan_request(frame_buckets=[1, 17, 33, 49])))


def test_the_trainer_gets_the_clips_folder_and_takes_each_clip_from_its_start() -> None:
    paths = JobPaths.for_job(Path("/work"), "job")
    configs = render(trainer_spec(wan_request()), paths, video_count=3)
    main = tomllib.loads(configs.main_toml())
    dataset = tomllib.loads(configs.dataset_toml())
    assert main["video_clip_mode"] == "single_beginning"
    assert [d["path"] for d in dataset["directory"]] == [
        "/work/jobs/job/dataset/images",
        "/work/jobs/job/dataset/clips",
    ]
    plain = render(trainer_spec(wan_request(video_clip_mode="single_middle")), paths, video_count=3)
    assert tomllib.loads(plain.main_toml())["video_clip_mode"] == "single_middle"
    assert "/work/jobs/job/dataset/videos" in plain.dataset_toml()


def test_the_report_counts_clips_and_measures_frames_at_the_models_rate(tmp_path: Path) -> None:
    videos = tmp_path / "videos"
    videos.mkdir()
    video(videos / "long.mp4", 120)  # 64 frames at 16 fps: two clips
    video(videos / "fast_short.mp4", 40)  # 40 source frames, but 21 at 16 fps: too short
    for stem in ("long", "fast_short"):
        (videos / f"{stem}.txt").write_text("ohwx, grey")
    overlapping = build_report(
        None, videos, dataset_rules_for(wan_request(epochs=1, gradient_accumulation_steps=1))
    )
    assert overlapping.usable_videos == 1
    assert overlapping.problems["short_videos"][0] == 1
    assert overlapping.video_clips == 2
    repeats = overlapping.steps_per_epoch  # two clips x video_repeats, batch 1
    single = build_report(
        None,
        videos,
        dataset_rules_for(
            wan_request(video_clip_mode="single_middle", epochs=1, gradient_accumulation_steps=1)
        ),
    )
    assert single.video_clips == 1
    assert repeats == 2 * single.steps_per_epoch
    assert overlapping.to_event()["video_clips"] == 2


@pytest.mark.parametrize("mode", ["single_beginning", "single_middle", "multiple_overlapping"])
def test_every_documented_clip_mode_is_accepted(mode: str) -> None:
    preflight(trainer_spec(wan_request(video_clip_mode=mode)))


# --- through the training stage, down to the trainer's command line ----------------------------


def test_the_training_stage_cuts_then_launches_diffusion_pipe_on_the_clips(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ConfiguredTraining for Wan: clips cut, configs point at them, the deepspeed command line
    run (a stand-in `deepspeed` on PATH runs the fake trainer), the LoRA found."""
    root = tmp_path / "root"
    job = root / "jobs" / "j"
    videos = job / "dataset" / "videos"
    videos.mkdir(parents=True)
    video(videos / "a.mp4", 120)
    (videos / "a.txt").write_text("ohwx, a fade")
    checkout = tmp_path / "diffusion-pipe"
    checkout.mkdir()
    (root / "models" / "Wan" / "Wan2.1-T2V-1.3B").mkdir(parents=True)  # the [model] path
    argv_file = install_deepspeed(tmp_path / "bin", monkeypatch)
    request = wan_request(epochs=2)
    settings = Settings(root=root, diffusion_pipe_dir=checkout)
    delivery = Delivery(plan_job(request, settings, "j"), settings)
    training = next(s for s in build_stages(delivery) if s.name == "training")
    assert isinstance(training, ConfiguredTraining)
    log = EventStore.in_memory().open("j")
    machine = JobMachine(log)
    for status in ("INITIALIZED", "STARTING", "DOWNLOADING", "MODEL_DOWNLOAD", "TRAINING"):
        machine.fire(status)
    results = {"dataset": {"images": 0, "videos": 1, "total_steps": 4}}
    ctx = stage_context(job, machine.record, job_id="j", results=results)

    result = training.run(ctx)

    assert result["final_save"] == "epoch2"
    argv = argv_file.read_text().split()
    assert argv[:4] == ["--include", "localhost:0", "train.py", "--deepspeed"]
    main = tomllib.loads((job / "config" / "wan13.toml").read_text())
    dataset = tomllib.loads((job / "config" / "dataset.toml").read_text())
    assert main["video_clip_mode"] == "single_beginning"
    # videos only: no images folder listed (it does not exist; diffusion-pipe would stop)
    assert [d["path"] for d in dataset["directory"]] == [str(job / "dataset" / "clips")]
    clips = sorted(p.name for p in (job / "dataset" / "clips").iterdir() if p.name != "cache")
    assert clips == [
        ".clips.json",
        *[f"{clip_name('a', i)}{s}" for i in (0, 1) for s in (".mp4", ".txt")],
    ]
    messages = [e.data.get("message", "") for e in log.events if e.type == "PROGRESS"]
    assert "2 clip(s) from 1 video(s) (1 cut into several)" in messages


def test_dataset_check_shows_the_clips_a_clip_mode_gives(tmp_path: Path) -> None:
    folder = tmp_path / "set"
    folder.mkdir()
    video(folder / "long.mp4", 120)  # two clips of 33 at 16 fps
    (folder / "long.txt").write_text("ohwx, grey")
    runner = CliRunner()
    args = ["check", str(folder), "--model-type", "wan13", "--json"]
    single = json.loads(runner.invoke(dataset_app, args).output)
    assert (single["usable_videos"], single["video_clips"]) == (1, 1)
    cut = runner.invoke(dataset_app, [*args, "--clip-mode", "multiple_overlapping"])
    assert cut.exit_code == 0, cut.output
    assert (json.loads(cut.output)["video_clips"]) == 2
    table = runner.invoke(dataset_app, [*args[:-1], "--clip-mode", "multiple_overlapping"])
    assert "video clips trained" in table.output
    bad = runner.invoke(dataset_app, [*args, "--clip-mode", "all_of_them"])
    assert bad.exit_code == 2
    assert "training.video_clip_mode" in bad.output
