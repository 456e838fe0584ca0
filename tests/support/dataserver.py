"""A loopback HTTP server for dataset downloads: files, Range, dropped connections, errors.

    with DataServer() as srv:
        srv.files["/a.zip"] = data
        srv.drop_after["/a.zip"] = [1000]   # the first GET sends 1000 body bytes then closes
        srv.status["/gone"] = 404
        srv.redirects["/old"] = "/a.zip"     # or "ftp://..." to test refused schemes
        srv.chunk_delay_s["/a.zip"] = 0.2    # send the body in `chunk_size` pieces, pausing
        srv.chunk_clock_s["/a.zip"] = 59.0   # ... each piece 59 s later on `srv.clock`
        srv.fail_first["/a.zip"] = [503, 503]  # the next two GETs get 503, then the file
        url = srv.url + "/a.zip"

`srv.clock` is a virtual clock for the client under test (`clock=srv.clock`): a trickle of
hours runs in milliseconds. `drop_after["/a.zip"] = [1] * 50` answers each of 50 GETs (Range
or not) with one byte and a close.

`requests` records (method, path, Range header) of every request. A closed Range
(`bytes=0-0`) gets that slice (206), as real servers answer. A one-byte probe of whether a URL
answers (`Range: bytes=0-0`, what the access check sends) is not a download: it is answered at
once, uses no `drop_after` entry or pacing, and `gets()` leaves it out (`probes()` lists it).
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit


@dataclass
class DataServer:
    files: dict[str, bytes] = field(default_factory=dict)
    status: dict[str, int] = field(default_factory=dict)
    redirects: dict[str, str] = field(default_factory=dict)
    drop_after: dict[str, list[int]] = field(default_factory=dict)  # per GET, bytes then close
    chunk_delay_s: dict[str, float] = field(default_factory=dict)  # a slow link, per path
    chunk_size: int = 256  # the piece sent between two pauses of `chunk_delay_s`
    # Virtual seconds each piece takes, added to `now` before it is sent (so a client reading
    # `clock()` once a piece arrived sees its time); `chunk_delay_s` still paces for real.
    chunk_clock_s: dict[str, float] = field(default_factory=dict)
    now: float = 0.0
    ranges: bool = True
    fail_first: dict[str, list[int]] = field(default_factory=dict)  # statuses for the next GETs
    content_type: str = "application/zip"
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None

    def __enter__(self) -> DataServer:
        owner = self

        class Handler(_Handler):
            server_owner = owner

        self._server = _Quiet(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def clock(self) -> float:
        """The virtual time: moved on only by `chunk_clock_s` pieces."""
        return self.now

    def gets(self, path: str) -> list[str | None]:
        """The Range headers of the downloads (GETs but probes) of `path`, in order (None: no
        Range)."""
        return [r for m, p, r in self.requests if m == "GET" and p == path and r != PROBE]

    def probes(self, path: str) -> int:
        """How many one-byte probes (`Range: bytes=0-0`) `path` got."""
        return sum(1 for m, p, r in self.requests if m == "GET" and p == path and r == PROBE)


PROBE = "bytes=0-0"


class _Quiet(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that hangs up mid-body (a refused web page) is expected here


class _Handler(BaseHTTPRequestHandler):
    server_owner: DataServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        srv = self.server_owner
        path = urlsplit(self.path).path
        rng = self.headers.get("Range")
        srv.requests.append(("GET", path, rng))
        queued = srv.fail_first.get(path)
        if queued:
            self._head(queued.pop(0), {"Content-Length": "0"})
            return
        if path in srv.redirects:
            self._head(302, {"Location": srv.redirects[path], "Content-Length": "0"})
            return
        if path in srv.status:
            self._head(srv.status[path], {"Content-Length": "0"})
            return
        data = srv.files.get(path)
        if data is None:
            self._head(404, {"Content-Length": "0"})
            return
        start = 0
        code = 200
        headers = {"Content-Type": srv.content_type, "ETag": '"v1"'}
        match = re.fullmatch(r"bytes=(\d+)-(\d*)", rng or "")
        end = len(data)
        if srv.ranges and match:
            start = int(match.group(1))
            if match.group(2):
                end = min(int(match.group(2)) + 1, len(data))
            if start >= len(data) and match.group(2):
                self._head(416, {"Content-Range": f"bytes */{len(data)}", "Content-Length": "0"})
                return
            code = 206
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{len(data)}"
        body = data[start:end]
        headers["Content-Length"] = str(len(body))
        self._head(code, headers)
        if rng == PROBE:  # a probe, not a download: no drop, no pacing
            self.wfile.write(body)
            return
        drops = srv.drop_after.get(path)
        if drops:
            cut = drops.pop(0)
            self.wfile.write(body[:cut])
            self.wfile.flush()
            self.close_connection = True
            return
        delay = srv.chunk_delay_s.get(path, 0.0)
        tick = srv.chunk_clock_s.get(path, 0.0)
        if delay > 0 or tick > 0:
            for at in range(0, len(body), max(1, srv.chunk_size)):
                srv.now += tick
                self.wfile.write(body[at : at + max(1, srv.chunk_size)])
                self.wfile.flush()
                time.sleep(delay)
            return
        self.wfile.write(body)

    def _head(self, code: int, headers: dict[str, str]) -> None:
        self.send_response(code)
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
