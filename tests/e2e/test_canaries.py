"""Secret canaries: a whole tiny job with Hub output and a canary in every secret field; no
canary may show up in any file under the job root, any Hub file or commit, the response, the
progress updates or any log line.

The same with the real SDK around the handler, at the SDK's *default* log level (no
RUNPOD_LOG_LEVEL anywhere: at DEBUG the SDK prints job inputs, handler outputs and progress
payloads), with S3 output, whose presigned URL names the access key id: as a worker through
localpod, and in RunPod's local test mode (`python handler.py --test_input ...`)."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from localpod import LocalPod
from orchestrator.progress import ProgressReporter
from orchestrator.settings import Settings
from orchestrator.worker import WorkerOptions, handle
from stages.publish.stage import PublishOptions
from tests.support.canary import (
    CANARIES,
    SDK_LEVEL_VARS,
    scan,
    volume_hits_besides_the_trainer_toml,
    with_canaries,
    without_presigned_urls,
)
from tests.support.dataserver import DataServer
from tests.support.fakehub import FakeHub
from tests.support.local_test_mode import HANDLER, RESULT, local_env, run_local
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


# --- the real SDK around the handler, at its default log level, with S3 output ----------------

ACCESS = "output.s3.access_key"
# Libraries that log a line per request or state change at INFO: quiet in a worker log.
CHATTY = ("transitions", "httpx", "httpcore", "huggingface_hub", "filelock", "botocore")
# The one line the SDK prints that is not JSON in worker mode (runpod/serverless/__init__.py).
SDK_BANNER = re.compile(r"--- Starting Serverless Worker \|  Version \S+ ---")


def _s3_body(data: DataServer, moto_url: str) -> dict[str, Any]:
    return with_canaries(
        {
            "model_type": "tiny",
            "dataset": {"type": "precaptioned", "images_url": data.url + "/d.zip"},
            "training": {"epochs": 2, "resolution": 32},
            "output": {
                "method": "s3",
                "s3": {"endpoint_url": moto_url, "bucket": "loras", "region": "us-east-1"},
            },
        }
    )


def _presigned_with_the_access_key(response: Any) -> bool:
    """The S3 answer really carries the value a DEBUG log line would leak."""
    text = json.dumps(response)
    return f"X-Amz-Credential={CANARIES[ACCESS]}" in text


@dataclass(frozen=True)
class WorkerRun:
    final: dict[str, Any]
    progress: list[Any]
    logs: list[Path]
    root: Path
    job_id: str


@pytest.fixture(scope="module")
def s3_worker_run(tmp_path_factory: pytest.TempPathFactory, moto_url: str) -> WorkerRun:
    """One tiny S3 job through localpod, the worker at the SDK's default log level."""
    tmp = tmp_path_factory.mktemp("s3-worker")
    with pytest.MonkeyPatch.context() as mp, DataServer() as data:
        for name in SDK_LEVEL_VARS:  # localpod passes the test's environment on
            mp.delenv(name, raising=False)
        data.files["/d.zip"] = shades_zip()
        pod = LocalPod(
            HANDLER,
            env={"DPS_ROOT": str(tmp / "root"), "DPS_LEASE_TTL_S": "3"},
            log_dir=tmp / "logs",
            ping_timeout_s=None,
        )
        with pod:
            answer = httpx.post(
                f"{pod.url}/run",
                json={"input": _s3_body(data, moto_url)},
                headers={"Authorization": "k"},
            )
            job_id = str(answer.json()["id"])
            final = pod.wait_for(job_id, timeout=180)
            progress = list(pod.events.progress.get(job_id, []))
    return WorkerRun(final, progress, sorted((tmp / "logs").iterdir()), tmp / "root", job_id)


