"""A loopback Gemini API: the REST calls google-genai makes for video captioning, nothing more.

Calls (paths as the SDK builds them from `base_url`, any API version):

- `POST /upload/{v}/files` with `X-Goog-Upload-Command: start`: answers with an absolute
  `x-goog-upload-url` header, which the SDK then posts the bytes to;
- `POST /upload/{v}/files/sessions/{id}` with `X-Goog-Upload-Command: upload, finalize` and the
  bytes: answers `x-goog-upload-status: final` and `{"file": File}` in state PROCESSING;
- `GET /{v}/files/{id}`: the File, PROCESSING for the first `processing_polls` reads, then ACTIVE;
- `DELETE /{v}/files/{id}`: `{}`;
- `POST /{v}/models/{model}:generateContent`: a caption naming the file and the bytes received,
  or a prompt-feedback block for display names in `blocked`;
- `GET /{v}/models/{model}` (`client.models.get`): the model's description, or Google's 404
  NOT_FOUND for a model not in `models` (None: every model exists).

Every call but the upload of the bytes checks the `x-goog-api-key` header and is recorded: a
key in `denied_keys` gets Google's 403 PERMISSION_DENIED (with its ErrorInfo reason, e.g.
API_KEY_SERVICE_BLOCKED, or none, as for a key reported leaked), any other wrong key the 400
INVALID_ARGUMENT / API_KEY_INVALID body. `fail(op, status, retry_after=..., times=n)` queues
errors for one operation.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Json = dict[str, Any]


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    status: int = 0


@dataclass
class FakeFile:
    id: str
    display_name: str
    mime_type: str
    size: int
    data: bytes = b""
    polls: int = 0
    uploaded: bool = False

    @property
    def name(self) -> str:
        return f"files/{self.id}"


@dataclass
class Fault:
    status: int
    retry_after: str | None = None


@dataclass
class FakeGemini:
    api_key: str
    processing_polls: int = 1
    blocked: dict[str, str] = field(default_factory=dict)  # display name -> block reason
    models: set[str] | None = None  # the models `models.get` knows (None: any)
    denied_keys: dict[str, str | None] = field(default_factory=dict)  # key -> 403 reason
    requests: list[Recorded] = field(default_factory=list)
    files: dict[str, FakeFile] = field(default_factory=dict)
    deleted: list[str] = field(default_factory=list)
    models_used: list[str] = field(default_factory=list)
    _faults: dict[str, list[Fault]] = field(default_factory=dict)
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

    def fail(self, op: str, status: int, *, retry_after: str | None = None, times: int = 1) -> None:
        """Answer the next `times` calls of `op` (upload_start, get, delete, generate) with
        `status`."""
        with self._lock:
            self._faults.setdefault(op, []).extend([Fault(status, retry_after)] * times)

    def calls(self, op: str) -> list[Recorded]:
        return [r for r in self.requests if _op(r.method, r.path) == op]

    @staticmethod
    def caption_for(display_name: str, data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()[:12]
        return f"A clip {display_name} of {len(data)} bytes sha {digest}"

    # --- serving ---------------------------------------------------------------------------

    def _handle(self, h: BaseHTTPRequestHandler, method: str) -> None:
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else b""
        path = h.path.split("?", 1)[0]
        record = Recorded(method, path, {k.lower(): v for k, v in h.headers.items()}, body)
        with self._lock:
            self.requests.append(record)
        status, headers, payload = self._route(method, path, record)
        record.status = status
        raw = json.dumps(payload).encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/json; charset=UTF-8")
        h.send_header("Content-Length", str(len(raw)))
        for key, value in headers.items():
            h.send_header(key, value)
        h.end_headers()
        h.wfile.write(raw)

    def _route(self, method: str, path: str, req: Recorded) -> tuple[int, dict[str, str], Json]:
        op = _op(method, path)
        if op is None:
            return 404, {}, _error(404, "NOT_FOUND", f"no such call {method} {path}")
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
        with self._lock:
            queued = self._faults.get(op) or []
            fault = queued.pop(0) if queued else None
        if fault is not None:
            headers = {"Retry-After": fault.retry_after} if fault.retry_after else {}
            status_name = "RESOURCE_EXHAUSTED" if fault.status == 429 else "INTERNAL"
            return fault.status, headers, _error(fault.status, status_name, "injected fault")
        handler = getattr(self, f"_{op}")
        result: tuple[int, dict[str, str], Json] = handler(path, req)
        return result

    def _upload_start(self, path: str, req: Recorded) -> tuple[int, dict[str, str], Json]:
        meta = json.loads(req.body or b"{}").get("file", {})
        file = FakeFile(
            id=uuid.uuid4().hex[:12],
            display_name=_field(meta, "displayName")
            or req.headers.get("x-goog-upload-file-name", ""),
            mime_type=req.headers.get("x-goog-upload-header-content-type", ""),
            size=int(req.headers.get("x-goog-upload-header-content-length", "0")),
        )
        session = uuid.uuid4().hex
        with self._lock:
            self.files[file.id] = file
            self._sessions[session] = file.id
        # Google answers with an absolute URL on its own host; the SDK posts the bytes there.
        url = f"{self.base_url}{path}/sessions/{session}?upload_id={session}"
        return 200, {"x-goog-upload-url": url, "x-goog-upload-status": "active"}, {}

    def _upload_chunk(self, path: str, req: Recorded) -> tuple[int, dict[str, str], Json]:
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

    def _get(self, path: str, req: Recorded) -> tuple[int, dict[str, str], Json]:
        file = self.files.get(path.rsplit("/", 1)[-1])
        if file is None or file.id in self.deleted:
            return 404, {}, _error(404, "NOT_FOUND", "file not found")
        file.polls += 1
        state = "ACTIVE" if file.polls > self.processing_polls else "PROCESSING"
        return 200, {}, self._file_json(file, state)

    def _delete(self, path: str, req: Recorded) -> tuple[int, dict[str, str], Json]:
        file_id = path.rsplit("/", 1)[-1]
        with self._lock:
            if file_id not in self.files or file_id in self.deleted:
                return 404, {}, _error(404, "NOT_FOUND", "file not found")
            self.deleted.append(file_id)
        return 200, {}, {}

    def _generate(self, path: str, req: Recorded) -> tuple[int, dict[str, str], Json]:
        model = path.rsplit("/", 1)[-1].split(":", 1)[0]
        self.models_used.append(model)
        payload = json.loads(req.body)
        parts = [p for c in payload.get("contents", []) for p in c.get("parts", [])]
        uris = [_field(_field(p, "fileData"), "fileUri") for p in parts if _field(p, "fileData")]
        texts = [p["text"] for p in parts if "text" in p]
        if len(uris) != 1 or not texts:
            return 400, {}, _error(400, "INVALID_ARGUMENT", "expected one file and a prompt")
        file = self.files.get(uris[0].rsplit("/", 1)[-1])
        if file is None or file.id in self.deleted or not file.uploaded:
            return 400, {}, _error(400, "INVALID_ARGUMENT", "file not found")
        if file.polls <= self.processing_polls:
            return 400, {}, _error(400, "FAILED_PRECONDITION", "file is not in an ACTIVE state")
        reason = self.blocked.get(file.display_name)
        if reason is not None:
            return 200, {}, {"promptFeedback": {"blockReason": reason}, "modelVersion": model}
        text = self.caption_for(file.display_name, file.data) + "\n\nIt moves."
        return (
            200,
            {},
            {
                "candidates": [
                    {
                        "content": {"parts": [{"text": text}], "role": "model"},
                        "finishReason": "STOP",
                        "index": 0,
                    }
                ],
                "modelVersion": model,
            },
        )

    def _model(self, path: str, req: Recorded) -> tuple[int, dict[str, str], Json]:
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


def _field(obj: Json, camel: str) -> Any:
    """A proto JSON field: Google accepts lowerCamel and snake_case; the SDK sends the latter."""
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
