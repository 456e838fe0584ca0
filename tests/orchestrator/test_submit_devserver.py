"""`dpserve submit --wait` against the SDK's own dev server (`python handler.py --rp_serve_api`).

That server has no `/v2/<id>` prefix, answers GET /status with 405 and runs the job inside
POST /status (runpod/serverless/modules/rp_fastapi.py); the real one runs here as a subprocess.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from orchestrator.cli import app, submit
from tests.support.localpod_client import HANDLER
from tests.support.paths import REPO

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def dev_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = _free_port()
    log = tmp_path_factory.mktemp("devserver") / "server.log"
    serve = ["--rp_serve_api", "--rp_api_port", str(port), "--rp_api_host", "127.0.0.1"]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, str(HANDLER), *serve],
            cwd=REPO,
            env={**os.environ, "RUNPOD_LOG_LEVEL": "INFO"},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # the SDK's heartbeat child goes with the group
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                httpx.get(f"{url}/docs", timeout=2)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.2)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _submit(url: str, body: dict[str, Any], tmp_path: Path) -> tuple[int, dict[str, Any], str]:
    request = tmp_path / "request.json"
    request.write_text(json.dumps(body))
    result = CliRunner().invoke(
        app, ["submit", str(request), "--base-url", url, "--wait", "--interval", "0.2"]
    )
    stdout = result.stdout
    final = json.loads(stdout[stdout.index("{") :]) if "{" in stdout else {}
    return result.exit_code, final, result.output


def test_the_dev_server_serves_status_by_post_only(dev_server: str) -> None:
    # What the CLI adapts to; if the SDK ever changes this, the test says so.
    job = httpx.post(f"{dev_server}/run", json={"input": {"steps": 1, "sleep": 0.01}}).json()
    assert httpx.get(f"{dev_server}/status/{job['id']}").status_code == 405
    assert httpx.post(f"{dev_server}/status/{job['id']}").json()["status"] == "COMPLETED"


def test_submit_wait_follows_a_job_on_the_dev_server(
    dev_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every ordinary call is cut short at 1 s; the job takes 3 s inside POST /status.
    monkeypatch.setattr(submit, "CALL_TIMEOUT_S", 1.0)
    body = {"input": {"steps": 6, "sleep": 0.5, "echo": "dev"}}
    code, final, output = _submit(dev_server, body, tmp_path)
    assert code == 0, output
    assert final["status"] == "COMPLETED"
    assert final["output"] == {"steps": 6, "echo": "dev"}
    assert "SDK dev server" in output


def test_submit_wait_reports_a_failure_on_the_dev_server(dev_server: str, tmp_path: Path) -> None:
    code, final, output = _submit(dev_server, {"steps": 1, "sleep": 0.01, "fail": True}, tmp_path)
    assert code == 1, output
    assert (final["status"], final["error"]) == ("FAILED", "asked to fail after 1 steps")
