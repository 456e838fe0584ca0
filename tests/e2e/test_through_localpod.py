"""End to end through localpod: the real SDK worker loop running handler.py, minipipe, and
loopback servers for the dataset and the Hub. What a user of the endpoint would see."""

from __future__ import annotations

import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from events.audit import audit
from localpod import LocalPod
from tests.support.canary import TOKEN_CANARY, scan, with_canaries
from tests.support.dataserver import DataServer
from tests.support.fakehub import FakeHub
from tests.support.localpod_jobs import (
    has_event,
    job_events,
    submit,
    tiny_body,
    tiny_pod,
    until,
)
from tests.support.media import shades_zip
from tests.support.publish_job import SEED_RESPONSE_KEYS

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def data() -> Iterator[DataServer]:
    with DataServer() as srv:
        srv.files["/d.zip"] = shades_zip(6)
        yield srv


def _pod(tmp_path: Path, *, workers: int = 1, step_sleep: float = 0.0, **env: str) -> LocalPod:
    return tiny_pod(tmp_path, workers=workers, step_sleep=step_sleep, env=env)


def _step_numbers(log: str) -> list[int]:
    return [int(line.split()[1]) for line in log.splitlines() if line.startswith("steps: ")]


def test_happy_path_with_local_output(tmp_path: Path, data: DataServer) -> None:
    with _pod(tmp_path) as pod:
        job_id = submit(pod, tiny_body(data, tmp_path))
        final = pod.wait_for(job_id, timeout=180)
        progress = pod.events.progress.get(job_id, [])
    assert final["status"] == "COMPLETED", final
    output = final["output"]
    assert set(output) >= SEED_RESPONSE_KEYS
    assert output["status"] == "success"
    lora = Path(output["output"]["safetensors_url"].removeprefix("file://"))
    assert lora.is_file()
    assert any(p.get("status") == "TRAINING" for p in progress if isinstance(p, dict))
    events = job_events(tmp_path, job_id)
    assert audit(events).ok
    assert (tmp_path / "root" / "jobs" / job_id / "UPDATES").is_dir()


def test_happy_path_with_hub_output(tmp_path: Path, data: DataServer) -> None:
    with FakeHub() as hub, _pod(tmp_path, DPS_HUB_ENDPOINT=hub.url) as pod:
        body = tiny_body(data, tmp_path)
        body["input"]["output"] = {
            "method": "huggingface",
            "huggingface": {"token": TOKEN_CANARY, "repo_id": "me/e2e-lora"},
        }
        job_id = submit(pod, body)
        final = pod.wait_for(job_id, timeout=180)
        assert final["status"] == "COMPLETED", final
        url = final["output"]["output"]["download_url"]
        assert url == f"{hub.url}/me/e2e-lora/resolve/main/adapter_model.safetensors?download=true"
        files = hub.files("me/e2e-lora")
        updates = sorted(p for p in files if p.startswith("UPDATES/"))
        assert updates[0].endswith("_INITIALIZED.json")
        assert updates[-1].endswith("_COMPLETE.json")
        assert all(TOKEN_CANARY.encode() not in content for content in files.values())
    assert TOKEN_CANARY not in str(final)
    for log in (tmp_path / "logs").iterdir():
        assert TOKEN_CANARY not in log.read_text(errors="replace")


