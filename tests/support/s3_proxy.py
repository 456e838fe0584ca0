"""A loopback proxy in front of moto's S3 server that fails the first multipart part with a real
HTTP 500, and the request's S3 output section pointing at a server."""

from __future__ import annotations

import http.client
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.support.publish_job import CANARY

BUCKET = "loras"


class FailFirstPart:
    """A loopback proxy to moto that answers the first UploadPart with a real HTTP 500."""

    def __init__(self, upstream: str) -> None:
        self.upstream = urlsplit(upstream)
        self.parts = 0
        self.failed = 0
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # answers Expect: 100-continue as botocore asks

            def log_message(self, format: str, *args: Any) -> None:
                return

            def do_GET(self) -> None:
                proxy.forward(self)

            do_PUT = do_POST = do_HEAD = do_DELETE = do_GET

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def forward(self, h: BaseHTTPRequestHandler) -> None:
        body = h.rfile.read(int(h.headers.get("content-length") or 0))
        is_part = h.command == "PUT" and "partNumber" in parse_qs(urlsplit(h.path).query)
        with self._lock:
            self.parts += is_part
            inject = is_part and self.failed == 0
            self.failed += inject
        if inject:
            error = b"<Error><Code>InternalError</Code><Message>injected</Message></Error>"
            h.send_response(500)
            h.send_header("Content-Type", "application/xml")
            h.send_header("Content-Length", str(len(error)))
            h.end_headers()
            h.wfile.write(error)
            return
        conn = http.client.HTTPConnection(
            str(self.upstream.hostname), self.upstream.port, timeout=60
        )
        skip = {"expect", "connection", "keep-alive", "transfer-encoding"}
        headers = {k: v for k, v in h.headers.items() if k.lower() not in skip}
        conn.request(h.command, h.path, body=body, headers=headers)
        response = conn.getresponse()
        data = response.read()
        conn.close()
        h.send_response(response.status)
        for key, value in response.getheaders():
            if key.lower() not in skip | {"content-length"}:
                h.send_header(key, value)
        length = response.getheader("content-length") if h.command == "HEAD" else None
        h.send_header("Content-Length", length or str(len(data)))  # HEAD: the object's size
        h.end_headers()
        if h.command != "HEAD":
            h.wfile.write(data)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def s3_output(endpoint: str, bucket: str = BUCKET) -> dict[str, Any]:
    return {
        "method": "s3",
        "s3": {
            "endpoint_url": endpoint,
            "bucket": bucket,
            "region": "us-east-1",
            "access_key": CANARY["s3_access"],
            "secret_key": CANARY["s3_secret"],
            "key_prefix": "runs/",
        },
    }
