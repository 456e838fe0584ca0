"""Loopback stand-ins for the temporary file hosts that `output.method: auto` falls back to.

One HTTP server, three routes speaking each service's public upload API:
- `POST /litterbox/resources/internals/api.php`, multipart `reqtype`, `time`, `fileToUpload`
  → a plain-text URL (litterbox.catbox.moe);
- `PUT /transfer/<name>` with the raw bytes → a plain-text URL (transfer.sh);
- `POST /fileio/`, multipart `file` → JSON `{"success", "link", "expires"}` (file.io).
`fail(service, status)` makes a service answer an error; every received upload is kept
(service, form fields, file name, bytes) so tests can check what arrived.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

SERVICES = ("litterbox", "transfer", "fileio")


@dataclass
class Upload:
    service: str
    name: str
    data: bytes
    fields: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)


class FakeUploads:
    def __init__(self) -> None:
        self.uploads: list[Upload] = []
        self.requests: list[tuple[str, str]] = []  # (service, method)
        self.failing: dict[str, int] = {}
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    def __enter__(self) -> FakeUploads:
        fake = self

        class Handler(_Handler):
            uploads = fake

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, args=(0.02,), daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def litterbox_url(self) -> str:
        return f"{self.url}/litterbox/resources/internals/api.php"

    @property
    def transfer_url(self) -> str:
        return f"{self.url}/transfer"

    @property
    def fileio_url(self) -> str:
        return f"{self.url}/fileio/"

    def fail(self, service: str, status: int) -> None:
        """From now on, answer `service`'s uploads with `status`."""
        assert service in SERVICES
        self.failing[service] = status

    def seen(self, service: str) -> int:
        with self._lock:
            return sum(1 for s, _ in self.requests if s == service)


def _multipart(
    content_type: str, body: bytes
) -> tuple[dict[str, str], tuple[str, str, bytes] | None]:
    """(text fields, (part name, file name, bytes) of the file part) of a multipart body."""
    message = BytesParser(policy=HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body
    )
    fields: dict[str, str] = {}
    file: tuple[str, str, bytes] | None = None
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        assert isinstance(payload, bytes)
        filename = part.get_filename()
        if filename is not None:
            file = (str(name), filename, payload)
        else:
            fields[str(name)] = payload.decode()
    return fields, file


class _Handler(BaseHTTPRequestHandler):
    uploads: FakeUploads
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        return

    def do_POST(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()

    def _reply(self, status: int, body: bytes, ctype: str = "text/plain") -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _handle(self) -> None:
        fake = self.uploads
        service = self.path.strip("/").split("/")[0]
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length)  # the clients send a Content-Length; read it all
        with fake._lock:
            fake.requests.append((service, self.command))
        if service not in SERVICES:
            self._reply(404, b"not found")
            return
        status = fake.failing.get(service)
        if status is not None:
            self._reply(status, f"{service} is unavailable".encode())
            return
        headers = {k.lower(): v for k, v in self.headers.items()}
        if service == "transfer" and self.command == "PUT":
            name = self.path.rsplit("/", 1)[-1]
            upload = Upload(service, name, body, headers=headers)
        elif self.command == "POST":
            fields, file = _multipart(self.headers.get("content-type", ""), body)
            key = "fileToUpload" if service == "litterbox" else "file"
            if file is None or file[0] != key:
                self._reply(400, b"no file part named " + key.encode())
                return
            if service == "litterbox" and fields.get("reqtype") != "fileupload":
                self._reply(400, b"reqtype must be fileupload")
                return
            upload = Upload(service, file[1], file[2], fields=fields, headers=headers)
        else:
            self._reply(405, b"method not allowed")
            return
        with fake._lock:
            fake.uploads.append(upload)
            n = len(fake.uploads)
        link = f"https://{service}.example/{n}/{upload.name}"
        if service == "fileio":
            payload = {"success": True, "link": link, "expires": "2099-01-01T00:00:00Z"}
            self._reply(200, json.dumps(payload).encode(), "application/json")
        else:
            self._reply(200, link.encode() + b"\n")
