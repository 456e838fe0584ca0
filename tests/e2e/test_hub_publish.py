"""A publish that meets the Hub's commit limit, end to end: localpod's real SDK worker loop over
handler.py, minipipe, the fake Hub with its loopback Xet CAS. The job does not end in ERROR:
it ends INTERRUPTED saying where the LoRA is and when `POST /retry` publishes it, and the retry
publishes without training again."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from events.audit import audit
from tests.support.dataserver import DataServer
from tests.support.fakehub import FakeHub
from tests.support.localpod_jobs import (
    job_events,
    post,
    submit,
    tiny_body,
    tiny_pod,
    trained_steps,
    until,
)
from tests.support.media import shades_zip

pytestmark = pytest.mark.slow
REPO = "me/limited-lora"
TOKEN = "hf_e2eCommitLimitToken000"
COMMIT_LIMIT = {
    # The Hub's per-repo commit limit as it answered in braindecode/braindecode#947.
    "X-Error-Message": "You have exceeded the rate limit for repository commits (128 per hour). "
    "You can retry this action in about 1 hour.",
    "RateLimit": '"api";r=949;t=271',
    "RateLimit-Policy": '"fixed window";"api";q=1000;w=300',
}


@pytest.fixture
def data() -> Iterator[DataServer]:
    with DataServer() as srv:
        srv.files["/d.zip"] = shades_zip(6)
        yield srv


def test_a_publish_that_meets_the_commit_limit_is_deferred_then_published_by_a_retry(
    tmp_path: Path, data: DataServer
) -> None:
    env = {"DPS_MIRROR_COMMIT_INTERVAL_S": "3600"}  # the mirror commits at start and end only
    with FakeHub() as hub:
        hub.users[TOKEN] = "me"
        # The publish is the only Xet user (the LoRA; UPDATES are small JSON): hold its first
        # Xet token request, so the 429 goes in front of the publish's own commit POST.
        hub.hang(method="GET", path_contains="xet-write-token")
        with tiny_pod(tmp_path, env={"DPS_HUB_ENDPOINT": hub.url, **env}) as pod:
            body = tiny_body(data, tmp_path)
            body["input"]["output"] = {
                "method": "huggingface",
                "huggingface": {"token": TOKEN, "repo_id": REPO},
            }
            job_id = submit(pod, body)
            until(lambda: hub.held >= 1, 180, "the publish's upload")
            hub.fail(429, method="POST", path_contains="/commit/", times=100, headers=COMMIT_LIMIT)
            hub.release()
            first = pod.wait_for(job_id, timeout=120)
            steps = trained_steps(tmp_path, job_id)

            assert first["status"] == "FAILED", first  # what lets the user POST /retry
            error = first["error"]
            assert first["output"]["deferred"]["repo_id"] == REPO
            lora = tmp_path / "root" / "jobs" / job_id / "output"
            assert error.startswith("the LoRA is trained but not published yet: ")
            assert "128 per hour" in error
            assert str(lora) in error
            assert f"POST /retry/{job_id}" in error
            events = job_events(tmp_path, job_id)
            stopped = [e for e in events if e.type == "INTERRUPTED"]
            assert len(stopped) == 1
            assert stopped[0].data["deferred"] is True
            assert stopped[0].data["stage"] == "publish"
            assert not [e for e in events if e.type == "ERROR"]
            assert hub.count("POST", "/commit/") >= 1
            assert "adapter_model.safetensors" not in hub.files(REPO)

            # An hour later: the Hub takes commits again, and the volume's ledger, which holds
            # every job off until then, has let the hour pass (its file is the ledger's state).
            hub.faults.clear()
            for ledger in (tmp_path / "root" / "hub-commits").glob("*.json"):
                ledger.unlink()
            post(pod, f"retry/{job_id}")
            final = pod.wait_for(job_id, timeout=180)

        assert final["status"] == "COMPLETED", final
        url = final["output"]["output"]["download_url"]
        assert url == f"{hub.url}/{REPO}/resolve/main/adapter_model.safetensors?download=true"
        assert "adapter_model.safetensors" in hub.xet_paths(REPO)
    assert trained_steps(tmp_path, job_id) == steps  # training did not run again
    events = job_events(tmp_path, job_id)
    assert audit(events).ok
    resumed = [e for e in events if e.type == "RESUMED"]
    assert [e.data["from_status"] for e in resumed] == ["INTERRUPTED"]
    assert not [e for e in events if e.type == "ERROR"]
