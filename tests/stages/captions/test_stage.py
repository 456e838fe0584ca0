"""The captions stage through the real runner: tiny LLaVA for images, loopback Gemini for videos."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from events.store import EventStore
from events.vocabulary import Status
from orchestrator.plan import caption_inputs
from orchestrator.request import TrainingRequest, parse_request
from orchestrator.runner import run_job
from stages.captions.gemini import GeminiSettings
from stages.captions.joycaption import JoyCaptionSettings, load_captioner
from stages.captions.stage import Captions
from stages.contract import Stage, StageContext
from tests.support.fakegemini import FakeGemini
from tests.support.helpers import Recorded, stage_context
from tests.support.rehearsal import Publish, Train, Weights
from tests.support.tiny_llava import tiny_llava_dir, write_images

KEY = "AIzaSTAGEKEY-0123456789abcdefghijk"


class WriteMedia(Stage):
    """Stands in for the dataset stage: two images, two videos, one image precaptioned."""

    name = "dataset"
    status = Status.DOWNLOADING

    def run(self, ctx: StageContext) -> dict[str, Any]:
        images = write_images(ctx.job_dir / "dataset" / "images", 2)
        images[0].with_suffix(".txt").write_text("ohwx, my own words\n")
        videos = ctx.job_dir / "dataset" / "videos"
        videos.mkdir(parents=True)
        for i in range(2):
            (videos / f"v{i}.mp4").write_bytes(bytes([i]) * 500)
        return {"files": ["dataset/images", "dataset/videos"]}


def _request(tmp_path: Path, kind: str = "both") -> TrainingRequest:
    return parse_request(
        {
            "model_type": "wan13",
            "dataset": {
                "type": kind,
                "images_url": "http://example.invalid/i.zip",
                "videos_url": "http://example.invalid/v.zip",
                "trigger_word": "ohwx",
            },
            "api_keys": {"gemini_api_key": KEY},
            "output": {"method": "local", "local": {"path": str(tmp_path / "out")}},
        }
    )


@pytest.fixture
def fake() -> Iterator[FakeGemini]:
    with FakeGemini(api_key=KEY) as server:
        yield server


def _stages(tmp_path: Path, fake: FakeGemini, request: TrainingRequest, **kw: Any) -> list[Stage]:
    inputs = caption_inputs(request)
    assert inputs is not None
    captions = Captions(
        inputs,
        load_image_captioner=lambda: load_captioner(tiny_llava_dir(), device="cpu"),
        joycaption=JoyCaptionSettings(do_sample=False, max_new_tokens=5, batch_size=2),
        gemini=GeminiSettings(base_url=fake.base_url, poll_interval_s=0.0, **kw),
        sleep=lambda s: None,
    )
    return [WriteMedia(), captions, Weights(), Train(epochs=1), Publish(tmp_path / "pub")]


def _captions(job: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted((job / "dataset").rglob("*.txt"))}


def test_captions_every_medium_and_a_redelivery_keeps_them(
    tmp_path: Path, fake: FakeGemini
) -> None:
    root = tmp_path / "root"
    request = _request(tmp_path)
    out = run_job(root=root, job_id="j1", stages=_stages(tmp_path, fake, request), secrets=[KEY])
    assert out.status is Status.COMPLETE, out.error
    events = EventStore.on_disk(root).read("j1")
    walk = [e.status for e in events if e.type == e.status]
    assert walk[:4] == ["INITIALIZED", "STARTING", "DOWNLOADING", "CAPTIONING"]
    done = next(
        e.data["result"]
        for e in events
        if e.data.get("stage") == "captions" and e.type == "STAGE_DONE"
    )
    assert done["images_captioned"] == 1
    assert done["videos_captioned"] == 2
    assert done["skipped_existing"] == 1
    assert sorted(done["files"]) == [
        "dataset/images/img00.txt",
        "dataset/images/img01.txt",
        "dataset/videos/v0.txt",
        "dataset/videos/v1.txt",
    ]
    progress = [
        e.data for e in events if e.type == "PROGRESS" and e.data.get("stage") == "captions"
    ]
    assert {"stage": "captions", "done": 1, "total": 1, "media": "images"} in progress
    assert {"stage": "captions", "done": 2, "total": 2, "media": "videos"} in progress
    job = root / "jobs" / "j1"
    captions = _captions(job)
    assert captions["img00.txt"] == "ohwx, my own words\n"  # precaptioned kept, trigger once
    assert all(text.startswith("ohwx, ") and text.count("\n") == 1 for text in captions.values())
    assert KEY not in (job / "events.jsonl").read_text()
    assert sorted(fake.deleted) == sorted(fake.files)

    # Delivered again: the recorded result comes back and nothing is captioned twice.
    uploads = len(fake.calls("upload_start"))
    again = run_job(root=root, job_id="j1", stages=_stages(tmp_path, fake, request), secrets=[KEY])
    assert again.status is Status.COMPLETE
    assert again.ran == []
    assert len(fake.calls("upload_start")) == uploads
    assert _captions(job) == captions


def test_verify_wants_every_caption(tmp_path: Path, fake: FakeGemini) -> None:
    root = tmp_path / "root"
    request = _request(tmp_path, kind="videos")
    stages = _stages(tmp_path, fake, request)
    stages = [*stages[:2], Failing()]
    first = run_job(root=root, job_id="j2", stages=stages, secrets=[KEY])
    assert first.status is Status.ERROR
    job = root / "jobs" / "j2"
    assert (job / "dataset" / "videos" / "v0.txt").exists()
    (job / "dataset" / "videos" / "v1.txt").unlink()
    uploads = len(fake.calls("upload_start"))
    second = run_job(
        root=root,
        job_id="j2",
        stages=_stages(tmp_path, fake, request),
        secrets=[KEY],
    )
    assert second.status is Status.COMPLETE, second.error
    assert "captions" in second.ran  # verify saw the missing caption
    assert len(fake.calls("upload_start")) == uploads + 1  # only v1 captioned again
    assert (job / "dataset" / "videos" / "v1.txt").read_text().startswith("ohwx, A clip v1.mp4")
    third_stages = _stages(tmp_path, fake, request)
    assert third_stages[1].verify(
        stage_context(job, Recorded().record, job_id="j2", resumed=True),
        {"files": []},
    )


def test_a_refused_key_fails_the_job_with_a_clear_message(tmp_path: Path, fake: FakeGemini) -> None:
    root = tmp_path / "root"
    bad = _request(tmp_path, kind="videos").model_copy(deep=True)
    stages = _stages(tmp_path, fake, bad)
    fake.api_key = "AIzaSOMEOTHERKEY-000000000000000"
    out = run_job(root=root, job_id="j3", stages=stages, secrets=[KEY])
    assert out.status is Status.ERROR
    assert out.error is not None
    assert "api_keys.gemini_api_key was refused by Gemini" in out.error
    assert KEY not in (root / "jobs" / "j3" / "events.jsonl").read_text()


class Failing(Stage):
    name = "weights"
    status = Status.MODEL_DOWNLOAD

    def run(self, ctx: StageContext) -> dict[str, Any]:
        raise RuntimeError("disk full")


def test_the_request_chooses_the_gemini_model(tmp_path: Path, fake: FakeGemini) -> None:
    body = _request(tmp_path, kind="videos").model_dump(mode="json")
    body["dataset"]["gemini_model"] = "gemini-2.5-pro"
    body["api_keys"] = {"gemini_api_key": KEY}
    request = parse_request(body)
    out = run_job(
        root=tmp_path / "root", job_id="j4", stages=_stages(tmp_path, fake, request), secrets=[KEY]
    )
    assert out.status is Status.COMPLETE, out.error
    assert fake.models_used == ["gemini-2.5-pro", "gemini-2.5-pro"]
