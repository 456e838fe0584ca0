"""A loopback Gemini API: the REST calls google-genai makes for video captioning, nothing more.

Calls (paths as the SDK builds them from `base_url`; only the versions in `api_versions`, by
default v1beta, where Google documents the Files API):

- `POST /upload/{v}/files` with `X-Goog-Upload-Command: start`: answers with an absolute
  `x-goog-upload-url` header (a new upload session each time), which the SDK then posts the
  bytes to;
- `POST /upload/{v}/files/sessions/{id}` with `X-Goog-Upload-Command: upload, finalize` and the
  bytes: answers `x-goog-upload-status: final` and `{"file": File}` in state PROCESSING;
- `GET /{v}/files/{id}`: the File, PROCESSING for the first `processing_polls` reads, then ACTIVE
  (or FAILED with Google's error for display names in `failed_processing`);
- `DELETE /{v}/files/{id}`: `{}`;
- `POST /{v}/models/{model}:generateContent`: a caption naming the file and the bytes received,
  a prompt-feedback block for display names in `blocked`, or the answers queued by `answer`
  (an empty STOP, a MAX_TOKENS cut with partial text, ...). The body is checked as Google
  checks it: one file part and a prompt, `videoMetadata.fps` in (0, 24], a known
  `generationConfig.mediaResolution`;
- `GET /{v}/models/{model}` (`client.models.get`): the model's description, or Google's 404
  NOT_FOUND for a model not in `models` (None: every model exists).

Any other version in the path gets the 404 HTML page Google's front end serves for a URL no
service handles, so a client left on the SDK's default version (v1 in google-genai 3.6) fails.

Every call but the upload of the bytes checks the `x-goog-api-key` header and is recorded (with
the time of `clock`): a key in `denied_keys` gets Google's 403 PERMISSION_DENIED (with its
ErrorInfo reason, e.g. API_KEY_SERVICE_BLOCKED, or none, as for a key reported leaked), any
other wrong key the 400 INVALID_ARGUMENT / API_KEY_INVALID body. `fail(op, status, body=...,
times=n)` queues errors for one operation, with Google's body for the status unless one is
given (`quota_exceeded`, `overloaded`, `location_unsupported`); `drop(op, times=n)` closes the
connection without an answer (a reset mid-upload). `quota` answers generateContent beyond N
requests per window with the real 429 body and the window's remaining time as its retryDelay;
`latency_s` is how long a generateContent takes. `hold`, when set, is called with each recorded
request before it is answered and may block: a test's way to put two workers' requests in a
known order.
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
import struct
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

Json = dict[str, Any]
Answer = tuple[int, dict[str, str], Json | str]

PER_MINUTE = "GenerateRequestsPerMinutePerProjectPerModel-FreeTier"
PER_DAY = "GenerateRequestsPerDayPerProjectPerModel-FreeTier"
QUOTA_METRIC = "generativelanguage.googleapis.com/generate_content_free_tier_requests"
RATE_LIMITS_DOC = "https://ai.google.dev/gemini-api/docs/rate-limits"
MEDIA_RESOLUTIONS = frozenset(
    {
        "MEDIA_RESOLUTION_UNSPECIFIED",
        "MEDIA_RESOLUTION_LOW",
        "MEDIA_RESOLUTION_MEDIUM",
        "MEDIA_RESOLUTION_HIGH",
    }
)


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    at: float = 0.0  # `clock()` when the request arrived
    status: int = 0  # 0: no answer (the connection was dropped)

    @property
    def op(self) -> str | None:
        return _op(self.method, self.path)

    def json(self) -> Json:
        loaded: Json = json.loads(self.body or b"{}")
        return loaded


@dataclass
class FakeFile:
    id: str
    display_name: str
    mime_type: str
    size: int
    data: bytes = b""
    polls: int = 0
    uploaded: bool = False
    session: str = ""

    @property
    def name(self) -> str:
        return f"files/{self.id}"


@dataclass
class Fault:
    status: int
    body: Json | None = None  # None: Google's body for the status
    retry_after: str | None = None
    drop: Literal["reset", "close"] | None = None  # no answer at all


@dataclass
class RateQuota:
    """Google's per-minute request quota on generateContent, with a window of `window_s` of
    `clock` (a short one stands for a minute in the bench). Windows are fixed, from the first
    request; a request beyond `limit` in one gets the 429 body, not counted."""

    limit: int
    window_s: float = 60.0
    clock: Callable[[], float] = time.monotonic
    quota_id: str = PER_MINUTE
    start: float | None = None
    used: dict[int, int] = field(default_factory=dict)
    refused: int = 0

    def admit(self, model: str) -> Json | None:
        """None when the request may go, else the 429 body to answer with."""
        now = self.clock()
        if self.start is None:
            self.start = now
        window = int((now - self.start) // self.window_s)
        if self.used.get(window, 0) < self.limit:
            self.used[window] = self.used.get(window, 0) + 1
            return None
        self.refused += 1
        left = self.start + (window + 1) * self.window_s - now
        # Google's RetryInfo is whole seconds; a window of a second needs its fraction.
        delay = f"{max(left, 0.001):.3f}s" if self.window_s < 60 else f"{max(1, int(left))}s"
        return quota_exceeded(
            quota_id=self.quota_id, model=model, retry_delay=delay, limit=self.limit
        )


@dataclass
class FakeGemini:
    api_key: str
    processing_polls: int = 1
    blocked: dict[str, str] = field(default_factory=dict)  # display name -> block reason
    failed_processing: dict[str, str] = field(default_factory=dict)  # display name -> error
    models: set[str] | None = None  # the models `models.get` knows (None: any)
    denied_keys: dict[str, str | None] = field(default_factory=dict)  # key -> 403 reason
    api_versions: frozenset[str] = frozenset({"v1beta"})
    clock: Callable[[], float] = time.monotonic
    quota: RateQuota | None = None
    latency_s: float = 0.0  # how long a generateContent takes (real seconds; the bench's model)
    hold: Callable[[Recorded], None] | None = None
    requests: list[Recorded] = field(default_factory=list)
    files: dict[str, FakeFile] = field(default_factory=dict)
    deleted: list[str] = field(default_factory=list)
    models_used: list[str] = field(default_factory=list)
    _faults: dict[str, list[Fault]] = field(default_factory=dict)
    _answers: dict[str, list[Json]] = field(default_factory=dict)  # display name -> candidates
    _sessions: dict[str, str] = field(default_factory=dict)  # upload session -> file id
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None

    # --- control ---------------------------------------------------------------------------

    def start(self) -> FakeGemini:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                fake._handle(self, "GET")

            def do_POST(self) -> None:
                fake._handle(self, "POST")

            def do_DELETE(self) -> None:
                fake._handle(self, "DELETE")

            def log_message(self, format: str, *args: Any) -> None:  # quiet test output
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        ).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def __enter__(self) -> FakeGemini:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def fail(
        self,
        op: str,
        status: int,
        *,
        body: Json | None = None,
        retry_after: str | None = None,
        times: int = 1,
    ) -> None:
        """Answer the next `times` calls of `op` (upload_start, upload_chunk, get, delete,
        generate, model) with `status` and `body` (None: Google's usual body for it)."""
        with self._lock:
            self._faults.setdefault(op, []).extend([Fault(status, body, retry_after)] * times)

    def drop(self, op: str, *, times: int = 1, how: Literal["reset", "close"] = "reset") -> None:
        """Close the connection of the next `times` calls of `op` without answering: "reset"
        sends a TCP RST (the client reads ECONNRESET), "close" a plain FIN."""
        with self._lock:
            self._faults.setdefault(op, []).extend([Fault(0, drop=how)] * times)

    def answer(self, display_name: str, *, finish: str, text: str = "", times: int = 1) -> None:
        """The next `times` generateContent answers for the file: one candidate with
        `finish` and `text` (empty: a content without parts, as Gemini sends it)."""
        content: Json = {"role": "model"}
        if text:
            content["parts"] = [{"text": text}]
        candidate = {"content": content, "finishReason": finish, "index": 0}
        with self._lock:
            self._answers.setdefault(display_name, []).extend([candidate] * times)

    def calls(self, op: str) -> list[Recorded]:
        return [r for r in self.requests if r.op == op]

    @staticmethod
    def caption_for(display_name: str, data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()[:12]
        return f"A clip {display_name} of {len(data)} bytes sha {digest}"

    # --- serving ---------------------------------------------------------------------------

    def _handle(self, h: BaseHTTPRequestHandler, method: str) -> None:
        length = int(h.headers.get("Content-Length") or 0)
        path = h.path.split("?", 1)[0]
        headers = {k.lower(): v for k, v in h.headers.items()}
        op = _op(method, path)
        dropped = self._take_fault(op, drops=True) if op is not None else None
        if dropped is not None and dropped.drop is not None:
            record = Recorded(method, path, headers, b"", at=self.clock())
            with self._lock:
                self.requests.append(record)
            _drop(h, dropped.drop, length)
            return
        body = h.rfile.read(length) if length else b""
        record = Recorded(method, path, headers, body, at=self.clock())
        with self._lock:
            self.requests.append(record)
        if self.hold is not None:
            self.hold(record)
        status, extra, payload = self._route(method, path, record)
        record.status = status
        if isinstance(payload, str):
            raw, kind = payload.encode(), "text/html; charset=UTF-8"
        else:
            raw, kind = json.dumps(payload).encode(), "application/json; charset=UTF-8"
        h.send_response(status)
        h.send_header("Content-Type", kind)
        h.send_header("Content-Length", str(len(raw)))
        for key, value in extra.items():
            h.send_header(key, value)
        h.end_headers()
        h.wfile.write(raw)

    def _take_fault(self, op: str, *, drops: bool) -> Fault | None:
        """The next queued fault of `op`: a dropped connection (`drops`, before the request
        is read) or an error answer (after the key checks, as Google checks the key first)."""
        with self._lock:
            queued = self._faults.get(op) or []
            if not queued or (queued[0].drop is not None) != drops:
                return None
            return queued.pop(0)

    def _route(self, method: str, path: str, req: Recorded) -> Answer:
        op = _op(method, path)
        if op is None or _version(path) not in self.api_versions:
            return 404, {}, _not_found_page(path)
        # The upload URL's session id is the credential there; the SDK sends no key with it.
        key = req.headers.get("x-goog-api-key")
        if op != "upload_chunk" and key in self.denied_keys:
            reason = self.denied_keys[key]
            body = _error(403, "PERMISSION_DENIED", _DENIED.get(reason or "", _LEAKED))
            if reason:
                body["error"]["details"] = [_error_info(reason)]
            return 403, {}, body
        if op != "upload_chunk" and key != self.api_key:
            body = _error(
                400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key."
            )
            body["error"]["details"] = [_error_info("API_KEY_INVALID")]
            return 400, {}, body
        fault = self._take_fault(op, drops=False)
        if fault is not None:
            headers = {"Retry-After": fault.retry_after} if fault.retry_after else {}
            return fault.status, headers, fault.body or _status_body(fault.status, path)
        if op == "generate" and self.quota is not None:
            with self._lock:
                refused = self.quota.admit(_model_of(path))
            if refused is not None:
                return 429, {}, refused
        handler = getattr(self, f"_{op}")
        result: Answer = handler(path, req)
        return result

    def _upload_start(self, path: str, req: Recorded) -> Answer:
        meta = json.loads(req.body or b"{}").get("file", {})
        session = uuid.uuid4().hex
        file = FakeFile(
            id=uuid.uuid4().hex[:12],
            display_name=_field(meta, "displayName")
            or req.headers.get("x-goog-upload-file-name", ""),
            mime_type=req.headers.get("x-goog-upload-header-content-type", ""),
            size=int(req.headers.get("x-goog-upload-header-content-length", "0")),
            session=session,
        )
        with self._lock:
            self.files[file.id] = file
            self._sessions[session] = file.id
        # Google answers with an absolute URL on its own host; the SDK posts the bytes there.
        url = f"{self.base_url}{path}/sessions/{session}?upload_id={session}"
        return 200, {"x-goog-upload-url": url, "x-goog-upload-status": "active"}, {}

    def _upload_chunk(self, path: str, req: Recorded) -> Answer:
        session = path.rsplit("/", 1)[-1]
        if session not in self._sessions:
            return 404, {"x-goog-upload-status": "final"}, _error(404, "NOT_FOUND", "no session")
        with self._lock:
            file = self.files[self._sessions[session]]
            file.data += req.body
            final = "finalize" in req.headers.get("x-goog-upload-command", "")
            file.uploaded = final
        if not final:
            return 200, {"x-goog-upload-status": "active"}, {}
        return 200, {"x-goog-upload-status": "final"}, {"file": self._file_json(file, "PROCESSING")}

    def _get(self, path: str, req: Recorded) -> Answer:
        file = self.files.get(path.rsplit("/", 1)[-1])
        if file is None or file.id in self.deleted:
            return 404, {}, _error(404, "NOT_FOUND", "file not found")
        file.polls += 1
        if file.polls <= self.processing_polls:
            return 200, {}, self._file_json(file, "PROCESSING")
        failure = self.failed_processing.get(file.display_name)
        if failure is not None:
            # A File's `error` is a google.rpc.Status: the numeric gRPC code, not HTTP's.
            return (
                200,
                {},
                {**self._file_json(file, "FAILED"), "error": {"code": 3, "message": failure}},
            )
        return 200, {}, self._file_json(file, "ACTIVE")

    def _delete(self, path: str, req: Recorded) -> Answer:
        file_id = path.rsplit("/", 1)[-1]
        with self._lock:
            if file_id not in self.files or file_id in self.deleted:
                return 404, {}, _error(404, "NOT_FOUND", "file not found")
            self.deleted.append(file_id)
        return 200, {}, {}

    def _generate(self, path: str, req: Recorded) -> Answer:
        if self.latency_s > 0:
            time.sleep(self.latency_s)
        model = _model_of(path)
        self.models_used.append(model)
        payload = json.loads(req.body)
        parts = [p for c in payload.get("contents", []) for p in c.get("parts", [])]
        files = [p for p in parts if _field(p, "fileData")]
        texts = [p["text"] for p in parts if "text" in p]
        if len(files) != 1 or not texts:
            return 400, {}, _error(400, "INVALID_ARGUMENT", "expected one file and a prompt")
        problem = _check_media(files[0], payload)
        if problem is not None:
            return 400, {}, _error(400, "INVALID_ARGUMENT", problem)
        uri = _field(_field(files[0], "fileData"), "fileUri")
        file = self.files.get(str(uri).rsplit("/", 1)[-1])
        if file is None or file.id in self.deleted or not file.uploaded:
            return 400, {}, _error(400, "INVALID_ARGUMENT", "file not found")
        if file.polls <= self.processing_polls:
            return 400, {}, _error(400, "FAILED_PRECONDITION", "file is not in an ACTIVE state")
        reason = self.blocked.get(file.display_name)
        if reason is not None:
            return 200, {}, {"promptFeedback": {"blockReason": reason}, "modelVersion": model}
        with self._lock:
            queued = self._answers.get(file.display_name) or []
            candidate = queued.pop(0) if queued else None
        if candidate is None:
            text = self.caption_for(file.display_name, file.data) + "\n\nIt moves."
            candidate = {
                "content": {"parts": [{"text": text}], "role": "model"},
                "finishReason": "STOP",
                "index": 0,
            }
        return 200, {}, {"candidates": [candidate], "modelVersion": model}

    def _model(self, path: str, req: Recorded) -> Answer:
        model = path.rsplit("/", 1)[-1]
        if self.models is not None and model not in self.models:
            message = (
                f"models/{model} is not found for API version {path.split('/')[1]}, or is not "
                "supported for GetModel. Call ListModels to see the list of available models "
                "and their supported methods."
            )
            return 404, {}, _error(404, "NOT_FOUND", message)
        return (
            200,
            {},
            {
                "name": f"models/{model}",
                "version": "001",
                "displayName": model,
                "description": "A loopback stand-in for a Gemini model",
                "inputTokenLimit": 1048576,
                "outputTokenLimit": 65536,
                "supportedGenerationMethods": ["generateContent", "countTokens"],
                "temperature": 1,
                "topP": 0.95,
                "topK": 64,
                "maxTemperature": 2,
                "thinking": True,
            },
        )

    def _file_json(self, file: FakeFile, state: str) -> Json:
        return {
            "name": file.name,
            "displayName": file.display_name,
            "mimeType": file.mime_type,
            "sizeBytes": str(file.size),
            "uri": f"{self.base_url}/v1beta/{file.name}",
            "state": state,
        }


# --- Google's error bodies -------------------------------------------------------------------


def quota_exceeded(
    *,
    quota_id: str = PER_MINUTE,
    model: str = "gemini-2.5-flash",
    retry_delay: str | None = "37s",
    limit: int = 10,
) -> Json:
    """Gemini's 429 for a request quota: QuotaFailure, Help and (for a quota that comes back
    soon) RetryInfo in `error.details`; the wait is there, not in a Retry-After header."""
    details: list[Json] = [
        {
            "@type": "type.googleapis.com/google.rpc.QuotaFailure",
            "violations": [
                {
                    "quotaMetric": QUOTA_METRIC,
                    "quotaId": quota_id,
                    "quotaDimensions": {"location": "global", "model": model},
                    "quotaValue": str(limit),
                }
            ],
        },
        {
            "@type": "type.googleapis.com/google.rpc.Help",
            "links": [
                {"description": "Learn more about Gemini API quotas", "url": RATE_LIMITS_DOC}
            ],
        },
    ]
    retry = ""
    if retry_delay is not None:
        details.append(
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": retry_delay}
        )
        retry = f"\nPlease retry in {retry_delay}."
    message = (
        "You exceeded your current quota, please check your plan and billing details. For more "
        f"information on this error, head to: {RATE_LIMITS_DOC}. To monitor your current usage, "
        "head to: https://ai.dev/usage?tab=rate-limit. \n* Quota exceeded for metric: "
        f"{QUOTA_METRIC}, limit: {limit}, model: {model}{retry}"
    )
    body = _error(429, "RESOURCE_EXHAUSTED", message)
    body["error"]["details"] = details
    return body


def overloaded() -> Json:
    return _error(503, "UNAVAILABLE", "The model is overloaded. Please try again later.")


def location_unsupported() -> Json:
    """What Gemini answers any call from a region it does not serve."""
    return _error(400, "FAILED_PRECONDITION", "User location is not supported for the API use.")


def _status_body(status: int, path: str) -> Json:
    if status == 429:
        return quota_exceeded(model=_model_of(path) if ":" in path else "gemini-2.5-flash")
    if status == 503:
        return overloaded()
    if status == 500:
        return _error(
            500,
            "INTERNAL",
            "An internal error has occurred. Please retry or report in "
            "https://developers.generativeai.google/guide/troubleshooting",
        )
    names = {
        400: "INVALID_ARGUMENT",
        404: "NOT_FOUND",
        408: "DEADLINE_EXCEEDED",
        504: "DEADLINE_EXCEEDED",
    }
    return _error(status, names.get(status, "UNKNOWN"), "injected fault")


def _not_found_page(path: str) -> str:
    # Google's front end answers a URL no API serves with this page, not a JSON error.
    return (
        "<!DOCTYPE html>\n<html lang=en>\n  <meta charset=utf-8>\n  <title>Error 404 (Not Found)!!1"
        "</title>\n  <p><b>404.</b> <ins>That\u2019s an error.</ins>\n  <p>The requested URL "
        f"<code>{path}</code> was not found on this server.  <ins>That\u2019s all we know.</ins>\n"
    )


_ROUTES = (
    ("POST", re.compile(r"^/upload/[^/]+/files$"), "upload_start"),
    ("POST", re.compile(r"^/upload/[^/]+/files/sessions/[^/]+$"), "upload_chunk"),
    ("GET", re.compile(r"^/[^/]+/files/[^/]+$"), "get"),
    ("DELETE", re.compile(r"^/[^/]+/files/[^/]+$"), "delete"),
    ("POST", re.compile(r"^/[^/]+/models/[^/]+:generateContent$"), "generate"),
    ("GET", re.compile(r"^/[^/]+/models/[^/:]+$"), "model"),
)
# Google's texts for a 403 on a key: by ErrorInfo reason, and for a key reported leaked.
_LEAKED = "Your API key was reported as leaked. Please use another API key."
_DENIED = {
    "API_KEY_SERVICE_BLOCKED": "Requests to this API generativelanguage.googleapis.com method "
    "google.ai.generativelanguage.v1beta.ModelService.GetModel are blocked.",
    "SERVICE_DISABLED": "Generative Language API has not been used in this project before or it "
    "is disabled.",
}


def _op(method: str, path: str) -> str | None:
    for verb, pattern, op in _ROUTES:
        if verb == method and pattern.match(path):
            return op
    return None


def _version(path: str) -> str:
    parts = path.split("/")
    return parts[2] if parts[1:2] == ["upload"] and len(parts) > 2 else parts[1]


def _model_of(path: str) -> str:
    return path.rsplit("/", 1)[-1].split(":", 1)[0]


def _check_media(part: Json, payload: Json) -> str | None:
    """Google's checks of the sampling settings, with its wording."""
    meta = _field(part, "videoMetadata")
    if meta is not None:
        fps = meta.get("fps")
        if fps is not None and not (isinstance(fps, int | float) and 0 < fps <= 24):
            return "* GenerateContentRequest.contents.parts.video_metadata.fps: must be in (0, 24]"
    resolution = _field(_field(payload, "generationConfig") or {}, "mediaResolution")
    if resolution is not None and resolution not in MEDIA_RESOLUTIONS:
        return f"Invalid value at 'generation_config.media_resolution', \"{resolution}\""
    return None


def _drop(h: BaseHTTPRequestHandler, how: str, length: int) -> None:
    h.close_connection = True
    if how == "close":
        h.rfile.read(length)  # the bytes arrive, the answer never does
        return
    # SO_LINGER 0: closing sends RST, which the client reads as ECONNRESET.
    h.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    h.rfile.close()
    h.connection.close()


def _field(obj: Json, camel: str) -> Any:
    """A proto JSON field: Google accepts lowerCamel and snake_case; the SDK sends both."""
    snake = re.sub(r"([A-Z])", lambda m: "_" + m.group(1).lower(), camel)
    return obj.get(camel, obj.get(snake))


def _error_info(reason: str) -> Json:
    return {
        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
        "reason": reason,
        "domain": "googleapis.com",
        "metadata": {"service": "generativelanguage.googleapis.com"},
    }


def _error(code: int, status: str, message: str) -> Json:
    return {"error": {"code": code, "message": message, "status": status}}
