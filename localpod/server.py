"""HTTP front of the local endpoint: RunPod's client API and its worker protocol.

Stdlib `ThreadingHTTPServer`: one thread per request makes the long-polls (job-take,
job-stop, runsync) plain blocking waits on the board's condition, with no event loop to
share with the caller; it starts and stops inside a test process in milliseconds and adds no
dependency. Throughput is irrelevant for a development endpoint.
"""

from __future__ import annotations

import json
import re
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx

from localpod.board import FINAL_STATUSES, BadRequest, Job, JobBoard

ROUTE = re.compile(r"^/v2/(?P<ep>[^/]+)/(?P<op>[a-z-]+)(?:/(?P<a>[^/]+))?(?:/(?P<b>[^/]+))?/?$")
RUNSYNC_DEFAULT_MS = 90_000
RUNSYNC_MAX_MS = 300_000
# Far deeper than any real job input or result, far below where Python's JSON recursion gives
# out: a body that parses near that limit may fail to encode in a reply (job-take) or to parse
# in the SDK worker, and its job would never be delivered.
MAX_JSON_DEPTH = 100
WORKER_OPS = frozenset({"job-take", "job-take-batch", "job-stop", "job-done", "job-stream", "ping"})
# RunPod: "If the call fails, Runpod retries up to 2 more times with a 10-second delay"
# (docs.runpod.io serverless/endpoints/send-requests, "Webhook notifications").
WEBHOOK_RETRIES = 2
WEBHOOK_RETRY_DELAY_S = 10.0
WEBHOOK_TIMEOUT_S = 10.0


class EndpointServer(ThreadingHTTPServer):
    daemon_threads = True  # a held long-poll must not keep the process alive at exit

    def __init__(
        self,
        address: tuple[str, int],
        *,
        board: JobBoard,
        endpoint_id: str,
        authorize: Callable[[str | None, bool], bool],  # (Authorization, worker route?)
        worker_counts: Callable[[], tuple[int, int]],
        on_final: Callable[[str, Job, bool], None],
        take_hold_s: float = 1.0,
        stop_hold_s: float = 1.0,
    ) -> None:
        super().__init__(address, _Handler)
        self.board = board
        self.endpoint_id = endpoint_id
        self.authorize = authorize
        self.worker_counts = worker_counts
        self.on_final = on_final  # (worker id, job, stopPod) after a final result
        self.take_hold_s = take_hold_s
        self.stop_hold_s = stop_hold_s


