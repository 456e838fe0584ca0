"""A whole job on the CPU through the worker core (what handler.py runs): the real stages,
minipipe, loopback servers for the dataset and the Hub."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from events.audit import audit
from events.lease import FileLease
from events.store import EventStore
from orchestrator.plan import publish_spec
from orchestrator.settings import Settings
from orchestrator.worker import WorkerOptions, handle
from stages.publish.stage import PublishOptions
from tests.support.canary import TOKEN_CANARY
from tests.support.dataserver import DataServer
from tests.support.fakehub import FakeHub
from tests.support.media import shades_zip

pytestmark = pytest.mark.slow


@pytest.fixture
def data() -> Iterator[DataServer]:
    with DataServer() as srv:
        srv.files["/d.zip"] = shades_zip()
        yield srv


def _request(url: str, output: dict[str, Any], **training: Any) -> dict[str, Any]:
    return {
        "model_type": "tiny",
        "dataset": {"type": "precaptioned", "images_url": url, "trigger_word": "sqr"},
        "training": {"epochs": 2, "resolution": 32, **training},
        "output": output,
    }


def _run(job: dict[str, Any], options: WorkerOptions, sent: list[dict[str, Any]]) -> dict[str, Any]:
    return asyncio.run(handle(job, options, sent.append))


def test_a_tiny_job_runs_end_to_end_with_local_output(tmp_path: Path, data: DataServer) -> None:
    options = WorkerOptions(settings=Settings(root=tmp_path / "root"), progress_every_s=0)
    out = tmp_path / "outputs"
    sent: list[dict[str, Any]] = []
    job = {
        "id": "job-e2e",
        "input": _request(data.url + "/d.zip", {"method": "local", "local": {"path": str(out)}}),
    }
    response = _run(job, options, sent)
    assert response["status"] == "success", response
    assert set(response) >= {
        "status",
        "job_id",
        "model_type",
        "model_name",
        "epochs_completed",
        "latest_epoch",
        "output",
    }
    assert set(response["output"]) == {
        "download_url",
        "safetensors_url",
        "repo_url",
        "download_method",
        "expires_in_days",
        "note",
    }
    assert response["model_name"] == "Tiny (minipipe, CPU)"
    assert response["latest_epoch"] == "epoch2"
    lora = Path(response["output"]["safetensors_url"].removeprefix("file://"))
    assert lora.is_file()
    assert lora.name == "adapter_model.safetensors"
    events = EventStore.on_disk(tmp_path / "root").read("job-e2e")
    assert audit(events).ok
    statuses = [e.status for e in events if e.type == e.status]
    assert statuses == [
        "INITIALIZED",
        "STARTING",
        "DOWNLOADING",
        "MODEL_DOWNLOAD",
        "TRAINING",
        "TRAINING_COMPLETE",
        "UPLOADING",
        "COMPLETE",
    ]
    assert {p["status"] for p in sent} >= {"DOWNLOADING", "TRAINING"}
    updates = sorted((tmp_path / "root" / "jobs" / "job-e2e" / "UPDATES").iterdir())
    assert updates[-1].name.endswith("_COMPLETE.json")
    # Delivered again: the recorded answer, nothing trained.
    again = _run(job, options, [])
    assert again["output"] == response["output"]
    assert len(EventStore.on_disk(tmp_path / "root").read("job-e2e")) == len(events)


def test_a_bad_request_fails_at_once_and_writes_nothing(tmp_path: Path) -> None:
    options = WorkerOptions(settings=Settings(root=tmp_path / "root"))
    bad = {
        "id": "bad",
        "input": {
            "model_type": "wan14b_i2v",
            "dataset": {"type": "videos"},
            "api_keys": {"gemini_api_key": TOKEN_CANARY},
        },
    }
    response = _run(bad, options, [])
    assert response["status"] == "failed"
    assert "dataset.videos_url" in response["error"]
    assert TOKEN_CANARY not in str(response)
    assert not (tmp_path / "root").exists()


def test_hub_output_publishes_and_mirrors_updates(tmp_path: Path, data: DataServer) -> None:
    with FakeHub() as hub:
        options = WorkerOptions(
            settings=Settings(root=tmp_path / "root", hub_endpoint=hub.url),
            publish_options=PublishOptions(hub_endpoint=hub.url),
            progress_every_s=0,
        )
        output = {
            "method": "huggingface",
            "huggingface": {"token": TOKEN_CANARY, "repo_id": "me/tiny-lora"},
        }
        response = _run(
            {"id": "job-hub", "input": _request(data.url + "/d.zip", output)}, options, []
        )
        assert response["status"] == "success", response
        assert (
            response["output"]["download_url"]
            == f"{hub.url}/me/tiny-lora/resolve/main/adapter_model.safetensors?download=true"
        )
        files = hub.files("me/tiny-lora")
        assert "adapter_model.safetensors" in files
        updates = sorted(p for p in files if p.startswith("UPDATES/"))
        assert updates[0].endswith("_INITIALIZED.json")
        assert updates[-1].endswith("_COMPLETE.json")
        assert response["mirror"]["ok"] is True
        for content in files.values():
            assert TOKEN_CANARY.encode() not in content
    for path in (tmp_path / "root").rglob("*"):
        if path.is_file():
            assert TOKEN_CANARY.encode() not in path.read_bytes(), path


def test_a_cancel_during_training_publishes_the_latest_epoch(
    tmp_path: Path, data: DataServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MINIPIPE_STEP_SLEEP", "0.1")
    options = WorkerOptions(
        settings=Settings(root=tmp_path / "root"), progress_every_s=0, stop_grace_s=30
    )
    out = tmp_path / "outputs"
    job = {
        "id": "job-cancel",
        "input": _request(
            data.url + "/d.zip", {"method": "local", "local": {"path": str(out)}}, epochs=6
        ),
    }

    async def cancel_after_first_epoch() -> None:
        task = asyncio.create_task(handle(job, options, lambda p: None))
        events_path = tmp_path / "root" / "jobs" / "job-cancel" / "events.jsonl"
        while not (events_path.exists() and b'"EPOCH_SAVED"' in events_path.read_bytes()):
            await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(cancel_after_first_epoch())
    events = EventStore.on_disk(tmp_path / "root").read("job-cancel")
    assert events[-1].status == "CANCELLED"
    assert events[-1].data["published"]["latest_epoch"].startswith("epoch")
    assert (out / "job-cancel").is_dir()
    assert audit(events).ok
    assert _processes_mentioning(str(tmp_path)) == []  # the trainer's process group is gone


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
            except OSError:
                continue
            if text.encode() in cmdline and entry.name != str(os.getpid()):
                found.append(int(entry.name))
    return found


def test_a_recorded_s3_answer_gets_a_working_link_again() -> None:
    from events.fold import JobView  # noqa: PLC0415
    from events.vocabulary import Status  # noqa: PLC0415
    from orchestrator.request import parse_request  # noqa: PLC0415
    from orchestrator.response import respond  # noqa: PLC0415
    from orchestrator.runner import Outcome  # noqa: PLC0415

    request = parse_request(
        {
            "model_type": "qwen",
            "dataset": {"type": "precaptioned", "images_url": "https://example.com/d.zip"},
            "output": {
                "method": "s3",
                "s3": {
                    "endpoint_url": "http://127.0.0.1:9",
                    "bucket": "loras",
                    "region": "us-east-1",
                    "access_key": "AKIAABCDEFGHIJKLMNOP",
                    "secret_key": "s3-secret-value-0000",
                    "key_prefix": "out",
                },
            },
        }
    )
    masked = "http://127.0.0.1:9/loras/out/j1/adapter_model.safetensors?X-Amz-Credential=***"
    recorded = {
        "status": "success",
        "output": {"download_url": masked, "safetensors_url": masked, "download_method": "s3"},
        "files": ["adapter_model.safetensors", "adapter_config.json"],
    }
    outcome = Outcome(
        "j1", Status.COMPLETE, 1, result={"response": recorded}, view=JobView(), from_log=True
    )
    answer = respond(outcome, None, publish_spec(request).destination.s3)
    url = answer["output"]["download_url"]
    assert url.startswith("http://127.0.0.1:9/loras/out/j1/adapter_model.safetensors?")
    assert "AKIAABCDEFGHIJKLMNOP" in url
    assert "***" not in url
    assert answer["output"]["safetensors_url"] == url
    assert "s3-secret-value-0000" not in url


def test_a_duplicate_delivery_waits_while_the_first_keeps_its_lease(
    tmp_path: Path, data: DataServer
) -> None:
    settings = Settings(root=tmp_path / "root", lease_ttl_s=1.0)
    options = WorkerOptions(settings=settings, progress_every_s=0)
    out = tmp_path / "outputs"
    job = {
        "id": "job-twice",
        "input": _request(data.url + "/d.zip", {"method": "local", "local": {"path": str(out)}}),
    }
    first = FileLease(settings.root / "jobs" / "job-twice", owner="first-delivery", ttl_s=1.0)
    first.acquire()
    first.start_renewing(every_s=0.25)  # alive, well past the old 2 x TTL + 5 s give-up
    held_for = 2 * settings.lease_ttl_s + 5 + 3
    threading.Timer(held_for, first.release).start()
    started = time.monotonic()

    response = _run(job, options, [])

    assert time.monotonic() - started >= held_for
    assert response["status"] == "success", response  # not FAILED while the first one ran
    events = EventStore.on_disk(settings.root).read("job-twice")
    assert [e.status for e in events if e.type == e.status][-1] == "COMPLETE"


def test_a_duplicate_delivery_gives_up_on_a_lease_nobody_renews_or_releases(
    tmp_path: Path, data: DataServer
) -> None:
    settings = Settings(root=tmp_path / "root", lease_ttl_s=1.0)
    options = WorkerOptions(settings=settings, progress_every_s=0)
    job = {
        "id": "job-stuck",
        "input": _request(
            data.url + "/d.zip", {"method": "local", "local": {"path": str(tmp_path)}}
        ),
    }
    # A lease that claims to be live for an hour and is never renewed: a wrong clock, or a
    # record written by hand. The wait is bounded; the answer names the holder.
    stuck = FileLease(settings.root / "jobs" / "job-stuck", owner="stuck-worker", ttl_s=3600)
    stuck.acquire()
    started = time.monotonic()
    response = _run(job, options, [])
    assert response["status"] == "failed"
    assert "stuck-worker" in response["error"]
    assert time.monotonic() - started < 60
    assert EventStore.on_disk(settings.root).read("job-stuck") == []
