"""localpod follows RunPod's platform rules: the default execution timeout and the policy
bounds, the job TTL, result retention (and so the /retry window), webhook retries.

The board is driven with a fake clock (no sleeping); one endpoint with short settings runs the
real SDK worker loop through the HTTP routes.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from localpod import LocalPod
from localpod.board import (
    CANCELLED,
    COMPLETED,
    FAILED,
    IN_PROGRESS,
    IN_QUEUE,
    TIMED_OUT,
    BadRequest,
    JobBoard,
)
from localpod.server import deliver_webhook
from tests.support.localpod_client import AUTH, HANDLER, KEY, health, run, wait_file
from tests.support.paths import REPO


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def board_at(**settings: Any) -> tuple[JobBoard, FakeClock]:
    clock = FakeClock()
    return JobBoard(clock=clock, **settings), clock


def status(board: JobBoard, job_id: str) -> str | None:
    view = board.view(job_id)
    return None if view is None else str(view["status"])


# ---- execution timeout: RunPod's default and bounds ---------------------------------------


def test_a_job_without_policy_times_out_at_runpods_600_s_default() -> None:
    board, clock = board_at()
    job = board.submit({"input": {}})
    board.take("w1", 1, hold_s=0)
    clock.advance(599)
    assert status(board, job.id) == IN_PROGRESS
    clock.advance(2)
    view = board.view(job.id)
    assert view is not None
    assert (view["status"], view["error"]) == (TIMED_OUT, "execution timeout of 600 s exceeded")
    assert board.take_stops("w1", hold_s=0) == [job.id]  # the worker is told to stop


def test_policy_execution_timeout_overrides_the_default_and_counts_per_delivery() -> None:
    board, clock = board_at(default_execution_timeout_s=10)
    job = board.submit({"input": {}, "policy": {"executionTimeout": 3_600_000}})
    clock.advance(100)  # queue time does not count
    board.take("w1", 1, hold_s=0)
    clock.advance(3599)
    assert status(board, job.id) == IN_PROGRESS
    clock.advance(2)
    assert status(board, job.id) == TIMED_OUT
    off, off_clock = board_at(default_execution_timeout_s=None)  # the endpoint setting off
    never = off.submit({"input": {}, "policy": {"ttl": 7 * 86_400_000}})
    off.take("w1", 1, hold_s=0)
    off_clock.advance(6 * 86_400)
    assert status(off, never.id) == IN_PROGRESS


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("executionTimeout", 4999),
        ("executionTimeout", 7 * 86_400_000 + 1),
        ("executionTimeout", 0),
        ("executionTimeout", True),
        ("executionTimeout", "600000"),
        ("ttl", 9999),
        ("ttl", 7 * 86_400_000 + 1),
    ],
)
def test_policy_values_outside_runpods_bounds_are_refused(name: str, value: Any) -> None:
    board, _ = board_at()
    with pytest.raises(BadRequest, match=rf"policy\.{name} must be .* from \d+ to 604800000"):
        board.submit({"input": {}, "policy": {name: value}})
    assert not board.jobs


def test_policy_bounds_are_inclusive() -> None:
    board, _ = board_at()
    for policy in (
        {"executionTimeout": 5000, "ttl": 10_000},
        {"executionTimeout": 7 * 86_400_000, "ttl": 7 * 86_400_000},
    ):
        board.submit({"input": {}, "policy": policy})
    assert len(board.jobs) == 2


# ---- ttl: the job's whole life, queue and run ------------------------------------------------


def test_ttl_removes_a_queued_job_and_it_is_never_delivered() -> None:
    board, clock = board_at()
    job = board.submit({"input": {}, "policy": {"ttl": 10_000}})
    clock.advance(11)
    assert board.take("w1", 1, hold_s=0) == []
    assert board.view(job.id) is None  # RunPod: status checks return 404
    assert "ttl of 10 s" in (board.gone_reason(job.id) or "")
    assert board.health(idle=1, running=0)["jobs"]["inQueue"] == 0


def test_ttl_counts_from_submission_and_stops_a_running_job() -> None:
    board, clock = board_at()
    job = board.submit({"input": {}, "policy": {"ttl": 60_000, "executionTimeout": 600_000}})
    clock.advance(45)  # queue time eats into the TTL
    board.take("w1", 1, hold_s=0)
    clock.advance(14)
    assert status(board, job.id) == IN_PROGRESS
    clock.advance(2)
    assert board.view(job.id) is None
    assert board.take_stops("w1", hold_s=0) == [job.id]
    # The worker's late answer is ignored, not an error.
    assert board.post("w1", job.id, {"output": "too late"}) is None
    assert board.events.ignored[-1][1] == job.id


def test_the_default_ttl_is_24_hours_and_also_ends_a_finished_job() -> None:
    board, clock = board_at(default_execution_timeout_s=None, run_retention_s=10 * 86_400)
    job = board.submit({"input": {}})
    board.take("w1", 1, hold_s=0)
    clock.advance(86_000)
    board.post("w1", job.id, {"output": 1})
    assert status(board, job.id) == COMPLETED
    clock.advance(401)
    assert board.view(job.id) is None


# ---- result retention and the /retry window ----------------------------------------------


def fail(board: JobBoard, body: dict[str, Any], *, sync: bool = False) -> str:
    job = board.submit(body, sync=sync)
    board.take("w1", 1, hold_s=0)
    board.post("w1", job.id, {"error": "boom"})
    assert status(board, job.id) == FAILED
    return job.id


def test_run_results_are_kept_30_minutes_and_retry_works_only_inside() -> None:
    board, clock = board_at()
    early = fail(board, {"input": {}})
    late = fail(board, {"input": {}})
    clock.advance(1799)
    assert board.retry(early) == {"id": early, "status": IN_QUEUE}
    assert status(board, late) == FAILED
    clock.advance(2)
    assert board.view(late) is None
    assert board.retry(late) is None  # gone: the route answers 404
    assert "1800 s result retention of /run" in (board.gone_reason(late) or "")
    clock.advance(3600)
    assert status(board, early) == IN_QUEUE  # a retried job is no longer finished


def test_runsync_results_are_kept_1_minute() -> None:
    board, clock = board_at()
    job_id = fail(board, {"input": {}}, sync=True)
    clock.advance(59)
    assert status(board, job_id) == FAILED
    clock.advance(2)
    assert board.view(job_id) is None
    assert board.retry(job_id) is None


def test_retention_applies_to_cancelled_and_purged_jobs() -> None:
    board, clock = board_at(run_retention_s=5)
    cancelled = board.submit({"input": {}})
    purged = board.submit({"input": {}})
    board.cancel(cancelled.id)
    assert board.purge_queue() == 1
    assert (status(board, cancelled.id), status(board, purged.id)) == (CANCELLED, CANCELLED)
    clock.advance(6)
    assert (board.view(cancelled.id), board.view(purged.id)) == (None, None)


# ---- webhook retries -----------------------------------------------------------------------


class FlakyHook:
    """A loopback webhook receiver answering a scripted list: an HTTP code, or 'drop' to close
    the connection without an answer; then 200."""

    def __init__(self, script: list[int | str]) -> None:
        self.script = list(script)
        self.bodies: list[Any] = []
        self.lock = threading.Lock()
        self.got = threading.Condition(self.lock)
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with hook.got:
                    hook.bodies.append(body)
                    step = hook.script.pop(0) if hook.script else 200
                    hook.got.notify_all()
                if step == "drop":
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                self.send_response(int(step))
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait(self, count: int, timeout: float) -> list[Any]:
        with self.got:
            assert self.got.wait_for(lambda: len(self.bodies) >= count, timeout), self.bodies
            return list(self.bodies)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hook() -> Iterator[FlakyHook]:
    receiver = FlakyHook(["drop", 503])
    try:
        yield receiver
    finally:
        receiver.close()


def test_webhook_is_tried_twice_more_10_s_apart(hook: FlakyHook) -> None:
    outcomes: list[str] = []
    sleeps: list[float] = []
    assert deliver_webhook(hook.url, {"x": 1}, record=outcomes.append, sleep=sleeps.append)
    assert outcomes == ["RemoteProtocolError", "HTTP 503", "200"]
    assert sleeps == [10.0, 10.0]
    assert hook.bodies == [{"x": 1}] * 3


def test_webhook_gives_up_after_the_retries(hook: FlakyHook) -> None:
    hook.script = [500, 500, 500, 200]
    outcomes: list[str] = []
    assert not deliver_webhook(hook.url, {}, record=outcomes.append, sleep=lambda _s: None)
    assert outcomes == ["HTTP 500"] * 3


# ---- through the HTTP routes and the real SDK worker -------------------------------------


@pytest.fixture(scope="module")
def rules_pod(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalPod]:
    local = LocalPod(
        HANDLER,
        api_key=KEY,
        cwd=REPO,
        log_dir=tmp_path_factory.mktemp("rules-logs"),
        stop_grace_s=5,
        default_execution_timeout_s=1.5,
        run_retention_s=6,
        webhook_retry_delay_s=0.3,
    )
    with local:
        local.wait_ready(timeout=60)
        yield local


@pytest.fixture
def rules_http(rules_pod: LocalPod) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=rules_pod.url, headers=AUTH, timeout=30) as client:
        yield client


def test_no_policy_times_out_at_the_default_and_retry_redelivers(
    rules_pod: LocalPod, rules_http: httpx.Client, tmp_path: Path
) -> None:
    retried = health(rules_http)["jobs"]["retried"]
    spec = {"steps": 40, "sleep": 0.2, "dir": str(tmp_path), "tag": "t"}
    job_id = run(rules_http, spec)  # no policy at all
    done = rules_pod.wait_for(job_id, timeout=20)
    assert (done["status"], done["error"]) == (TIMED_OUT, "execution timeout of 1.5 s exceeded")
    assert wait_file(tmp_path / "t.cancelled") == job_id  # the handler saw CancelledError
    assert rules_http.post(f"/retry/{job_id}").json() == {"id": job_id, "status": IN_QUEUE}
    assert rules_http.get(f"/status/{job_id}").json().get("output") is None
    assert rules_pod.wait_for(job_id, timeout=20)["status"] == TIMED_OUT
    assert (tmp_path / "t.deliveries").read_text().split() == [job_id, job_id]
    assert health(rules_http)["jobs"]["retried"] == retried + 1


def test_policy_timeout_overrides_the_default_and_bad_ones_get_400(
    rules_pod: LocalPod, rules_http: httpx.Client
) -> None:
    job_id = run(rules_http, {"steps": 10, "sleep": 0.3}, policy={"executionTimeout": 60_000})
    done = rules_pod.wait_for(job_id, timeout=30)
    assert (done["status"], done["output"]) == (COMPLETED, {"steps": 10, "echo": None})
    too_short = {"input": {"steps": 1}, "policy": {"executionTimeout": 700}}
    for route in ("/run", "/runsync"):
        answer = rules_http.post(route, json=too_short)
        assert answer.status_code == 400
        assert "policy.executionTimeout" in answer.json()["error"]
    answer = rules_http.post("/run", json={"input": {}, "policy": {"ttl": 5000}})
    assert answer.status_code == 400
    assert "policy.ttl" in answer.json()["error"]


def test_retry_after_the_result_retention_is_refused(
    rules_pod: LocalPod, rules_http: httpx.Client
) -> None:
    job_id = run(rules_http, {"steps": 1, "sleep": 0.01, "fail": True})
    assert rules_pod.wait_for(job_id, timeout=20)["status"] == FAILED
    assert rules_http.get(f"/status/{job_id}").status_code == 200  # kept for 6 s
    deadline = time.monotonic() + 30
    while (answer := rules_http.get(f"/status/{job_id}")).status_code == 200:
        assert time.monotonic() < deadline, "the result was never removed"
        time.sleep(0.2)
    assert answer.status_code == 404
    assert "result retention" in answer.json()["error"]
    retry = rules_http.post(f"/retry/{job_id}")
    assert retry.status_code == 404
    assert len(rules_pod.events.deliveries[job_id]) == 1  # the refused retry queued nothing


def test_a_webhook_that_fails_twice_is_delivered_on_the_third_try(
    rules_pod: LocalPod, rules_http: httpx.Client, hook: FlakyHook
) -> None:
    job_id = run(rules_http, {"steps": 2, "sleep": 0.05, "echo": "hook"}, webhook=hook.url)
    bodies = hook.wait(3, timeout=20)
    assert len(bodies) == 3
    assert all(b["id"] == job_id and b["status"] == COMPLETED for b in bodies)
    assert bodies[-1]["output"] == {"steps": 2, "echo": "hook"}
    with rules_pod.board.cond:
        rules_pod.board.cond.wait_for(
            lambda: len(rules_pod.events.webhooks.get(job_id, [])) >= 3, timeout=10
        )
        outcomes = rules_pod.events.webhooks[job_id]
    assert outcomes == ["RemoteProtocolError", "HTTP 503", "200"]
