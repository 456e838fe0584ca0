"""`resume_from`: a new job continues an earlier one's training on the same volume, through
`handle()` with the tiny model (minipipe) and a loopback dataset server.

The earlier job is left exactly as it was; what a checkpoint cannot follow (another model, another
dataset) is refused before anything is written, unless `resume_from_lora` starts fresh from the
earlier job's newest saved LoRA."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from events.store import EventStore
from orchestrator.settings import Settings
from orchestrator.worker import WorkerOptions, handle
from tests.support.dataserver import DataServer
from tests.support.family_loras import metadata_of, tensor_data
from tests.support.localpod_jobs import job_digest, trained_steps
from tests.support.media import shades_zip

pytestmark = pytest.mark.slow


@pytest.fixture
def data() -> Iterator[DataServer]:
    with DataServer() as srv:
        srv.files["/d.zip"] = shades_zip(4)
        srv.files["/other.zip"] = shades_zip(6)
        yield srv


def _options(root: Path) -> WorkerOptions:
    return WorkerOptions(settings=Settings(root=root), progress_every_s=0, mirror_close_s=1)


def _body(data: DataServer, out: Path, *, url: str = "/d.zip", **extra: Any) -> dict[str, Any]:
    return {
        "model_type": "tiny",
        "dataset": {"type": "precaptioned", "images_url": data.url + url},
        "training": {"epochs": extra.pop("epochs", 2), "resolution": 32},
        "output": {"method": "local", "local": {"path": str(out)}},
        **extra,
    }


def _run(job_id: str, body: dict[str, Any], root: Path) -> dict[str, Any]:
    return asyncio.run(handle({"id": job_id, "input": body}, _options(root)))


def test_a_new_job_continues_an_earlier_ones_checkpoint(tmp_path: Path, data: DataServer) -> None:
    root = tmp_path / "root"
    first = _run("first", _body(data, tmp_path / "out"), root)
    assert first["status"] == "success", first
    before = job_digest(tmp_path, "first")

    more = _body(data, tmp_path / "out", epochs=4, resume_from="first")
    second = _run("second", more, root)

    assert second["status"] == "success", second
    assert second["epochs_completed"] == 4
    assert len(data.gets("/d.zip")) == 1  # the dataset came along, not downloaded again
    assert job_digest(tmp_path, "first") == before  # the earlier job is as it was
    steps = trained_steps(tmp_path, "second")
    assert steps
    assert min(steps) > max(trained_steps(tmp_path, "first"))  # continued, not trained again
    events = EventStore.on_disk(root).read("second")
    started = next(e for e in events if e.type == "INITIALIZED")
    assert started.data["resume_from"] == "first"
    assert started.data["resume_mode"] == "checkpoint"
    inherited = next(e for e in events if e.type == "STAGE_DONE" and e.data["stage"] == "inherit")
    assert inherited.data["result"]["files_linked"] > 0
    notes = [str(e.data.get("message")) for e in events if e.type == "PROGRESS"]
    assert any("resuming run" in n for n in notes), notes


def test_what_a_checkpoint_cannot_follow_is_refused_before_anything_is_written(
    tmp_path: Path, data: DataServer
) -> None:
    root = tmp_path / "root"
    assert _run("first", _body(data, tmp_path / "out"), root)["status"] == "success"

    other_data = _body(data, tmp_path / "out", url="/other.zip", resume_from="first")
    refused = _run("second", other_data, root)
    assert refused["status"] == "failed"
    assert refused["error"].count("resume_from") == 2  # the field, and the way out
    assert "changes the dataset of job first" in refused["error"]
    assert "resume_from_lora" in refused["error"]
    assert not (root / "jobs" / "second").exists()

    missing = _run("third", _body(data, tmp_path / "out", resume_from="nobody"), root)
    assert "resume_from: no job nobody on this worker's volume" in missing["error"]


def test_resume_from_lora_starts_fresh_from_the_saved_lora_on_another_dataset(
    tmp_path: Path, data: DataServer
) -> None:
    root = tmp_path / "root"
    assert _run("first", _body(data, tmp_path / "out"), root)["status"] == "success"
    body = _body(data, tmp_path / "out", url="/other.zip", resume_from="first")
    body["resume_from_lora"] = True
    second = _run("second", body, root)
    assert second["status"] == "success", second
    assert len(data.gets("/other.zip")) == 1  # its own dataset
    assert min(trained_steps(tmp_path, "second")) == 1  # a fresh run: the counter starts over
    events = EventStore.on_disk(root).read("second")
    notes = [str(e.data.get("message")) for e in events if e.type == "PROGRESS"]
    assert any("starting fresh from the saved LoRA" in n for n in notes), notes


def test_a_finished_training_with_the_same_values_is_published_not_trained_again(
    tmp_path: Path, data: DataServer
) -> None:
    """How a LoRA whose publish did not happen (the Hub's commit limit) is published once
    RunPod no longer keeps the job for /retry: the same request with `resume_from`."""
    root = tmp_path / "root"
    first = _run("first", _body(data, tmp_path / "out"), root)
    assert first["status"] == "success", first
    lora = next(f for f in first["files"] if f.endswith(".safetensors"))
    made = (tmp_path / "out" / "first" / lora).read_bytes()

    second = _run("second", _body(data, tmp_path / "out", resume_from="first"), root)

    assert second["status"] == "success", second
    assert second["epochs_completed"] == first["epochs_completed"]
    again = (tmp_path / "out" / "second" / lora).read_bytes()
    assert tensor_data(again) == tensor_data(made)  # the same LoRA (metadata: the new job's)
    assert metadata_of(again)["dps_job_id"] == "second"
    assert not (root / "jobs" / "second" / "logs" / "train.log").exists()  # nothing trained
    events = EventStore.on_disk(root).read("second")
    inherited = next(e for e in events if e.type == "STAGE_DONE" and e.data["stage"] == "inherit")
    assert inherited.data["result"]["adopted"] == ["dataset", "training"]


def test_a_job_recorded_before_the_gemini_model_field_can_be_continued(
    tmp_path: Path, data: DataServer
) -> None:
    """The Gemini model only chose how captions were made, and the captions come along: an
    earlier job's recorded request without the field (or with another model) is the same
    dataset."""
    root = tmp_path / "root"
    assert _run("first", _body(data, tmp_path / "out"), root)["status"] == "success"
    recorded = root / "jobs" / "first" / "request.json"
    request = json.loads(recorded.read_text())
    assert request["dataset"]["gemini_model"] == "gemini-2.5-flash"  # shown with its default
    del request["dataset"]["gemini_model"]  # as a job recorded before the field existed
    recorded.write_text(json.dumps(request))
    more = _body(data, tmp_path / "out", epochs=3, resume_from="first")
    second = _run("second", more, root)
    assert second["status"] == "success", second
    assert second["epochs_completed"] == 3