def test_a_killed_worker_is_replaced_and_the_job_resumes_from_its_checkpoint(
    tmp_path: Path, data: DataServer
) -> None:
    with _pod(tmp_path, step_sleep=0.05) as pod:
        # Every checkpoint kept (pruning has tests of its own): which ones were whole is
        # read from the folders at the end.
        body = tiny_body(data, tmp_path, epochs=6, checkpoint_every_n_epochs=1, keep_checkpoints=10)
        job_id = submit(pod, body)
        until(has_event(tmp_path, job_id, "CHECKPOINT"), 120, "the first checkpoint")
        time.sleep(0.3)  # a few steps past it
        pod.kill_worker(signal.SIGKILL)
        final = pod.wait_for(job_id, timeout=240)
        deliveries = pod.events.deliveries[job_id]
    assert final["status"] == "COMPLETED", final
    assert len(deliveries) == 2
    events = job_events(tmp_path, job_id)
    assert audit(events).ok
    resumed = [e for e in events if e.type == "RESUMED"]
    assert len(resumed) == 1
    assert resumed[0].attempt == 2
    assert resumed[0].data["from_status"] == "TRAINING"
    recorded = max(e.data["step"] for e in events if e.type == "CHECKPOINT" and e.attempt == 1)
    log = (tmp_path / "root" / "jobs" / job_id / "logs" / "train.log").read_text()
    before, after = log.split("Resuming training from checkpoint", 1)
    first, second = _step_numbers(before), _step_numbers(after)
    # The kill can land between a checkpoint's files and its event (or its log line): the
    # resume then uses that newer checkpoint on disk. Never an older one than the log proves,
    # never one that was not completely saved (a checkpoint is renamed into place when whole).
    output = tmp_path / "root" / "jobs" / job_id / "output"
    saved = {int(p.name.removeprefix("global_step")) for p in output.glob("*/global_step*")}
    resumed_from = second[0] - 1
    assert resumed_from >= recorded
    assert resumed_from in saved
    redone = set(first) & set(second)
    # The trainer may outlive its worker by a moment (its launcher kills the tree on the
    # worker's death) and checkpoint a step whose log line the dead worker never copied.
    assert len(redone) <= max(0, max(first) - resumed_from)
    assert second[-1] == 36  # 6 images x 6 epochs
    assert [e.type for e in events].count("COMPLETE") == 1


def test_sigterm_checkpoints_and_a_retry_resumes(tmp_path: Path, data: DataServer) -> None:
    with _pod(tmp_path, step_sleep=0.05) as pod:
        job_id = submit(pod, tiny_body(data, tmp_path, epochs=6))
        until(has_event(tmp_path, job_id, "EPOCH_SAVED"), 120, "the first epoch save")
        pod.kill_worker(signal.SIGTERM)
        stopped = pod.wait_for(job_id, timeout=120)
        assert stopped["status"] == "FAILED"
        assert f"POST /retry/{job_id} resumes it" in stopped["error"]
        # It names the checkpoint on the volume, not only the last step the log showed.
        assert re.search(r"a retry resumes from checkpoint global_step\d+", stopped["error"])
        events = job_events(tmp_path, job_id)
        assert events[-1].status == "INTERRUPTED"
        assert any(e.type == "CHECKPOINT" for e in events)
        httpx.post(f"{pod.url}/retry/{job_id}", headers={"Authorization": "k"}).raise_for_status()
        final = pod.wait_for(job_id, timeout=240)
    assert final["status"] == "COMPLETED", final
    events = job_events(tmp_path, job_id)
    assert audit(events).ok
    assert next(e for e in events if e.type == "RESUMED").data["from_status"] == "INTERRUPTED"


def test_cancel_publishes_the_latest_lora_and_stops_the_trainer(
    tmp_path: Path, data: DataServer
) -> None:
    with _pod(tmp_path, step_sleep=0.05) as pod:
        job_id = submit(pod, tiny_body(data, tmp_path, epochs=8))
        until(has_event(tmp_path, job_id, "EPOCH_SAVED"), 120, "the first epoch save")
        httpx.post(f"{pod.url}/cancel/{job_id}", headers={"Authorization": "k"}).raise_for_status()
        assert pod.wait_for(job_id, timeout=60)["status"] == "CANCELLED"
        until(has_event(tmp_path, job_id, "CANCELLED"), 120, "CANCELLED in the log")
    events = job_events(tmp_path, job_id)
    assert events[-1].status == "CANCELLED"
    assert events[-1].data["published"]["latest_epoch"].startswith("epoch")
    assert (tmp_path / "outputs" / job_id / "adapter_model.safetensors").is_file()
    assert audit(events).ok
    config = str(tmp_path / "root" / "jobs" / job_id / "config")
    assert not [p for p in Path("/proc").iterdir() if p.name.isdigit() and _cmd(p, config)]


