"""The report's steps per epoch, counted per size bucket and GPU as diffusion-pipe counts them.

The bucket maths is checked against values worked out by hand from diffusion-pipe's
utils/dataset.py; `test_steps_match_minipipe.py` checks the counts against real minipipe runs.
"""

from __future__ import annotations

import importlib
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from orchestrator.plan import plan_job
from orchestrator.request import TrainingRequest, parse_request
from orchestrator.settings import Settings
from stages.dataset.buckets import AspectBuckets, closest_ratio, frame_bucket
from stages.dataset.check import build_report
from tests.support.helpers import dataset_rules_for

av: Any
try:
    av = importlib.import_module("av")
except ImportError:  # pragma: no cover - the video test needs PyAV
    av = None


def _request(model_type: str = "qwen", **training: Any) -> TrainingRequest:
    field = "videos_url" if model_type.startswith("wan") else "images_url"
    return parse_request(
        {
            "model_type": model_type,
            "dataset": {"type": "precaptioned", field: "https://x.invalid/d.zip"},
            "training": training,
        }
    )


def _images(folder: Path, sizes: dict[tuple[int, int], int]) -> Path:
    """`count` captioned PNGs of each (width, height)."""
    folder.mkdir(parents=True, exist_ok=True)
    for (width, height), count in sizes.items():
        for i in range(count):
            stem = f"{width}x{height}_{i}"
            Image.new("RGB", (width, height), (i * 40 % 255, 90, 160)).save(folder / f"{stem}.png")
            (folder / f"{stem}.txt").write_text(f"a {width} by {height} picture {i}")
    return folder


def test_the_ratio_list_is_diffusion_pipes_rounded_geomspace() -> None:
    assert AspectBuckets().ratios() == (0.5, 0.63, 0.794, 1.0, 1.26, 1.587, 2.0)
    assert AspectBuckets(enabled=False).ratios() == (1.0,)
    assert AspectBuckets(min_ar=1.0, max_ar=1.0, count=3).ratios() == (1.0,)  # deduplicated


@pytest.mark.parametrize(
    ("size", "ratio"),
    [
        ((64, 64), 1.0),
        ((1086, 768), 1.26),  # 1.414: just under sqrt(1.26 x 1.587), the boundary in log space
        ((1087, 768), 1.587),
        ((48, 32), 1.587),
        ((32, 48), 0.63),
        ((1000, 100), 2.0),  # beyond max_ar: the last bucket (diffusion-pipe crops it)
        ((100, 1000), 0.5),
    ],
)
def test_each_size_goes_to_the_nearest_ratio_in_log_space(
    size: tuple[int, int], ratio: float
) -> None:
    assert closest_ratio(*size, AspectBuckets().ratios()) == ratio


@pytest.mark.parametrize(
    ("frames", "buckets", "expected"),
    [
        (1, (1, 33), 1),  # an image
        (40, (1, 33), 33),
        (40, (17, 33), 33),  # 1 is added
        (20, (1, 17, 33), 17),
        (20, (1, 33), None),  # a video only fitting the image bucket is skipped
        (0, (1, 33), None),
    ],
)
def test_frame_buckets_as_diffusion_pipe_picks_them(
    frames: int, buckets: tuple[int, ...], expected: int | None
) -> None:
    assert frame_bucket(frames, buckets) == expected


def test_steps_are_counted_per_aspect_bucket_and_the_drops_are_a_warning(tmp_path: Path) -> None:
    # Global batch 4: square 5 -> 1 batch (1 dropped), 3:2 landscape 3 -> dropped whole,
    # 2:3 portrait 2 -> dropped whole. One step, where 10 // 4 over the whole set says 2.
    images = _images(tmp_path / "images", {(64, 64): 5, (96, 64): 3, (64, 96): 2})
    report = build_report(
        images, None, dataset_rules_for(_request(gradient_accumulation_steps=4, epochs=3))
    )
    assert report.usable_images == 10
    assert report.global_batch == 4
    assert report.steps_per_epoch == 1
    assert report.total_steps == 3
    assert report.dropped_items == 6
    assert {(b.ratio, b.items, b.steps, b.dropped) for b in report.buckets} == {
        (1.0, 5, 1, 1),
        (1.587, 3, 0, 3),
        (0.63, 2, 0, 2),
    }
    count, lines = report.problems["bucket_dropped"]
    assert count == 6
    assert sorted(lines) == [
        "aspect 0.630 (image): 2 item(s), fewer than the global batch 4, all dropped",
        "aspect 1.000 (image): 5 item(s), 1 dropped to make 1 batch(es) of 4",
        "aspect 1.587 (image): 3 item(s), fewer than the global batch 4, all dropped",
    ]
    assert not report.fatal()  # a warning: one bucket still trains
    event = report.to_event()
    assert event["dropped_items"] == 6
    assert event["problems"]["bucket_dropped"]["severity"] == "warning"
    assert {b["aspect"]: b["steps"] for b in event["buckets"]} == {1.0: 1, 1.587: 0, 0.63: 0}


