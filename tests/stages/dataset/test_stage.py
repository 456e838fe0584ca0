"""The dataset stage through the runner, with a real zip served over loopback; and the CLI."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from events.store import EventStore
from events.vocabulary import Status
from orchestrator.cli.dataset import app, check_dataset
from orchestrator.plan import trainer_spec
from orchestrator.request import parse_request
from orchestrator.runner import run_job
from stages.contract import Stage, StageContext
from stages.dataset.limits import DownloadLimits
from stages.dataset.stage import Dataset
from stages.training.config import JobPaths, render
from tests.support.dataserver import DataServer
from tests.support.helpers import dataset_inputs_for
from tests.support.media import fade_video, jpeg, make_zip

LIMITS = DownloadLimits(attempts=2, retry_wait_s=0.0)


def dataset_zip(n: int = 4, *, captions: bool = True) -> bytes:
    entries: dict[str, bytes] = {}
    for i in range(n):
        entries[f"set/img{i}.jpg"] = jpeg((64 + i, 64))
        if captions:
            entries[f"set/img{i}.txt"] = f"a red square {i}".encode()
    return make_zip(entries)


class Fails(Stage):
    """A later stage that fails once, so the job is delivered again."""

    name = "after"
    status = Status.MODEL_DOWNLOAD

    def __init__(self) -> None:
        self.calls = 0

    def run(self, ctx: StageContext) -> dict[str, Any]:
        self.calls += 1
        if self.calls == 1:
            raise RuntimeError("boom")
        return {"ok": True}


class Step(Stage):
    """A stand-in for the later stages, so the job can reach COMPLETE."""

    def __init__(self, name: str, status: Status, done: Status | None = None) -> None:
        self.name, self.status, self.done_status = name, status, done

    def run(self, ctx: StageContext) -> dict[str, Any]:
        return {}


def chain(*first: Stage) -> list[Stage]:
    return [
        *first,
        Step("train", Status.TRAINING, Status.TRAINING_COMPLETE),
        Step("upload", Status.UPLOADING),
    ]


def _request(url: str, **dataset: Any) -> Any:
    return parse_request(
        {"model_type": "qwen", "dataset": {"type": "precaptioned", "images_url": url, **dataset}}
    )


def test_stage_through_run_job_and_redelivery(tmp_path: Path) -> None:
    root = tmp_path / "root"
    with DataServer() as srv:
        srv.files["/d.zip"] = dataset_zip()
        req = _request(srv.url + "/d.zip?sig=secretsig", trigger_word="ohwx")
        after = Fails()
        stages = chain(Dataset(dataset_inputs_for(req, download_limits=LIMITS)), after)
        first = run_job(root=root, job_id="j", stages=stages)
        assert first.status is Status.ERROR
        assert first.ran == ["dataset"]
        images = root / "jobs" / "j" / "dataset" / "images"
        assert (images / "img0.txt").read_text() == "ohwx, a red square 0"

        second = run_job(root=root, job_id="j", stages=stages)
        assert second.status is Status.COMPLETE, second.error
        assert second.skipped == ["dataset"]
        assert len(srv.gets("/d.zip")) == 1

        third = run_job(root=root, job_id="j", stages=stages)
        assert third.status is Status.COMPLETE
        assert third.ran == []
        assert len(srv.gets("/d.zip")) == 1

    result = first.view.stages["dataset"]
    assert result["images"] == 4
    assert result["captions_missing"] == 0
    assert result["steps_per_epoch"] == 4
    events = EventStore.on_disk(root).open("j").events
    report = next(e for e in events if e.type == "DATASET_REPORT")
    assert report.data["usable_images"] == 4
    assert report.data["captions"]["with_trigger"] == 4
    assert "secretsig" not in (root / "jobs" / "j" / "events.jsonl").read_text()
    # The configs render against the extracted folders (the batch check uses the counts).
    paths = JobPaths.for_job(root, "j")
    rendered = render(
        trainer_spec(req), paths, image_count=result["images"], video_count=result["videos"]
    )
    assert rendered.dataset["directory"][0]["path"] == str(images)


def test_stage_reuses_download_when_dataset_is_gone(tmp_path: Path) -> None:
    root = tmp_path / "root"
    with DataServer() as srv:
        srv.files["/d.zip"] = dataset_zip()
        req = _request(srv.url + "/d.zip")
        stages = chain(Dataset(dataset_inputs_for(req, download_limits=LIMITS)), Fails())
        run_job(root=root, job_id="j", stages=stages)
        dataset = root / "jobs" / "j" / "dataset"
        (dataset / "images" / "img1.jpg").unlink()  # verify fails: the stage runs again
        again = run_job(root=root, job_id="j", stages=stages)
        assert again.status is Status.COMPLETE
        assert "dataset" in again.ran
        assert len(srv.gets("/d.zip")) == 1
        assert (dataset / "images" / "img1.jpg").exists()


def test_missing_captions_fail_before_model_download(tmp_path: Path) -> None:
    with DataServer() as srv:
        srv.files["/d.zip"] = dataset_zip(captions=False)
        after = Fails()
        req = _request(srv.url + "/d.zip")
        outcome = run_job(
            root=tmp_path,
            job_id="j",
            stages=[Dataset(dataset_inputs_for(req, download_limits=LIMITS)), after],
        )
    assert outcome.status is Status.ERROR
    assert after.calls == 0
    assert outcome.error is not None
    assert 'dataset.type is "precaptioned" but 4 media file(s) have no caption' in outcome.error
    assert "img0.jpg" in outcome.error


def test_no_media_uses_seed_wording(tmp_path: Path) -> None:
    with DataServer() as srv:
        srv.files["/d.zip"] = make_zip({"readme.md": b"hello"})
        req = _request(srv.url + "/d.zip")
        outcome = run_job(
            root=tmp_path,
            job_id="j",
            stages=[Dataset(dataset_inputs_for(req, download_limits=LIMITS))],
        )
    assert outcome.error is not None
    assert outcome.error.startswith("No images/videos found in the dataset")


def test_check_dataset_and_cli(tmp_path: Path) -> None:
    archive = tmp_path / "d.zip"
    archive.write_bytes(dataset_zip(4))  # Flux's global batch is 4: one step per epoch
    report = check_dataset(str(archive), model_type="flux", work_dir=tmp_path)
    assert report.usable_images == 4
    assert not report.fatal()
    archive.write_bytes(dataset_zip(3))  # fewer images than the global batch: nothing trains
    short = check_dataset(str(archive), model_type="flux", work_dir=tmp_path)
    assert short.fatal()[0].startswith("training.batch_size: 0 steps per epoch")
    assert [p.name for p in tmp_path.iterdir()] == ["d.zip"]  # the work folder is cleaned up
    runner = CliRunner()
    shown = runner.invoke(app, ["check", str(archive), "--model-type", "sdxl"])
    assert shown.exit_code == 0, shown.output
    assert "steps per epoch" in shown.output
    as_json = runner.invoke(app, ["check", str(archive), "--json"])
    assert json.loads(as_json.output)["usable_images"] == 3  # qwen: a global batch of 1
    archive.write_bytes(dataset_zip(2, captions=False))
    bad = runner.invoke(app, ["check", str(archive)])
    assert bad.exit_code == 1
    assert "fatal" in bad.output


def test_a_batch_larger_than_the_dataset_fails_in_the_dataset_stage(tmp_path: Path) -> None:
    """Known once the dataset is unpacked, so refused there: not after the model download."""
    with DataServer() as srv:
        srv.files["/d.zip"] = dataset_zip(3)
        req = _request(srv.url + "/d.zip", image_repeats=2)
        req = req.model_copy(update={"training": req.training.model_copy(update={"batch_size": 8})})
        after = Fails()
        inputs = replace(dataset_inputs_for(req, download_limits=LIMITS), trainer=trainer_spec(req))
        outcome = run_job(root=tmp_path, job_id="j", stages=[Dataset(inputs), after])
    assert outcome.status is Status.ERROR
    assert after.calls == 0
    assert outcome.error is not None
    assert outcome.error.startswith("training.batch_size: 0 steps per epoch")
    report = outcome.view.dataset_report
    assert report is not None
    assert report["fatal"][0].startswith("training.batch_size: 0 steps")


def test_a_video_directory_smaller_than_the_batch_fails_in_the_dataset_stage(
    tmp_path: Path,
) -> None:
    """Wan with enough images but one video: diffusion-pipe would drop the video directory
    (its clips x repeats < the global batch). The trainer's own batch rule says so here."""
    clip = tmp_path / "v.mp4"
    fade_video(clip, 40, fps=16)
    entries = {f"set/img{i}.jpg": jpeg((64, 64)) for i in range(8)}
    entries |= {f"set/img{i}.txt": b"a red square" for i in range(8)}
    entries |= {"clip/v.mp4": clip.read_bytes(), "clip/v.txt": b"a fade"}
    with DataServer() as srv:
        srv.files["/i.zip"] = make_zip({k: v for k, v in entries.items() if k.startswith("set/")})
        srv.files["/v.zip"] = make_zip({k: v for k, v in entries.items() if k.startswith("clip/")})
        req = parse_request(
            {
                "model_type": "wan13",
                "dataset": {
                    "type": "precaptioned",
                    "images_url": srv.url + "/i.zip",
                    "videos_url": srv.url + "/v.zip",
                    "video_repeats": 5,
                },
                "training": {"batch_size": 2, "gradient_accumulation_steps": 4},
            }
        )
        after = Fails()
        inputs = replace(dataset_inputs_for(req, download_limits=LIMITS), trainer=trainer_spec(req))
        outcome = run_job(root=tmp_path / "r", job_id="j", stages=[Dataset(inputs), after])
    assert outcome.status is Status.ERROR, outcome.error
    assert after.calls == 0
    assert outcome.error is not None
    assert outcome.error.startswith("training.batch_size: global batch 8")
    assert "dataset.video_repeats" in outcome.error
