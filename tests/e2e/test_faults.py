"""Faults in the real parts, each through a whole `tiny` job on loopback (the worker core that
handler.py runs): the Hub failing for a while, S3 failing a part, the dataset server dropping
the connection twice, the disk filling up during training, the trainer dying of a CUDA OOM.
Each ends as documented (retried and COMPLETE, or ERROR with a failed response naming the
reason), and the event log loses nothing: it audits and its seqs run 1..n without a gap.

The failing trainer is `tests.support.fault_trainer`, started in minipipe's place.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from events.audit import audit
from events.model import Event
from events.store import EventStore
from orchestrator.settings import Settings
from orchestrator.worker import WorkerOptions, handle
from tests.support.canary import TOKEN_CANARY
from tests.support.dataserver import DataServer
from tests.support.family_loras import tensor_data
from tests.support.fault_trainer import DISK_ENV, TRAINER_ENV, userns_tmpfs_works
from tests.support.media import shades_zip
from tests.support.paths import REPO

pytestmark = pytest.mark.slow


def _use_fault_trainer(monkeypatch: pytest.MonkeyPatch, mode: str) -> None:
    """Make the training stage start this file instead of minipipe, in `mode`."""
    import stages.training.command as training  # noqa: PLC0415

    real = training.trainer_command

    def command(**kw: Any) -> Any:
        kw["cpu_module"] = "tests.support.fault_trainer"
        return real(**kw)

    monkeypatch.setattr(training, "trainer_command", command)
    monkeypatch.setenv(TRAINER_ENV, mode)
    # The trainer runs in the job's config folder: let it import this package.
    root = str(REPO)
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))
    )


# --- helpers -----------------------------------------------------------------------------------
@pytest.fixture
def data() -> Iterator[DataServer]:
    with DataServer() as srv:
        srv.files["/d.zip"] = shades_zip(4)
        yield srv


def _request(data: DataServer, output: dict[str, Any], **training: Any) -> dict[str, Any]:
    return {
        "model_type": "tiny",
        "dataset": {"type": "precaptioned", "images_url": data.url + "/d.zip"},
        "training": {"epochs": 2, "resolution": 32, **training},
        "output": output,
    }


def _local(tmp_path: Path) -> dict[str, Any]:
    return {"method": "local", "local": {"path": str(tmp_path / "outputs")}}


def _options(tmp_path: Path, **kw: Any) -> WorkerOptions:
    settings = kw.pop("settings", None) or Settings(root=tmp_path / "root", retry_wait_s=0.05)
    return WorkerOptions(settings=settings, progress_every_s=0, **kw)


def _run(job_id: str, body: dict[str, Any], options: WorkerOptions) -> dict[str, Any]:
    return asyncio.run(handle({"id": job_id, "input": body}, options, lambda _p: None))


def _log(tmp_path: Path, job_id: str) -> list[Event]:
    """The job's log, checked whole: it audits and its seqs run 1..n."""
    events = EventStore.on_disk(tmp_path / "root").read(job_id)
    assert events, "no events recorded"
    report = audit(events)
    assert report.ok, report
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    return events


def _completed(response: dict[str, Any], events: list[Event]) -> None:
    assert response["status"] == "success", response
    assert [e.type for e in events].count("COMPLETE") == 1
    assert events[-1].type == "COMPLETE"
    assert not any(e.type == "ERROR" for e in events)


def _failed(response: dict[str, Any], events: list[Event], *reason: str) -> str:
    assert response["status"] == "failed", response
    error = response["error"]
    assert isinstance(error, str)
    assert "Traceback" not in error.splitlines()[0]
    for text in reason:
        assert text in error, error
    assert events[-1].type == "ERROR"
    assert events[-1].status == "ERROR"
    assert [e.type for e in events].count("ERROR") == 1
    assert not any(e.type == "COMPLETE" for e in events)
    for text in reason:
        assert text in str(events[-1].data), events[-1].data
    return str(error)


# --- the Hub answers 429, 409 and 500 for a while ------------------------------------------------
def test_hub_errors_for_a_while_are_retried_by_mirror_and_publish(
    tmp_path: Path, data: DataServer
) -> None:
    from events.projections.base import MirrorSettings  # noqa: PLC0415
    from stages.publish.common import RetryPolicy  # noqa: PLC0415
    from stages.publish.stage import PublishOptions  # noqa: PLC0415
    from tests.support.fakehub import FakeHub  # noqa: PLC0415

    with FakeHub() as hub:
        commit = "/commit/"  # the mirror's commits and the LoRA's commit alike
        hub.fail(500, method="POST", path_contains="/repos/create", times=2)
        hub.fail(429, method="POST", path_contains=commit, times=2, headers={"Retry-After": "1"})
        hub.fail(409, method="POST", path_contains=commit, times=2)
        hub.fail(500, method="POST", path_contains=commit, times=2)
        hub.fail(503, method="POST", path_contains="/preupload/", times=2)
        options = _options(
            tmp_path,
            settings=Settings(root=tmp_path / "root", hub_endpoint=hub.url),
            publish_options=PublishOptions(
                hub_endpoint=hub.url, hf_policy=RetryPolicy(attempts=8, base_s=0.05, cap_s=0.3)
            ),
            mirror_settings=MirrorSettings(
                commit_interval_s=0.2,
                backoff_s=0.1,
                conflict_wait_s=0.05,
                rate_limit_wait_s=1.0,
                start_timeout_s=5.0,
                close_timeout_s=30.0,
            ),
            mirror_close_s=30.0,
        )
        output = {
            "method": "huggingface",
            "huggingface": {"token": TOKEN_CANARY, "repo_id": "me/f"},
        }
        response = _run("job-hub-faults", _request(data, output), options)
        events = _log(tmp_path, "job-hub-faults")
        _completed(response, events)
        assert hub.faults == []  # every injected error was served, and retried past
        files = hub.files("me/f")
        assert "adapter_model.safetensors" in files
        updates = sorted(p for p in files if p.startswith("UPDATES/"))
        assert updates[-1].endswith("_COMPLETE.json")
        mirror = response["mirror"]  # the mirror's own status is part of the response
        assert mirror["ok"] is True, mirror
        assert mirror["mirrored_seq"] == events[-1].seq
        assert mirror["commits"] >= 1
        assert TOKEN_CANARY not in str(response)


