"""A loopback Xet CAS server that the real `hf_xet` client uploads to and downloads from.

It serves the spec's CAS API (huggingface.co/docs/xet/api, auth, upload-protocol,
download-protocol):
- `POST /v1/xorbs/default/{hash}`: the xorb is parsed and its hash recomputed (400 on any
  mismatch or format fault, 64 MiB limit); answers `{"was_inserted": bool}`.
- `POST /v1/shards`: parsed and verified against the stored xorbs (see `store.Store`);
  answers `{"result": 0|1}`. `/v2/shards` and `/v2/reconstructions` answer 404, so the client
  falls back to v1, as the spec allows.
- `GET /v1/reconstructions/{file_id}` (Range `bytes=a-b`; 416 past the end) answers terms and
  `fetch_info` whose URLs point back at this server: `GET /v1/fetch/{xorb}?sig=...` serves the
  xorb's bytes by Range, and only with the signature the reconstruction handed out.
- `GET /v1/chunks/{prefix}/{hash}` (global dedupe) always answers 404: nothing is offered
  for dedupe, which the spec allows.
- Not served (404, after which hf_xet 1.8.0 falls back to the routes above): the upload-grant
  route `POST /v1/xorb-grants/...` (newer than the spec), `/v2/shards`, `/v2/reconstructions`,
  batch reconstruction and multi-range fetches.
- `POST /v1/telemetry` answers 200 and is ignored.
Every route but the fetch URLs needs `Authorization: Bearer <token>` with a token `issue()`d (by
the fake Hub's xet token routes): unknown or expired 401, a read token on an upload route 403.
`fail()`/`drop()` inject faults as `FakeHub.fail`/`drop` do; `requests`/`count()` record calls.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.support.faults import Fault, Faults, InFlight, Seen
from tests.support.xet import hashing
from tests.support.xet.store import Rejected, Store, StoredFile


@dataclass(frozen=True)
class Grant:
    scope: str  # read | write
    expires: int  # unix seconds
    repo: str  # "{type}/{id}", for the record


Reply = tuple[int, bytes, dict[str, str]]


class CasError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class FakeXetCas(Faults):
    """Started by FakeHub (`hub.cas`); usable alone as a context manager."""

    def __init__(self) -> None:
        self.store = Store()
        self.grants: dict[str, Grant] = {}
        self.requests: list[Seen] = []
        self.faults: list[Fault] = []
        self.token_ttl_s = 3600
        self.delay_s = 0.0  # pause before serving xorb bytes (FakeHub.delay_s sets it too)
        self.in_flight = InFlight()  # FakeHub gives its own, so both servers' requests count
        self._secret = secrets.token_bytes(16)
        # hf_xet caches what a CAS holds by its URL, so a later CAS on a reused port would be
        # taken for this one (xorbs "already there", then a shard naming them refused): every
        # instance serves under its own path.
        self.prefix = "/cas-" + secrets.token_hex(8)
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    def __enter__(self) -> FakeXetCas:
        cas = self

        class Handler(_Handler):
            fake = cas

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        self._server = server
        threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    @property
    def url(self) -> str:
        assert self._server is not None, "use FakeXetCas as a context manager"
        return f"http://127.0.0.1:{self._server.server_address[1]}{self.prefix}"

    # -- tokens ------------------------------------------------------------------------------
    def issue(self, scope: str, repo: str, ttl_s: int | None = None) -> tuple[str, int]:
        """A fresh access token for `scope` (read|write): (token, expiry unix seconds)."""
        token = "xet_" + secrets.token_hex(12)
        expires = int(time.time()) + (self.token_ttl_s if ttl_s is None else ttl_s)
        with self._lock:
            self.grants[token] = Grant(scope, expires, repo)
        return token, expires

    def expire_tokens(self) -> None:
        """Every token issued so far expires now (the next CAS call gets 401)."""
        with self._lock:
            self.grants = {t: Grant(g.scope, 0, g.repo) for t, g in self.grants.items()}

    # -- what the routes need ----------------------------------------------------------------
    def _sign(self, xorb_hex: str) -> str:
        return hmac.new(self._secret, xorb_hex.encode(), hashlib.sha256).hexdigest()[:32]

    def reconstruction(self, stored: StoredFile, first: int, last: int) -> dict[str, Any]:
        """The spec's V1 reconstruction of bytes [first, last] (inclusive) of `stored`."""
        picked: list[tuple[bytes, int, int]] = []  # (xorb hash, chunk index, chunk start in file)
        offset = 0
        for term in stored.terms:
            chunks = self.store.xorbs[term.xorb_hash].chunks
            for index in range(term.start, term.end):
                size = len(chunks[index].data)
                if offset <= last and offset + size > first:
                    picked.append((term.xorb_hash, index, offset))
                offset += size
        terms: list[dict[str, Any]] = []
        fetch: dict[str, list[dict[str, Any]]] = {}
        runs: list[list[Any]] = []  # [xorb, start, end]
        for xorb_hash, index, _ in picked:
            if runs and runs[-1][0] == xorb_hash and runs[-1][2] == index:
                runs[-1][2] = index + 1
            else:
                runs.append([xorb_hash, index, index + 1])
        for xorb_hash, start, end in runs:
            chunks = self.store.xorbs[xorb_hash].chunks
            name = hashing.to_hex(xorb_hash)
            terms.append(
                {
                    "hash": name,
                    "unpacked_length": sum(len(c.data) for c in chunks[start:end]),
                    "range": {"start": start, "end": end},
                }
            )
            info = {
                "range": {"start": start, "end": end},
                "url": f"{self.url}/v1/fetch/{name}?sig={self._sign(name)}",
                "url_range": {"start": chunks[start].start, "end": chunks[end - 1].end - 1},
            }
            if info not in fetch.setdefault(name, []):
                fetch[name].append(info)
        return {
            "offset_into_first_range": first - picked[0][2] if picked else 0,
            "terms": terms,
            "fetch_info": fetch,
        }