@pytest.mark.slow
def test_a_worker_at_the_sdks_default_level_leaks_no_canary(s3_worker_run: WorkerRun) -> None:
    run = s3_worker_run
    assert run.final["status"] == "COMPLETED", run.final
    assert _presigned_with_the_access_key(run.final["output"])
    text = "".join(p.read_text(errors="replace") for p in run.logs)
    assert '"message": "Started."' in text  # the SDK's own lines are in the log
    assert "Handler output" not in text  # ... but not its DEBUG ones
    assert scan(run.logs) == []
    assert scan([], [without_presigned_urls(run.final), *run.progress]) == []
    assert volume_hits_besides_the_trainer_toml(run.root, run.job_id) == []


@pytest.mark.slow
def test_every_line_of_a_worker_log_is_json_but_the_sdks_banner(s3_worker_run: WorkerRun) -> None:
    """One format: structlog's JSON (ours, and the standard library's records through it) and
    the SDK's JSON (`{"requestId", "message", "level"}`, RUNPOD_ENDPOINT_ID being set); only
    the SDK's start banner is text. The chatty libraries (transitions, httpx, ...) are quiet."""
    assert s3_worker_run.final["status"] == "COMPLETED"
    ours: list[dict[str, Any]] = []
    sdk: list[dict[str, Any]] = []
    text: list[str] = []
    for path in s3_worker_run.logs:
        for line in path.read_text(errors="replace").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                text.append(line)
                continue
            assert isinstance(record, dict), line
            (sdk if set(record) == {"requestId", "message", "level"} else ours).append(record)
    assert [t for t in text if not SDK_BANNER.fullmatch(t)] == []
    assert len(text) == len(s3_worker_run.logs)  # one banner per worker
    assert ours
    assert sdk
    assert all({"event", "level", "timestamp"} <= set(r) for r in ours), ours
    chatty = [r for r in ours if str(r.get("logger", "")).split(".")[0] in CHATTY]
    assert chatty == []


@pytest.mark.slow
def test_local_test_mode_at_the_sdks_default_level_leaks_no_canary(
    tmp_path: Path, moto_url: str
) -> None:
    """`python handler.py --test_input ...` with no RUNPOD_* set: at DEBUG the SDK would print
    `Retrieved local job: {...}`, every secret of the input. The SDK prints the job's result at
    INFO (`Job result: ...`): the answer itself, whose S3 presigned URL names the access key
    id; nothing else may hold a canary."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    with DataServer() as data:
        data.files["/d.zip"] = shades_zip()
        run = run_local(cwd, local_env(tmp_path / "root"), {"input": _s3_body(data, moto_url)})
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    result = run.result()
    assert result["output"]["status"] == "success", result
    assert _presigned_with_the_access_key(result)
    others = [line for line in run.lines if not line.startswith(RESULT)]
    assert scan([], others) == []
    assert scan([], [without_presigned_urls(result)]) == []
    job_id = result["output"]["job_id"]
    assert volume_hits_besides_the_trainer_toml(tmp_path / "root", job_id) == []


def test_the_local_test_scan_sees_what_the_sdk_prints_at_debug(tmp_path: Path) -> None:
    """The leak the test above guards against is real: with RUNPOD_LOG_LEVEL=DEBUG the SDK
    prints the input with every secret in it, even of a job refused at once."""
    body = with_canaries(
        {
            "model_type": "not-a-model",
            "dataset": {"type": "precaptioned", "images_url": "https://example.com/d.zip"},
        }
    )
    env = local_env(tmp_path / "root", RUNPOD_LOG_LEVEL="DEBUG")
    run = run_local(tmp_path, env, {"input": body})
    assert run.returncode == 1  # the SDK exits 1 on a failed job
    found = {hit.rsplit(": ", 1)[1] for hit in scan([], run.lines)}
    assert found == set(CANARIES)
    warned = [r for r in run.logs() if r["event"].startswith("the RunPod SDK logs at DEBUG")]
    assert [r["level"] for r in warned] == ["warning"]  # the handler says so, once
