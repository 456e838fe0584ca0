"""`output.method: auto`: Hugging Face, then litterbox → transfer.sh → file.io, against loopback
fakes of each service's upload API, through the real httpx client."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from stages.errors import HostError, StageFailed
from stages.publish.common import RetryPolicy
from stages.publish.fallback import HostUrls, Litterbox
from stages.publish.stage import PublishOptions, publish
from tests.support.fakehub import FakeHub
from tests.support.fakeuploads import FakeUploads
from tests.support.publish_job import CANARY, assert_no_canary, is_published_lora, make_job

FAST = RetryPolicy(attempts=2, base_s=0.01, cap_s=0.02)


@pytest.fixture
def hosts() -> Iterator[FakeUploads]:
    with FakeUploads() as fake:
        yield fake


def options(hosts: FakeUploads, hub_url: str = "http://127.0.0.1:9") -> PublishOptions:
    urls = HostUrls(hosts.litterbox_url, hosts.transfer_url, hosts.fileio_url)
    return PublishOptions(hub_endpoint=hub_url, hosts=urls, hf_policy=FAST, sleep=lambda s: None)


def test_litterbox_first(hosts: FakeUploads, tmp_path: Path) -> None:
    inputs = make_job(tmp_path, {"method": "auto"})
    result = publish(inputs, options(hosts))
    (upload,) = hosts.uploads
    assert upload.service == "litterbox"
    assert upload.fields == {"reqtype": "fileupload", "time": "72h"}
    assert upload.name == "adapter_model.safetensors"
    assert is_published_lora(upload.data, 2)
    out = result["output"]
    assert out["download_method"] == "litterbox"
    assert out["expires_in_days"] == 3
    assert (
        out["download_url"]
        == out["safetensors_url"]
        == "https://litterbox.example/1/adapter_model.safetensors"
    )
    assert result["volume_path"] == str(inputs.job_dir)


def test_falls_through_to_transfer_sh(hosts: FakeUploads, tmp_path: Path) -> None:
    hosts.fail("litterbox", 503)
    inputs = make_job(tmp_path, {"method": "auto"})
    result = publish(inputs, options(hosts))
    assert hosts.seen("litterbox") == 1
    (upload,) = hosts.uploads
    assert upload.service == "transfer"
    assert is_published_lora(upload.data, 2)
    assert upload.headers["content-length"] == str(len(upload.data))  # not chunked
    assert result["output"]["download_method"] == "transfer.sh"
    assert result["output"]["expires_in_days"] == 14
    assert [f["method"] for f in result["details"]["failed"]] == ["litterbox"]
    assert "HTTP 503" in result["details"]["failed"][0]["error"]


def test_falls_through_to_file_io(hosts: FakeUploads, tmp_path: Path) -> None:
    hosts.fail("litterbox", 500)
    hosts.fail("transfer", 502)
    result = publish(make_job(tmp_path, {"method": "auto"}), options(hosts))
    (upload,) = hosts.uploads
    assert upload.service == "fileio"
    assert result["output"]["download_method"] == "file.io"
    assert result["output"]["download_url"] == "https://fileio.example/1/adapter_model.safetensors"


def test_everything_fails_lists_reasons(hosts: FakeUploads, tmp_path: Path) -> None:
    for service in ("litterbox", "transfer", "fileio"):
        hosts.fail(service, 500)
    inputs = make_job(tmp_path, {"method": "auto"})
    with pytest.raises(StageFailed) as err:
        publish(inputs, options(hosts))
    message = str(err.value)
    for name in ("litterbox", "transfer.sh", "file.io"):
        assert f"{name}: HTTP 500" in message
    assert str(inputs.lora_path) in message  # where the LoRA still is


def test_size_limit_checked_before_upload(hosts: FakeUploads, tmp_path: Path) -> None:
    inputs = make_job(tmp_path, {"method": "auto"})
    small = Litterbox("litterbox", hosts.litterbox_url, max_bytes=100, expires_in_days=3, note="")
    with httpx.Client() as client, pytest.raises(HostError, match="limit"):
        small.upload(client, inputs.lora_path)
    assert hosts.seen("litterbox") == 0


def test_hugging_face_first_when_configured(hosts: FakeUploads, tmp_path: Path) -> None:
    output = {"method": "auto", "huggingface": {"token": CANARY["hf_output"], "repo_id": "a/b"}}
    with FakeHub() as hub:
        result = publish(make_job(tmp_path, output), options(hosts, hub.url))
        assert "adapter_model.safetensors" in hub.files("a/b")
    assert result["output"]["download_method"] == "huggingface"
    assert hosts.uploads == []


def test_hugging_face_failure_falls_back_without_leaking(
    hosts: FakeUploads,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.INFO)
    output = {"method": "auto", "huggingface": {"token": CANARY["hf_output"], "repo_id": "a/b"}}
    with FakeHub() as hub:
        hub.fail(403, method="POST", path_contains="/commit/", times=5)
        result = publish(make_job(tmp_path, output), options(hosts, hub.url))
    assert result["output"]["download_method"] == "litterbox"
    assert result["details"]["failed"][0]["method"] == "huggingface"
    assert "write access" in result["details"]["failed"][0]["error"]
    out = capsys.readouterr()
    uploaded = b"".join(u.data for u in hosts.uploads)
    assert_no_canary(json.dumps(result), caplog.text, out.out, out.err, uploaded)
