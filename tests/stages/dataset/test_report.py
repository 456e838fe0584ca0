"""The pre-flight report on generated datasets, and the trigger word."""

from __future__ import annotations

import importlib
import io
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from orchestrator.request import TrainingRequest, parse_request
from stages.captions.text import apply_trigger, has_trigger
from stages.dataset.check import build_report
from stages.dataset.report import NO_MEDIA
from tests.support.helpers import dataset_rules_for
from tests.support.media import jpeg

av: Any
try:
    av = importlib.import_module("av")
except ImportError:  # pragma: no cover - the video asserts need PyAV
    av = None


def animated_webp() -> bytes:
    buf = io.BytesIO()
    frames = [Image.new("RGB", (32, 32), c) for c in ("red", "blue", "green")]
    frames[0].save(buf, "WEBP", save_all=True, append_images=frames[1:], duration=100)
    return buf.getvalue()


def tiny_video(path: Path, frames: int, fps: int = 16) -> None:
    assert av is not None
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        for i in range(frames):
            frame = av.VideoFrame.from_image(Image.new("RGB", (32, 32), (i * 7 % 255, 0, 0)))
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def request(
    model_type: str = "qwen",
    kind: str = "precaptioned",
    training: dict[str, Any] | None = None,
    **dataset: Any,
) -> TrainingRequest:
    field = "videos_url" if model_type == "wan14b_i2v" else "images_url"
    body: dict[str, Any] = {
        "model_type": model_type,
        "dataset": {"type": kind, field: "https://x.invalid/d.zip", **dataset},
        "api_keys": {"gemini_api_key": "gem-key"},
        "training": training or {},
    }
    return parse_request(body)


