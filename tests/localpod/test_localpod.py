"""localpod: the real runpod SDK worker loop against the local endpoint.

One endpoint (one worker) is shared by the module to keep the suite fast; tests that kill
its worker rely on the endpoint replacing it. Counters are compared as deltas for that reason.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import httpx
import pytest
import runpod
import typer
from typer.testing import CliRunner

from localpod import LocalPod
from localpod.board import IN_PROGRESS, BadRequest, JobBoard
from orchestrator.cli.submit import submit
from tests.support.localpod_client import AUTH, KEY, health, run, wait_file, wait_progress

# ---- end to end through the SDK worker ---------------------------------------------------


def test_run_shows_progress_then_completes(pod: LocalPod, http: httpx.Client) -> None:
    before = health(http)["jobs"]["completed"]
    job_id = run(http, {"steps": 6, "sleep": 0.25, "echo": "hi"})
    wait_progress(pod, job_id)
    live = http.get(f"/status/{job_id}").json()
    assert live["status"] == IN_PROGRESS
    assert live["output"]["stage"] == "training"
    assert 1 <= live["output"]["step"] <= 6
    done = pod.wait_for(job_id, timeout=20)
    assert done["status"] == "COMPLETED"
    assert done["output"] == {"steps": 6, "echo": "hi"}
    assert done["executionTime"] > 0
    assert http.post(f"/status/{job_id}").json()["output"] == done["output"]  # POST works too
    steps = [p["step"] for p in pod.events.progress[job_id]]
    assert steps == sorted(steps)
    assert steps[-1] == 6
    assert pod.events.results[job_id] == [{"output": {"steps": 6, "echo": "hi"}}]
    after = health(http)
    assert after["jobs"]["completed"] == before + 1
    assert after["workers"] == {"idle": 1, "running": 0}


def test_runsync_waits_for_the_result_or_returns_current_status(
    pod: LocalPod, http: httpx.Client
) -> None:
    answer = http.post("/runsync", json={"input": {"steps": 2, "sleep": 0.05}}).json()
    assert answer["id"].startswith("sync-")
    assert answer["status"] == "COMPLETED"
    assert answer["output"]["steps"] == 2
    short = http.post("/runsync?wait=200", json={"input": {"steps": 4, "sleep": 0.25}}).json()
    assert short["status"] in ("IN_QUEUE", IN_PROGRESS)
    assert pod.wait_for(short["id"], timeout=20)["status"] == "COMPLETED"


def test_returned_error_fails_the_job(pod: LocalPod, http: httpx.Client) -> None:
    failed_before = health(http)["jobs"]["failed"]
    job_id = run(http, {"steps": 1, "sleep": 0.01, "fail": True})
    done = pod.wait_for(job_id, timeout=20)
    assert done["status"] == "FAILED"
    assert done["error"] == "asked to fail after 1 steps"
    assert health(http)["jobs"]["failed"] == failed_before + 1


def test_cancel_queued_and_in_progress(pod: LocalPod, http: httpx.Client, tmp_path: Path) -> None:
    running = run(http, {"steps": 40, "sleep": 0.2, "dir": str(tmp_path), "tag": "a"})
    wait_progress(pod, running)
    queued = run(http, {"steps": 1, "dir": str(tmp_path), "tag": "b"})
    assert health(http)["jobs"]["inQueue"] == 1
    assert http.post(f"/cancel/{queued}").json() == {"id": queued, "status": "CANCELLED"}
    assert http.post(f"/cancel/{running}").json()["status"] == "CANCELLED"
    assert wait_file(tmp_path / "a.cancelled") == running  # the handler saw CancelledError
    time.sleep(0.3)
    assert http.get(f"/status/{running}").json()["status"] == "CANCELLED"
    assert running not in pod.events.results  # the SDK posts nothing for a stopped job
    assert not (tmp_path / "b.deliveries").exists()


def test_retry_is_only_for_failed_or_timed_out_jobs(pod: LocalPod, http: httpx.Client) -> None:
    # A timeout then /retry of the same id: test_platform_rules.py (a short default timeout).
    done = run(http, {"steps": 1, "sleep": 0.01})
    pod.wait_for(done, timeout=20)
    refused = http.post(f"/retry/{done}")
    assert refused.status_code == 400
    assert "not COMPLETED" in refused.json()["error"]


def test_sigkill_mid_job_redelivers_same_id(
    pod: LocalPod, http: httpx.Client, tmp_path: Path
) -> None:
    retried = health(http)["jobs"]["retried"]
    job_id = run(http, {"steps": 8, "sleep": 0.25, "dir": str(tmp_path), "tag": "k"})
    wait_progress(pod, job_id)
    old_pid = pod.worker_pids()
    killed = pod.kill_worker(signal.SIGKILL)
    done = pod.wait_for(job_id, timeout=40)
    assert done["status"] == "COMPLETED"
    assert (tmp_path / "k.deliveries").read_text().split() == [job_id, job_id]
    first, second = pod.events.deliveries[job_id]
    assert first == killed
    assert second != killed
    assert pod.worker_pids() != old_pid
    assert health(http)["jobs"]["retried"] == retried + 1
    with pytest.raises(ProcessLookupError):
        os.killpg(old_pid[0], 0)  # the heartbeat child went with it


def test_sigterm_drains_the_job_in_flight(pod: LocalPod, http: httpx.Client) -> None:
    job_id = run(http, {"steps": 6, "sleep": 0.2})
    wait_progress(pod, job_id)
    drained = pod.kill_worker(signal.SIGTERM)
    done = pod.wait_for(job_id, timeout=20)
    assert done["status"] == "COMPLETED"
    assert pod.events.deliveries[job_id] == [drained]  # done once, not redelivered
    deadline = time.monotonic() + 15
    while drained not in dict(pod.events.worker_exits):
        assert time.monotonic() < deadline, "the worker did not exit after its drain"
        time.sleep(0.1)
    assert dict(pod.events.worker_exits)[drained] == 0  # a clean exit, not a crash
    pod.wait_ready(timeout=60)  # and a replacement came up


def test_runpod_sdk_endpoint_client(pod: LocalPod, monkeypatch: pytest.MonkeyPatch) -> None:
    # RunPodClient reads runpod.endpoint_url_base when it is built.
    monkeypatch.setattr(runpod, "endpoint_url_base", pod.base_url)
    monkeypatch.setattr(runpod, "api_key", KEY)
    endpoint = runpod.Endpoint(pod.endpoint_id)
    job = endpoint.run({"input": {"steps": 2, "sleep": 0.05, "echo": "sdk"}})
    assert job.status() in ("IN_QUEUE", IN_PROGRESS, "COMPLETED")
    assert job.output(timeout=20) == {"steps": 2, "echo": "sdk"}
    assert job.status() == "COMPLETED"
    assert set(endpoint.health()["jobs"]) >= {"completed", "failed", "retried"}


def test_auth_bearer_bare_and_missing(pod: LocalPod) -> None:
    seed_style = httpx.post(
        f"{pod.url}/run",
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {KEY}"},
        content=json.dumps({"input": {"steps": 1, "sleep": 0.01}}),
    )
    assert seed_style.status_code == 200
    job_id = seed_style.json()["id"]
    assert httpx.get(f"{pod.url}/status/{job_id}", headers={"Authorization": KEY}).is_success
    assert httpx.get(f"{pod.url}/status/{job_id}").status_code == 401
    wrong = {"Authorization": "Bearer nope"}
    assert httpx.get(f"{pod.url}/health", headers=wrong).status_code == 401
    assert httpx.get(f"{pod.url}/status/missing", headers=AUTH).status_code == 404
    assert httpx.post(f"{pod.url}/run", headers=AUTH, json={"no": "input"}).status_code == 400
    pod.wait_for(job_id, timeout=20)


def test_submit_wait_cli(pod: LocalPod, tmp_path: Path) -> None:
    app = typer.Typer()
    app.command()(submit)
    runner = CliRunner()
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"input": {"steps": 3, "sleep": 0.2, "echo": "cli"}}))
    args = ["--base-url", pod.url, "--key", KEY, "--wait", "--interval", "0.2"]
    result = runner.invoke(app, [str(good), *args])
    assert result.exit_code == 0, result.output
    final = json.loads(result.stdout[result.stdout.index("{") :])
    assert final["status"] == "COMPLETED"
    assert final["output"] == {"steps": 3, "echo": "cli"}
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"steps": 1, "sleep": 0.01, "fail": True}))  # bare input
    result = runner.invoke(app, [str(bad), *args])
    assert result.exit_code == 1
    assert json.loads(result.stdout[result.stdout.index("{") :])["status"] == "FAILED"


# ---- the board alone (no processes) ------------------------------------------------------


def test_board_redelivers_up_to_the_limit_then_fails() -> None:
    board = JobBoard(max_redeliveries=2)
    job = board.submit({"input": {"x": 1}})
    for attempt in range(3):
        taken = board.take(f"w{attempt}", 1, hold_s=0)
        assert taken == [{"id": job.id, "input": {"x": 1}}]
        board.worker_gone(f"w{attempt}", -9)
    view = board.view(job.id)
    assert view is not None
    assert view["status"] == "FAILED"
    assert "after 2 redeliveries" in view["error"]
    assert board.retried == 2


def test_board_ignores_stale_and_late_posts() -> None:
    board = JobBoard()
    job = board.submit({"input": {}})
    board.take("old", 1, hold_s=0)
    board.worker_gone("old", -9)
    board.take("new", 1, hold_s=0)
    board.post("old", job.id, {"output": "from the dead"})  # superseded delivery
    board.post("new", job.id, {"status": IN_PROGRESS, "output": {"step": 1}})
    board.post("new", job.id, {"output": "done"})
    board.post("new", job.id, {"status": IN_PROGRESS, "output": {"step": 2}})  # late thread
    view = board.view(job.id)
    assert view is not None
    assert (view["status"], view["output"]) == ("COMPLETED", "done")
    assert [why for _, _, why in board.events.ignored] == [
        "job is delivered to new",
        "job is COMPLETED",
    ]
    with pytest.raises(BadRequest):
        board.retry(job.id)