class _Handler(BaseHTTPRequestHandler):
    fake: FakeXetCas
    protocol_version = "HTTP/1.0"

    def log_message(self, format: str, *args: Any) -> None:
        return

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_HEAD(self) -> None:
        self._handle("HEAD")

    def _handle(self, method: str) -> None:
        split = urlsplit(self.path)
        cas = self.fake
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        if not split.path.startswith(cas.prefix + "/"):  # another CAS's URL (a reused port)
            self._send(404, _json({"error": f"no route for {split.path}"}), {})
            return
        path = split.path[len(cas.prefix) :]
        with cas._lock:
            cas.requests.append(Seen(method, path, "authorization" in self.headers))
        fault = cas._take_fault(method, path)
        if fault is not None and not fault.drop:
            self._send(fault.status, _json({"error": f"injected {fault.status}"}), fault.headers)
            return
        try:
            reply = self._route(method, [s for s in path.split("/") if s], split.query, body)
        except CasError as err:
            reply = err.status, _json({"error": str(err)}), {}
        if fault is not None:  # a drop: applied, answer lost
            self.close_connection = True
            return
        if method == "GET" and path.startswith("/v1/fetch/") and cas.delay_s:
            cas.in_flight.wait(path, cas.delay_s)
        self._send(*reply)

    def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        headers = {"Content-Type": "application/json", **headers}
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _auth(self, scope: str) -> None:
        header = self.headers.get("authorization", "")
        token = header[7:] if header.startswith("Bearer ") else None
        with self.fake._lock:
            grant = self.fake.grants.get(token) if token else None
        if grant is None:
            raise CasError(401, "missing or unknown access token")
        if grant.expires <= time.time():
            raise CasError(401, "access token expired")
        if scope == "write" and grant.scope != "write":
            raise CasError(403, "token does not have the write scope")

    @staticmethod
    def _hash(text: str) -> bytes:
        try:
            if text != text.lower():
                raise ValueError("upper case")
            return hashing.from_hex(text)
        except ValueError as err:
            raise CasError(400, f"malformed hash {text!r}: {err}") from err

    def _route(self, method: str, seg: list[str], query: str, body: bytes) -> Reply:
        store = self.fake.store
        if method == "POST" and seg[:3] == ["v1", "xorbs", "default"] and len(seg) == 4:
            self._auth("write")
            claimed = self._hash(seg[3])
            try:
                with self.fake._lock:
                    inserted = store.add_xorb(claimed, body)
            except Rejected as err:
                raise CasError(400, str(err)) from err
            return 200, _json({"was_inserted": inserted}), {}
        if method == "POST" and seg == ["v1", "shards"]:
            self._auth("write")
            try:
                with self.fake._lock:
                    result = store.add_shard(body)
            except Rejected as err:
                raise CasError(400, str(err)) from err
            return 200, _json({"result": result}), {}
        if method == "GET" and seg[:2] == ["v1", "reconstructions"] and len(seg) == 3:
            self._auth("read")
            return self._reconstruction(self._hash(seg[2]))
        if method == "GET" and seg[:2] == ["v1", "fetch"] and len(seg) == 3:
            return self._fetch(seg[2], parse_qs(query).get("sig", [""])[0])
        if method == "GET" and seg[:2] == ["v1", "chunks"] and len(seg) == 4:
            self._auth("read")
            self._hash(seg[3])
            raise CasError(404, "chunk not tracked by global deduplication")
        if method == "POST" and seg == ["v1", "telemetry"]:
            return 200, b"{}", {}
        raise CasError(404, f"no route for {method} /{'/'.join(seg)}")

    def _range(self, size: int) -> tuple[int, int] | None:
        ranged = self.headers.get("range", "")
        if not ranged:
            return None
        first, sep, last = ranged.removeprefix("bytes=").partition("-")
        if not ranged.startswith("bytes=") or not sep or not first.isdigit():
            raise CasError(400, f"malformed Range {ranged!r}")
        start = int(first)
        if start >= size:
            raise CasError(416, f"range start {start} is past the end ({size} bytes)")
        end = min(int(last), size - 1) if last.isdigit() else size - 1
        if end < start:
            raise CasError(400, f"malformed Range {ranged!r}")
        return start, end

    def _reconstruction(self, file_hash: bytes) -> Reply:
        with self.fake._lock:
            stored = self.fake.store.files.get(file_hash)
        if stored is None:
            raise CasError(404, f"no file {hashing.to_hex(file_hash)}")
        span = self._range(stored.size) or (0, stored.size - 1)
        with self.fake._lock:
            answer = self.fake.reconstruction(stored, *span)
        return 200, _json(answer), {}

    def _fetch(self, name: str, sig: str) -> Reply:
        if not hmac.compare_digest(sig, self.fake._sign(name)):
            raise CasError(403, "bad or missing signature on the fetch URL")
        with self.fake._lock:
            stored = self.fake.store.xorbs.get(self._hash(name))
        if stored is None:
            raise CasError(404, f"no xorb {name}")
        span = self._range(len(stored.raw))
        if span is None:
            return 200, stored.raw, {"Content-Type": "application/octet-stream"}
        start, end = span
        headers = {
            "Content-Type": "application/octet-stream",
            "Content-Range": f"bytes {start}-{end}/{len(stored.raw)}",
        }
        return 206, stored.raw[start : end + 1], headers


def _json(payload: Any) -> bytes:
    return json.dumps(payload).encode()
