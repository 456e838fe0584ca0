"""localpod's guards: who may call which route, hostile bodies, and stopping with nothing left
behind (a worker secret, 400s instead of tracebacks, SIGTERM/SIGINT reaching every worker)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from localpod import LocalPod
from tests.support.localpod_client import AUTH, HANDLER, KEY, run, wait_progress
from tests.support.paths import REPO
from tests.support.processes import marked_processes


def worker_env_key(pod: LocalPod) -> str:
    """The key a worker was started with, read from its environment as the SDK reads it."""
    pid = pod.worker_pids()[0]
    for entry in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
        name, _, value = entry.partition(b"=")
        if name == b"RUNPOD_AI_API_KEY":
            return value.decode()
    raise AssertionError("the worker has no RUNPOD_AI_API_KEY")


def test_client_keys_are_refused_on_worker_routes(pod: LocalPod, http: httpx.Client) -> None:
    for path in ("/job-take/intruder", "/job-take-batch/intruder?batch_size=4"):
        assert http.get(path).status_code == 401  # queued inputs stay private
    assert http.get("/job-stop/intruder").status_code == 401
    assert http.get("/ping/intruder").status_code == 401
    job_id = run(http, {"steps": 6, "sleep": 0.2, "echo": "real"})
    wait_progress(pod, job_id)
    worker = http.get(f"/status/{job_id}").json()["workerId"]  # clients see it, so forging is easy
    forged = {"output": {"forged": True}}
    assert http.post(f"/job-done/{worker}/{job_id}", json=forged).status_code == 401
    bare = {"Authorization": KEY}  # the SDK's own style, bare, is refused as well
    assert (
        httpx.post(f"{pod.url}/job-done/{worker}/{job_id}", headers=bare, json=forged).status_code
        == 401
    )
    assert http.post(f"/job-stream/{worker}/{job_id}", json=forged).status_code == 401
    done = pod.wait_for(job_id, timeout=20)
    assert done["status"] == "COMPLETED"
    assert done["output"] == {"steps": 6, "echo": "real"}
    assert pod.events.results[job_id] == [{"output": {"steps": 6, "echo": "real"}}]


def test_any_key_mode_still_refuses_worker_routes(tmp_path: Path) -> None:
    with LocalPod(HANDLER, workers=0, log_dir=tmp_path) as local:
        anyone = {"Authorization": "Bearer whatever"}
        assert httpx.get(f"{local.url}/health", headers=anyone).status_code == 200
        assert httpx.get(f"{local.url}/job-take/x", headers=anyone).status_code == 401
        assert (
            httpx.get(f"{local.url}/ping/x", headers={"Authorization": "whatever"}).status_code
            == 401
        )


def test_worker_secret_is_refused_on_client_routes(pod: LocalPod) -> None:
    secret = worker_env_key(pod)
    assert secret != KEY
    worker = pod.worker_ids()[0]  # a ping from a real worker id adds no seat to /health
    assert (
        httpx.get(f"{pod.url}/ping/{worker}", headers={"Authorization": secret}).status_code == 200
    )
    for header in (secret, f"Bearer {secret}"):
        auth = {"Authorization": header}
        assert httpx.get(f"{pod.url}/health", headers=auth).status_code == 401
        assert httpx.post(f"{pod.url}/run", headers=auth, json={"input": {}}).status_code == 401
        assert httpx.get(f"{pod.url}/status/any", headers=auth).status_code == 401


def test_workers_ignore_the_developers_runpod_credentials(tmp_path: Path) -> None:
    # The SDK's worker loop sends the key of ~/.runpod/config.toml when there is one, before
    # RUNPOD_AI_API_KEY; a developer's shell may export the latter too.
    home = tmp_path / "home"
    (home / ".runpod").mkdir(parents=True)
    (home / ".runpod" / "config.toml").write_text('[default]\napi_key = "developer-key"\n')
    env = {"HOME": str(home), "RUNPOD_AI_API_KEY": "developer-key"}
    local = LocalPod(
        HANDLER, api_key=KEY, cwd=REPO, env=env, log_dir=tmp_path / "logs", stop_grace_s=5
    )
    with local:
        local.wait_ready(timeout=60)
        answer = httpx.post(
            f"{local.url}/run", headers=AUTH, json={"input": {"steps": 2, "sleep": 0.05}}
        )
        job_id = answer.json()["id"]
        done = local.wait_for(job_id, timeout=30)
        assert (done["status"], done["output"]) == ("COMPLETED", {"steps": 2, "echo": None})
        assert local.events.progress[job_id]  # progress posts get through too


HOSTILE = {
    "a 5000-digit integer": b'{"input": ' + b"1" * 5000 + b"}",  # int-string limit: ValueError
    "5000-deep nesting": b"[" * 5000 + b"]" * 5000,  # RecursionError in the parser
    # Parses, but its reply to job-take would not encode: the job would hang IN_PROGRESS.
    "980-deep nesting": b'{"input": ' + b"[" * 980 + b"]" * 980 + b"}",
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_json_gets_400_and_the_server_keeps_serving(
    name: str, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    secret = "test-worker-secret"
    with LocalPod(HANDLER, workers=0, worker_secret=secret, log_dir=tmp_path) as local:
        for path, key in (("/run", KEY), ("/runsync", KEY), ("/job-done/w1/job1", secret)):
            answer = httpx.post(
                f"{local.url}{path}", content=HOSTILE[name], headers={"Authorization": key}
            )
            assert answer.status_code == 400, (path, answer.text)
            assert answer.json()["error"]
        after = httpx.get(f"{local.url}/health", headers=AUTH)
        assert after.status_code == 200
        assert after.json()["jobs"]["inQueue"] == 0
    assert "Traceback" not in capfd.readouterr().err


def test_bad_content_length_gets_400(tmp_path: Path) -> None:
    with LocalPod(HANDLER, workers=0, log_dir=tmp_path) as local:
        for length in ("-1", "many"):
            request = (
                f"POST /v2/local/run HTTP/1.1\r\nHost: x\r\nAuthorization: {KEY}\r\n"
                f"Content-Length: {length}\r\n\r\n"
            )
            with socket.create_connection(("127.0.0.1", local.port), timeout=10) as conn:
                conn.sendall(request.encode())  # and keep the socket open: no EOF to read to
                status = conn.recv(4096).split(b"\r\n", 1)[0]
            assert status.split()[1] == b"400", (length, status)
        assert httpx.get(f"{local.url}/health", headers=AUTH).status_code == 200


def test_a_failing_route_answers_500_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    def broken(**_: int) -> dict[str, Any]:
        raise RuntimeError("a bug in the board")

    with LocalPod(HANDLER, workers=0, log_dir=tmp_path) as local:
        monkeypatch.setattr(local.board, "health", broken)
        answer = httpx.get(f"{local.url}/health", headers=AUTH)
        assert answer.status_code == 500
        assert answer.json() == {"error": "internal error: RuntimeError"}
        monkeypatch.undo()
        assert httpx.get(f"{local.url}/health", headers=AUTH).status_code == 200
    err = capfd.readouterr().err
    assert "Traceback" not in err
    assert "a bug in the board" in err  # one line for whoever debugs it


def test_stop_leaves_no_process(tmp_path: Path) -> None:
    local = LocalPod(HANDLER, cwd=REPO, log_dir=tmp_path, workers=2, stop_grace_s=5)
    with local:
        local.wait_ready(timeout=60)
        pids = local.worker_pids()
        assert len(pids) == 2
        answer = httpx.get(f"{local.url}/health", headers={"Authorization": "any"})
        assert answer.json()["workers"] == {"idle": 2, "running": 0}
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.killpg(pid, 0)
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{local.url}/health", headers={"Authorization": "any"}, timeout=2)


def test_no_worker_starts_once_stop_has_begun(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    local = LocalPod(HANDLER, cwd=REPO, log_dir=tmp_path, stop_grace_s=5)
    with local:
        local.wait_ready(timeout=60)
        first = sorted(tmp_path.glob("*.log"))
        reaped, proceed = threading.Event(), threading.Event()
        worker_gone = local.board.worker_gone

        def parked(worker_id: str, returncode: int | None) -> list[str]:
            # The supervisor's round, paused after it reaped a dead worker and before it
            # replaces it: stop() begins right then.
            reaped.set()
            proceed.wait(timeout=60)
            return worker_gone(worker_id, returncode)

        monkeypatch.setattr(local.board, "worker_gone", parked)
        os.killpg(local.worker_pids()[0], signal.SIGKILL)
        assert reaped.wait(timeout=30), "the supervisor never reaped the worker"
        stopper = threading.Thread(target=local.stop)
        stopper.start()
        deadline = time.monotonic() + 30
        while not local.stopping:
            assert time.monotonic() < deadline, "stop() never began"
            time.sleep(0.05)
        proceed.set()
        stopper.join(timeout=60)
        assert not stopper.is_alive()
    assert sorted(tmp_path.glob("*.log")) == first  # no replacement was started


def wait_http(url: str, timeout: float = 60) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return httpx.get(url, headers=AUTH, timeout=5)
        except httpx.TransportError:
            assert time.monotonic() < deadline, f"{url} never answered"
            time.sleep(0.2)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_serve_stopped_by_a_signal_leaves_no_process(sig: signal.Signals, tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    marker = f"LOCALPOD_TEST_MARK={uuid.uuid4().hex}"
    name, _, value = marker.partition("=")
    logs = tmp_path / "logs"
    argv = [sys.executable, "-m", "orchestrator.cli", "serve", "--handler", str(HANDLER)]
    argv += ["--port", str(port), "--log-dir", str(logs)]
    with (tmp_path / "serve.out").open("wb") as out:
        serve = subprocess.Popen(
            argv, cwd=REPO, env={**os.environ, name: value}, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        url = f"http://127.0.0.1:{port}/v2/local"
        assert wait_http(f"{url}/health").status_code == 200
        answer = httpx.post(f"{url}/run", headers=AUTH, json={"input": {"steps": 30, "sleep": 0.1}})
        status_url = f"{url}/status/{answer.json()['id']}"
        deadline = time.monotonic() + 60
        while "output" not in wait_http(status_url).json():  # a worker took it and reports
            assert time.monotonic() < deadline, (tmp_path / "serve.out").read_text()
            time.sleep(0.1)
        assert set(marked_processes(marker)) - {serve.pid}  # the check sees the workers
        workers_started = sorted(logs.glob("*.log"))
        serve.send_signal(sig)
        serve.wait(timeout=60)
        deadline = time.monotonic() + 15  # SIGKILLed leftovers take a moment to go
        while left := marked_processes(marker):
            assert time.monotonic() < deadline, f"left running: {left}"
            time.sleep(0.1)
        assert serve.returncode == 0, (tmp_path / "serve.out").read_text()
        assert sorted(logs.glob("*.log")) == workers_started  # none started while stopping
    finally:
        for pid in [serve.pid, *marked_processes(marker)]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        serve.wait(timeout=30)