def test_counts_problems_and_steps(tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    for i in range(7):
        (images / f"ok{i}.jpg").write_bytes(jpeg((1024 + i * 16, 768)))
        (images / f"ok{i}.txt").write_text(f"ohwx, photo {i}", encoding="utf-8")
    (images / "nocap.jpg").write_bytes(jpeg())
    (images / "broken.jpg").write_bytes(jpeg()[:200])
    (images / "broken.txt").write_text("a broken one")
    (images / "anim.webp").write_bytes(animated_webp())
    (images / "anim.txt").write_text("moving")
    (images / "empty.png").write_bytes(jpeg())  # a JPEG named .png: Pillow reads it anyway
    (images / "empty.txt").write_text("  \n")
    (images / "latin.jpg").write_bytes(jpeg((768, 1024)))
    (images / "latin.txt").write_bytes("caf\xe9".encode("latin-1"))

    req = request(image_repeats=3, trigger_word="ohwx", training={"batch_size": 2})
    report = build_report(images, None, dataset_rules_for(req))
    assert (report.images, report.videos) == (12, 0)
    assert report.captions_found == 9  # 7 ok + broken + anim
    assert (report.captions_missing, report.captions_empty, report.captions_not_utf8) == (1, 1, 1)
    assert report.captions_with_trigger == 7
    assert report.problems["corrupt_images"] == (1, ("broken.jpg",))
    assert report.problems["animated"] == (1, ("anim.webp",))
    assert report.problems["missing_captions"] == (1, ("nocap.jpg",))
    assert report.skipped_no_caption == 1
    # Trainable: 7 ok + empty caption (diffusion-pipe reads it as "") = 8; x3 repeats / batch 2.
    assert report.usable_images == 8
    assert report.global_batch == 2
    assert report.steps_per_epoch == 12
    assert report.total_steps == 12 * report.epochs
    assert report.width is not None
    assert report.width.max == 1024 + 6 * 16
    assert report.aspect_buckets["landscape"] >= 7
    assert report.aspect_buckets["portrait"] == 1
    fatal = " ".join(report.fatal())
    assert "precaptioned" in fatal
    assert "nocap.jpg" in fatal
    assert "anim.webp" in fatal
    assert "latin.jpg" in fatal
    event = report.to_event()
    assert event["problems"]["corrupt_images"]["examples"] == ["broken.jpg"]
    assert len(str(event)) < 4000


def test_examples_are_capped(tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    for i in range(30):
        (images / f"{i:02}.jpg").write_bytes(b"not an image")
    report = build_report(images, None, dataset_rules_for(request(kind="images")))
    count, names = report.problems["corrupt_images"]
    assert count == 30
    assert len(names) == 20
    assert report.usable_images == 0
    assert report.fatal()[0].startswith("No usable images/videos")


def test_empty_dataset_uses_the_seed_wording(tmp_path: Path) -> None:
    report = build_report(tmp_path / "images", tmp_path / "videos", dataset_rules_for(request()))
    assert report.fatal() == [NO_MEDIA]


def _bilevel(path: Path, size: tuple[int, int]) -> None:
    buf = io.BytesIO()
    Image.new("1", size).save(buf, "PNG")  # megapixels in a few KiB on disk
    path.write_bytes(buf.getvalue())
    path.with_suffix(".txt").write_text("x")


def test_an_image_is_too_large_exactly_when_the_trainer_skips_it(tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    _bilevel(images / "bomb.png", (20_000, 10_000))  # 200 MP: Pillow refuses to open it
    _bilevel(images / "huge.png", (10_000, 10_000))  # 100 MP: opened (with a warning), trained on
    for i in range(2):
        Image.new("RGB", (64, 64)).save(images / f"ok{i}.png")
        (images / f"ok{i}.txt").write_text("x")
    report = build_report(images, None, dataset_rules_for(request()))
    assert report.problems["image_too_large"] == (1, ("bomb.png",))
    assert report.problems["huge_images"] == (1, ("huge.png",))
    assert report.usable_images == 3  # what diffusion-pipe and minipipe train on
    with pytest.raises(Image.DecompressionBombError):
        Image.open(images / "bomb.png")
    with pytest.warns(Image.DecompressionBombWarning), Image.open(images / "huge.png") as im:
        assert im.size == (10_000, 10_000)


@pytest.mark.skipif(av is None, reason="PyAV is not installed")
def test_videos_short_and_images_unused(tmp_path: Path) -> None:
    images, videos = tmp_path / "images", tmp_path / "videos"
    images.mkdir()
    videos.mkdir()
    (images / "still.jpg").write_bytes(jpeg())
    (images / "still.txt").write_text("x")
    tiny_video(videos / "long.mp4", 40)
    (videos / "long.txt").write_text("a long clip")
    tiny_video(videos / "short.mp4", 8)
    (videos / "short.txt").write_text("a short clip")
    (videos / "bad.mp4").write_bytes(b"\0" * 100)
    req = request(
        "wan14b_i2v", video_repeats=5, training={"batch_size": 1, "gradient_accumulation_steps": 2}
    )
    report = build_report(images, videos, dataset_rules_for(req))
    assert report.problems["short_videos"] == (1, ("short.mp4",))
    assert report.problems["corrupt_videos"] == (1, ("bad.mp4",))
    assert report.problems["unused_images"] == (1, ("still.jpg",))
    assert (report.usable_images, report.usable_videos) == (0, 1)
    assert report.global_batch == 2
    assert report.steps_per_epoch == 2  # floor(1 video x 5 repeats / 2)
    assert report.frames is not None
    assert report.frames.max == 40
    assert report.fps is not None
    assert round(report.fps.median) == 16


def test_apply_trigger() -> None:
    assert apply_trigger("a dog", "ohwx") == "ohwx, a dog"
    assert apply_trigger("OHWX, a dog", "ohwx") == "OHWX, a dog"
    assert apply_trigger('  "ohwx":  a dog\n', "ohwx") == '"ohwx":  a dog'
    assert apply_trigger("ohwxman at work", "ohwx") == "ohwx, ohwxman at work"
    assert apply_trigger("", "ohwx person") == "ohwx person"
    assert apply_trigger("ohwx   person smiling", "ohwx person") == "ohwx   person smiling"
    assert apply_trigger("a dog\n", None) == "a dog\n"
    once = apply_trigger("a cat", "sks cat")
    assert apply_trigger(once, "sks cat") == once
    assert has_trigger(once, "SKS CAT")