class _Handler(BaseHTTPRequestHandler):
    server: EndpointServer
    server_version = "localpod"
    replied = False  # per request: a late failure (on_final) must not send a second answer

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: job-stop and ping polls would flood the terminal every second."""

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    # ---- plumbing ----------------------------------------------------------------------

    def _reply(self, code: int, body: Any = None) -> None:
        data = b"" if body is None else json.dumps(body).encode()
        self.replied = True
        self.send_response(code)
        if body is not None:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if data:
            self.wfile.write(data)

    def _body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        if length < 0:  # read(-1) would wait for an EOF the client never sends
            raise BadRequest(f"bad Content-Length: {length}")
        raw = self.rfile.read(length) if length else b""
        if not raw.strip():
            return None
        # Workers send JSON labelled x-www-form-urlencoded: the content type is ignored.
        try:
            body = json.loads(raw)
        except RecursionError:
            raise BadRequest(f"JSON nested deeper than {MAX_JSON_DEPTH} levels") from None
        except ValueError as exc:  # bad syntax, bad UTF-8, an integer past the int-string limit
            raise BadRequest(f"invalid JSON: {exc}") from None
        if _depth_exceeds(body, MAX_JSON_DEPTH):
            raise BadRequest(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
        return body

    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        match = ROUTE.match(url.path)
        if match is None or match["ep"] != self.server.endpoint_id:
            self._reply(404, {"error": f"no such route: {url.path}"})
            return
        worker = match["op"] in WORKER_OPS
        if not self.server.authorize(self.headers.get("Authorization"), worker):
            need = "the worker secret" if worker else "'Authorization: Bearer <key>'"
            self._reply(401, {"error": f"Unauthorized: this route takes {need}"})
            return
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        op, a, b = match["op"], match["a"], match["b"]
        try:
            body = self._body() if method == "POST" else None
            self._route(method, op, a=a, b=b, query=query, body=body)
        except OSError:
            pass  # the client went away (a killed worker's long-poll): nobody to answer
        except Exception as exc:
            self._fail(exc, f"{method} {url.path}")

    def _fail(self, exc: Exception, what: str) -> None:
        """Answer an error as JSON: never a traceback and a dropped connection."""
        if isinstance(exc, ValueError) and not self.replied:  # BadRequest, a bad ?wait=
            self._reply(400, {"error": str(exc)})
        elif isinstance(exc, KeyError) and not self.replied:
            # RunPod answers 404 for an expired job too; localpod says why, for whoever debugs.
            why = self.server.board.gone_reason(str(exc.args[0]))
            detail = f" ({why})" if why else ""
            self._reply(404, {"error": f"job {exc.args[0]} not found{detail}"})
        else:  # a bug, or a failure after the answer went out (on_final): one line, not a trace
            print(f"localpod: {what}: {exc!r}", file=sys.stderr)
            if not self.replied:
                self._reply(500, {"error": f"internal error: {type(exc).__name__}"})

    def _route(
        self,
        method: str,
        op: str,
        *,
        a: str | None,
        b: str | None,
        query: dict[str, str],
        body: Any,
    ) -> None:
        board = self.server.board
        client_post = {"run", "runsync", "cancel", "retry", "purge-queue"}
        if op in client_post and method != "POST":
            self._reply(405, {"error": f"/{op} takes POST"})
        elif op == "run" and a is None:
            job = board.submit(body)
            self._reply(200, {"id": job.id, "status": job.status})
        elif op == "runsync" and a is None:
            job = board.submit(body, sync=True)
            wait_ms = min(int(query.get("wait", RUNSYNC_DEFAULT_MS)), RUNSYNC_MAX_MS)
            try:
                view = board.wait_for(job.id, FINAL_STATUSES, timeout=wait_ms / 1000)
            except TimeoutError:
                view = board.view(job.id) or {}
            self._reply(200, view)
        elif op in ("status", "cancel", "retry", "stream") and a is not None and b is None:
            action = {
                "status": board.view,
                "cancel": board.cancel,
                "retry": board.retry,
                "stream": board.stream_chunks,
            }[op]
            found = action(a)
            if found is None:
                raise KeyError(a)
            self._reply(200, found)
        elif op == "health" and a is None:
            idle, running = self.server.worker_counts()
            self._reply(200, board.health(idle=idle, running=running))
        elif op == "purge-queue" and a is None:
            self._reply(200, {"removed": board.purge_queue(), "status": "completed"})
        else:
            self._worker_route(method, op, a=a, b=b, query=query, body=body)

    def _worker_route(
        self,
        method: str,
        op: str,
        *,
        a: str | None,
        b: str | None,
        query: dict[str, str],
        body: Any,
    ) -> None:
        board, srv = self.server.board, self.server
        if op in ("job-take", "job-take-batch") and method == "GET" and a and b is None:
            many = op == "job-take-batch"
            jobs = board.take(a, int(query.get("batch_size", 1)) if many else 1, srv.take_hold_s)
            if not jobs:
                self._reply(204)
            else:
                self._reply(200, jobs if many else jobs[0])
        elif op == "job-stop" and method == "GET" and a and b is None:
            stops = board.take_stops(a, srv.stop_hold_s)
            if stops:
                self._reply(200, {"jobsToStop": stops})
            else:
                self._reply(204)
        elif op == "job-done" and method == "POST" and a and b:
            final = board.post(a, b, body)
            self._reply(200, {})
            if final is not None:
                srv.on_final(a, final, bool(isinstance(body, dict) and body.get("stopPod")))
        elif op == "job-stream" and method == "POST" and a and b:
            board.post_stream(a, b, body)
            self._reply(200, {})
        elif op == "ping" and method == "GET" and a and b is None:
            board.ping(a, query.get("job_id", ""))
            self._reply(200, {})
        else:
            self._reply(404, {"error": f"no such route: {method} {self.path}"})


def _depth_exceeds(value: Any, limit: int) -> bool:
    """Whether JSON `value` nests containers deeper than `limit`; iterative, so any depth."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if not isinstance(item, dict | list):
            continue
        if depth > limit:
            return True
        children = item.values() if isinstance(item, dict) else item
        stack.extend((child, depth + 1) for child in children)
    return False


def deliver_webhook(
    url: str,
    body: dict[str, Any],
    *,
    retries: int = WEBHOOK_RETRIES,
    delay_s: float = WEBHOOK_RETRY_DELAY_S,
    timeout_s: float = WEBHOOK_TIMEOUT_S,
    record: Callable[[str], None] = lambda _outcome: None,
    sleep: Callable[[float], None] = time.sleep,
) -> bool:
    """POST the final status to a request's webhook; on a transport error or a non-2xx answer,
    try again up to `retries` more times, `delay_s` apart. Whether one attempt succeeded.

    Redirects are not followed: RunPod asks for a 200, and a redirected POST would change.
    """
    for attempt in range(retries + 1):
        if attempt:
            sleep(delay_s)
        try:
            answer = httpx.post(url, json=body, timeout=timeout_s, follow_redirects=False)
        except httpx.HTTPError as exc:
            record(type(exc).__name__)
            continue
        record(str(answer.status_code) if answer.is_success else f"HTTP {answer.status_code}")
        if answer.is_success:
            return True
    return False


def send_webhook(url: str, body: dict[str, Any], **options: Any) -> threading.Thread:
    """deliver_webhook off the request thread (its retries wait seconds). The thread."""
    thread = threading.Thread(
        target=deliver_webhook,
        args=(url, body),
        kwargs=options,
        name="localpod-webhook",
        daemon=True,
    )
    thread.start()
    return thread
