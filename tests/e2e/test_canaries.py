"""Secret canaries: a whole tiny job with Hub output and a canary in every secret field; no
canary may show up in any file under the job root, any Hub file or commit, the response, the
progress updates or any log line."""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from orchestrator.progress import ProgressReporter
from orchestrator.settings import Settings
from orchestrator.worker import WorkerOptions, handle
from stages.publish.stage import PublishOptions
from tests.support.canary import CANARIES, scan, with_canaries
from tests.support.dataserver import DataServer
from tests.support.fakehub import FakeHub
from tests.support.media import shades_zip

WANDB = "training.monitoring.wandb_api_key"


@pytest.fixture
def no_quiet_gap(monkeypatch: pytest.MonkeyPatch) -> None:
    """The reporter waits 2 s after its last update so RunPod's fire-and-forget update cannot
    land after the result; nothing here reads updates that late."""
    original = ProgressReporter.quiet
    monkeypatch.setattr(ProgressReporter, "quiet", lambda self, gap_s=2.0: original(self, 0.0))


def test_scan_finds_canaries_in_files_texts_and_records(tmp_path: Path) -> None:
    value = CANARIES["output.s3.secret_key"]
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "deep.log").write_text(f"x={value}\n")
    (tmp_path / "clean.txt").write_text("nothing to see")
    record = logging.LogRecord("t", logging.INFO, __file__, 1, "token %s", (value,), None)
    encoded = base64.b64encode(b"Authorization: Basic " + value.encode()).decode()
    hits = scan(
        [tmp_path],
        ["clean", {"nested": [{"k": value}]}, record, encoded, b"\x00" + value.encode()],
    )
    assert hits == [
        f"{tmp_path / 'a' / 'b' / 'deep.log'}: output.s3.secret_key",
        "text[1] (dict): output.s3.secret_key",
        "text[2] (LogRecord): output.s3.secret_key",
        "text[3] (str): output.s3.secret_key",
        "text[4] (bytes): output.s3.secret_key",
    ]
    assert scan([tmp_path / "clean.txt"], ["***", {"token": "***"}]) == []


def test_with_canaries_fills_every_secret_field() -> None:
    body = with_canaries({"model_type": "tiny", "dataset": {"images_url": "http://h/d.zip?a=b"}})
    assert body["api_keys"] == {
        "huggingface_token": CANARIES["api_keys.huggingface_token"],
        "gemini_api_key": CANARIES["api_keys.gemini_api_key"],
    }
    assert body["output"]["huggingface"]["token"] == CANARIES["output.huggingface.token"]
    assert body["output"]["s3"]["access_key"] == CANARIES["output.s3.access_key"]
    assert body["output"]["s3"]["secret_key"] == CANARIES["output.s3.secret_key"]
    assert body["training"]["monitoring"]["wandb_api_key"] == CANARIES[WANDB]
    assert body["dataset"]["images_url"].endswith(CANARIES["dataset.images_url?query"])
    assert len(set(CANARIES.values())) == len(CANARIES)


@pytest.fixture
def servers() -> Iterator[tuple[DataServer, FakeHub]]:
    with DataServer() as data, FakeHub() as hub:
        data.files["/d.zip"] = shades_zip()
        yield data, hub


@pytest.mark.slow
@pytest.mark.usefixtures("no_quiet_gap")
def test_a_full_hub_job_leaks_no_canary(
    tmp_path: Path,
    servers: tuple[DataServer, FakeHub],
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    data, hub = servers
    caplog.set_level(logging.DEBUG)
    root = tmp_path / "root"
    options = WorkerOptions(
        settings=Settings(root=root, hub_endpoint=hub.url),
        publish_options=PublishOptions(hub_endpoint=hub.url),
        progress_every_s=0,
    )
    body = with_canaries(
        {
            "model_type": "tiny",
            "dataset": {
                "type": "precaptioned",
                "images_url": data.url + "/d.zip",
                "trigger_word": "sqr",
            },
            "training": {"epochs": 2, "resolution": 32},
            # The output token is the canary: the fake Hub accepts any token as "fake-user".
            "output": {"method": "huggingface", "huggingface": {"repo_id": "me/canary-lora"}},
        }
    )
    sent: list[dict[str, Any]] = []
    response = asyncio.run(handle({"id": "job-canary", "input": body}, options, sent.append))
    assert response["status"] == "success", response
    assert response["mirror"]["ok"] is True
    hub_files = hub.files("me/canary-lora")
    assert "adapter_model.safetensors" in hub_files
    assert any(p.startswith("UPDATES/") for p in hub_files)
    captured = capsys.readouterr()
    log_lines = [*caplog.records, captured.out, captured.err]
    assert log_lines, "the job logged nothing: the log scan would prove nothing"

    file_hits = scan([root])
    # The one documented exception: diffusion-pipe reads its wandb key from the TOML it is given,
    # so the trainer's config (and the copies the trainer keeps next to its outputs) hold the
    # passthrough credential on the job's own volume. Nothing else may, and the published copy
    # on the Hub must not (see the Hub scan below).
    job = root / "jobs" / "job-canary"
    trainer_configs = [
        h
        for h in file_hits
        if h.endswith(f": {WANDB}")
        and Path(h.rsplit(": ", 1)[0]).suffix == ".toml"
        and Path(h.rsplit(": ", 1)[0]).is_relative_to(job)
    ]
    assert [h for h in file_hits if h not in trainer_configs] == []
    assert (job / "config" / "tiny.toml").read_text().count(CANARIES[WANDB]) == 1

    hub_texts: list[Any] = []
    for _kind, repo_id in list(hub.repos):
        hub_texts += [*hub.files(repo_id).values(), hub.commits(repo_id)]
    assert scan([], hub_texts) == []
    assert scan([], [response, *sent]) == []
    assert scan([], log_lines) == []