def test_repeats_fill_a_bucket_before_it_is_trimmed(tmp_path: Path) -> None:
    images = _images(tmp_path / "images", {(64, 64): 3, (96, 64): 1})
    req = parse_request(
        {
            "model_type": "qwen",
            "dataset": {
                "type": "precaptioned",
                "images_url": "https://x.invalid/d.zip",
                "image_repeats": 3,
            },
            "training": {"batch_size": 2},
        }
    )
    report = build_report(images, None, dataset_rules_for(req))
    # Square 9 items -> 4 batches of 2 (1 dropped); landscape 3 -> 1 (1 dropped).
    assert report.steps_per_epoch == 5
    assert report.problems["bucket_dropped"][0] == 2


def test_every_bucket_too_small_is_fatal_and_says_why(tmp_path: Path) -> None:
    images = _images(tmp_path / "images", {(64, 64): 1, (96, 64): 1, (64, 96): 1, (128, 64): 1})
    report = build_report(images, None, dataset_rules_for(_request(batch_size=2)))
    assert report.usable_images == 4  # 4 // 2 would be two steps over the whole set
    assert report.steps_per_epoch == 0
    (fatal,) = report.fatal()
    assert fatal.startswith("training.batch_size: 0 steps per epoch: every size bucket")
    assert "Processed dataset was empty" in fatal


def test_the_gpu_count_multiplies_the_global_batch(tmp_path: Path) -> None:
    images = _images(tmp_path / "images", {(64, 64): 8, (96, 64): 4})
    rules = dataset_rules_for(_request(batch_size=2))
    one = build_report(images, None, rules)
    two = build_report(images, None, replace(rules, num_gpus=2))
    staged = build_report(images, None, replace(rules, num_gpus=4, pipeline_stages=2))
    assert (one.global_batch, one.steps_per_epoch) == (2, 4 + 2)
    assert (two.global_batch, two.steps_per_epoch) == (4, 2 + 1)
    assert (staged.data_parallel, staged.steps_per_epoch) == (2, 3)  # 4 GPUs / 2 stages
    assert two.to_event()["num_gpus"] == 2


def test_image_micro_batch_applies_to_image_buckets(tmp_path: Path) -> None:
    images = _images(tmp_path / "images", {(64, 64): 8})
    rules = dataset_rules_for(_request(image_micro_batch_size_per_gpu=4))
    assert rules.image_batch_size == 4
    assert build_report(images, None, rules).steps_per_epoch == 2


def test_the_plan_passes_the_gpus_the_trainer_will_use(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    settings = Settings(root=tmp_path)
    assert plan_job(_request(), settings, "j").dataset.rules.num_gpus == 2
    assert plan_job(_request(), settings, "j", num_gpus=3).dataset.rules.num_gpus == 3
    assert plan_job(_request("tiny"), settings, "j").dataset.rules.num_gpus == 1  # minipipe
    rules = plan_job(_request(pipeline_stages=2), settings, "j").dataset.rules
    assert (rules.num_gpus, rules.pipeline_stages, rules.data_parallel) == (2, 2, 1)


def _video(path: Path, frames: int, size: tuple[int, int], fps: int = 16) -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        for i in range(frames):
            image = Image.new("RGB", size, (i * 7 % 255, 0, 0))
            for packet in stream.encode(av.VideoFrame.from_image(image)):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    path.with_suffix(".txt").write_text("a clip")


@pytest.mark.skipif(av is None, reason="PyAV is not installed")
def test_videos_are_bucketed_by_ratio_and_frame_count(tmp_path: Path) -> None:
    videos = tmp_path / "videos"
    videos.mkdir()
    for i in range(2):
        _video(videos / f"square{i}.mp4", 40, (32, 32))
    _video(videos / "wide.mp4", 40, (48, 32))
    _video(videos / "shorter.mp4", 20, (32, 32))
    req = parse_request(
        {
            "model_type": "wan14b_i2v",
            "dataset": {
                "type": "precaptioned",
                "videos_url": "https://x.invalid/d.zip",
                "video_repeats": 3,
            },
            "training": {
                "gradient_accumulation_steps": 4,
                "frame_buckets": [1, 17, 33],
                "video_clip_mode": "single_beginning",
            },
        }
    )
    report = build_report(None, videos, dataset_rules_for(req))
    assert report.usable_videos == 4
    # (1.0, 33): 2 x 3 = 6 -> 1 batch of 4; (1.587, 33): 3 and (1.0, 17): 3 are dropped.
    assert {(b.ratio, b.frames, b.items, b.steps) for b in report.buckets} == {
        (1.0, 33, 6, 1),
        (1.587, 33, 3, 0),
        (1.0, 17, 3, 0),
    }
    assert report.steps_per_epoch == 1  # 12 // 4 = 3 over the whole set
    assert report.problems["bucket_dropped"][0] == 2 + 3 + 3