def _cmd(proc: Path, text: str) -> bool:
    try:
        return text in (proc / "cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False


def test_a_complete_job_delivered_again_answers_from_its_log(
    tmp_path: Path, data: DataServer
) -> None:
    with _pod(tmp_path) as pod:
        job_id = submit(pod, tiny_body(data, tmp_path))
        first = pod.wait_for(job_id, timeout=180)
        count = len(job_events(tmp_path, job_id))
        pod.redeliver(job_id)
        again = pod.wait_for(job_id, timeout=60)
    assert again["status"] == "COMPLETED"
    assert again["output"]["output"] == first["output"]["output"]
    assert len(job_events(tmp_path, job_id)) == count  # nothing trained, nothing recorded


def test_two_jobs_at_once_share_nothing(tmp_path: Path, data: DataServer) -> None:
    with _pod(tmp_path, workers=2) as pod:
        jobs = [submit(pod, tiny_body(data, tmp_path)) for _ in range(2)]
        finals = [pod.wait_for(j, timeout=240) for j in jobs]
    assert [f["status"] for f in finals] == ["COMPLETED", "COMPLETED"]
    loras = {f["output"]["output"]["safetensors_url"] for f in finals}
    assert len(loras) == 2
    for job_id in jobs:
        assert audit(job_events(tmp_path, job_id)).ok


def test_a_bad_request_fails_fast_and_downloads_nothing(tmp_path: Path, data: DataServer) -> None:
    body = {"input": {"model_type": "tiny", "dataset": {"type": "precaptioned"}}}
    with _pod(tmp_path) as pod:
        pod.wait_ready(60)
        before = len(data.requests)
        job_id = submit(pod, body)
        final = pod.wait_for(job_id, timeout=30)
    assert final["status"] == "FAILED"
    assert "dataset.images_url" in final["error"]
    assert len(data.requests) == before
    assert not (tmp_path / "root" / "jobs").exists()


def test_no_canary_leaks_with_the_worker_at_the_sdks_default_log_level(
    tmp_path: Path, data: DataServer
) -> None:
    """The runpod SDK logs at DEBUG unless told otherwise (RUNPOD_LOG_LEVEL, then
    RUNPOD_DEBUG_LEVEL, default DEBUG), and at DEBUG it prints every progress update it sends
    and every URL it calls: a canary in every secret field must show in none of it."""
    with (
        FakeHub() as hub,
        _pod(tmp_path, DPS_HUB_ENDPOINT=hub.url, RUNPOD_LOG_LEVEL="DEBUG") as pod,
    ):
        body = tiny_body(data, tmp_path)
        body["input"]["output"] = {"method": "huggingface", "huggingface": {"repo_id": "me/c"}}
        body["input"] = with_canaries(body["input"])
        job_id = submit(pod, body)
        final = pod.wait_for(job_id, timeout=180)
        progress = pod.events.progress.get(job_id, [])
        hub_texts: list[Any] = []
        for _kind, repo_id in list(hub.repos):
            hub_texts += [*hub.files(repo_id).values(), hub.commits(repo_id)]
    assert final["status"] == "COMPLETED", final
    logs = "".join(p.read_text(errors="replace") for p in (tmp_path / "logs").iterdir())
    assert "Progress Update" in logs  # the SDK's chatty DEBUG level was on
    assert scan([tmp_path / "logs"], [final, *progress, *hub_texts]) == []
    # The one documented exception (see tests/e2e/test_canaries.py): the trainer's own TOML
    # carries the passthrough wandb key on the job's volume, and nothing else does.
    job = tmp_path / "root" / "jobs" / job_id
    hits = scan([tmp_path / "root"])
    assert all(h.endswith(": training.monitoring.wandb_api_key") for h in hits), hits
    assert all(Path(h.rsplit(": ", 1)[0]).suffix == ".toml" for h in hits), hits
    assert all(Path(h.rsplit(": ", 1)[0]).is_relative_to(job) for h in hits), hits