# --- S3 fails a part ----------------------------------------------------------------------------
def test_an_s3_part_that_fails_is_retried_and_the_job_completes(
    tmp_path: Path, data: DataServer, moto_url: str
) -> None:
    import httpx  # noqa: PLC0415

    from stages.publish.s3 import S3Tuning  # noqa: PLC0415
    from stages.publish.stage import PublishOptions  # noqa: PLC0415
    from tests.support.s3_proxy import FailFirstPart, s3_output  # noqa: PLC0415

    proxy = FailFirstPart(moto_url)
    try:
        # A threshold under the LoRA's size: it goes up as a multipart upload (one part).
        tuning = S3Tuning(threshold=1024, concurrency=2)
        options = _options(tmp_path, publish_options=PublishOptions(s3_tuning=tuning))
        response = _run("job-s3-faults", _request(data, s3_output(proxy.url)), options)
    finally:
        proxy.close()
    events = _log(tmp_path, "job-s3-faults")
    _completed(response, events)
    assert proxy.failed == 1  # the first UploadPart got a 500 ...
    assert proxy.parts >= 2  # ... and was sent again
    url = response["output"]["download_url"].replace(proxy.url, moto_url)
    lora = next(
        (tmp_path / "root" / "jobs" / "job-s3-faults" / "output").rglob("epoch2/*.safetensors")
    )
    got = httpx.get(url, timeout=30)
    assert got.status_code == 200
    # the trained LoRA's tensors, byte for byte (the publish adds metadata to its header)
    assert tensor_data(got.content) == tensor_data(lora.read_bytes())


# --- the dataset server drops the connection twice -----------------------------------------------
def test_a_download_dropped_twice_resumes_and_the_job_completes(
    tmp_path: Path, data: DataServer
) -> None:
    size = len(data.files["/d.zip"])
    data.drop_after["/d.zip"] = [size // 3, size // 3]
    response = _run("job-drops", _request(data, _local(tmp_path)), _options(tmp_path))
    events = _log(tmp_path, "job-drops")
    _completed(response, events)
    ranges = data.gets("/d.zip")
    assert len(ranges) == 3, ranges
    first_cut, second_cut = size // 3, 2 * (size // 3)
    assert ranges == [None, f"bytes={first_cut}-", f"bytes={second_cut}-"]  # resumed, not restarted
    report = next(e for e in events if e.type == "DATASET_REPORT")
    assert report.data["images"] == 4


# --- the disk fills up during training ------------------------------------------------------------
@pytest.mark.parametrize("disk", ["tmpfs", "rlimit"])
def test_a_full_disk_during_training_fails_the_job_with_the_reason(
    tmp_path: Path, data: DataServer, monkeypatch: pytest.MonkeyPatch, disk: str
) -> None:
    if disk == "tmpfs" and not userns_tmpfs_works():
        pytest.skip("no user+mount namespace here to mount a small tmpfs (rlimit case runs)")
    monkeypatch.setenv(DISK_ENV, disk)
    _use_fault_trainer(monkeypatch, "disk_full:16384")
    response = _run(
        "job-disk",
        _request(data, _local(tmp_path), checkpoint_every_n_epochs=1),
        _options(tmp_path),
    )
    events = _log(tmp_path, "job-disk")
    error = _failed(response, events, "training failed (disk_full)")
    assert "disk" in error.lower()
    assert any(e.type == "TRAINING" for e in events)
    assert not (tmp_path / "outputs" / "job-disk").exists()  # nothing half-published


# --- the trainer prints a CUDA OOM and exits ------------------------------------------------------
def test_a_cuda_oom_fails_the_job_with_advice(
    tmp_path: Path, data: DataServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    _use_fault_trainer(monkeypatch, "oom")
    response = _run("job-oom", _request(data, _local(tmp_path)), _options(tmp_path))
    events = _log(tmp_path, "job-oom")
    error = _failed(response, events, "training failed (gpu_oom)", "CUDA out of memory")
    assert "lower batch_size" in error
    assert events[-2].type != "ERROR"
    assert not (tmp_path / "outputs" / "job-oom").exists()
