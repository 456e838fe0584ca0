"""A loopback Hugging Face Hub that the real `huggingface_hub` client can talk to.

It speaks the slice of the wire protocol in reference/hub-and-eventsourcing.md §2: repo
create/info, recursive tree listing and `paths-info`, preupload, NDJSON commits (412 on a stale
`parentCommit`), and `resolve` downloads with `X-Repo-Commit`, `ETag`, `Content-Length` and Range.

Xet, as on the real Hub (on by default; `FakeHub(xet=False)` answers `regular` for every file):
preupload answers `lfs` for a file the repo's `.gitattributes` marks `filter=lfs` (the Hub's
default patterns when it has none), one of 10 MiB or more, or one whose 512-byte sample is
binary (a NUL byte, or not UTF-8); `GET /api/{t}s/{id}/xet-write-token/{rev}` and
`xet-read-token/{rev}` issue tokens for the loopback CAS `hub.cas` (tests/support/xet), as JSON
(`accessToken`, `exp`, `casUrl`) and as `X-Xet-*` headers; a commit's `lfsFile` line must name
the SHA-256 of a file the CAS holds (else 400, as the Hub refuses an unknown LFS object); resolve
answers an Xet file with `X-Xet-Hash`, `Link: <...xet-read-token...>; rel="xet-auth"`,
`X-Linked-Size` and `X-Linked-ETag` (GET still serves the bytes), and tree/paths-info entries
carry `lfs` and `xetHash`. `add_repo` stores such files in the CAS (chunked as the spec says),
so downloads of seeded weights go through Xet.

A private repo answers 401 `RepoNotFound` to a request without a token or from a user other
than its namespace or creator (as the Hub hides it); commit listings page `commits_page_size`
entries at a time with a `Link: <...?p=N>; rel="next"` header.

Errors carry the `X-Error-Code` headers the client maps to exceptions. Repos live in memory as
commit sha -> {path: bytes}; file oids are git blob SHA-1s, so the client's no-op detection
works. Every request is recorded for counting, and `fail()` injects faults (409/429/5xx) for
retry tests; `drop()` applies a request and then closes the connection without answering (a
response lost after the commit landed). Commits keep their title, description and parent, listed
by `GET /api/{t}/{id}/commits/{rev}`, and `GET /api/whoami-v2` names the token's user (`users`,
else `whoami_name`); `POST /api/validate-yaml` (the README check create_commit makes) only
checks the front matter closes. `hang()` accepts matching requests and answers none until
`release()` (a Hub that hangs); `down()` stops listening, so connections are refused, until
`up()` (a Hub that is down).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from fnmatch import fnmatch
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

from tests.support.faults import Fault, Faults, InFlight, Seen
from tests.support.xet import FakeXetCas
from tests.support.xet.hashing import to_hex

PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}
API_TYPE = {"models": "model", "datasets": "dataset", "spaces": "space"}
LFS_MIN_SIZE = 10 * 1024 * 1024  # the Hub sends files this large to LFS/Xet whatever their name
# The `filter=lfs` patterns of the .gitattributes the Hub writes into a new repo (the fake uses
# them for a repo that has no .gitattributes of its own).
DEFAULT_LFS_PATTERNS = (
    "*.7z", "*.arrow", "*.bin", "*.bz2", "*.ckpt", "*.ftz", "*.gz", "*.h5", "*.joblib",
    "*.lfs.*", "*.mlmodel", "*.model", "*.msgpack", "*.npy", "*.npz", "*.onnx", "*.ot",
    "*.parquet", "*.pb", "*.pickle", "*.pkl", "*.pt", "*.pth", "*.rar", "*.safetensors",
    "saved_model/**/*", "*.tar.*", "*.tar", "*.tflite", "*.tgz", "*.wasm", "*.xz", "*.zip",
    "*.zst", "*tfevents*",
)  # fmt: skip


@functools.lru_cache(maxsize=256)  # the real Hub answers from stored metadata, not by hashing
def git_oid(data: bytes) -> str:
    """The git blob SHA-1 the Hub reports as a regular file's `oid`."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


@dataclass(frozen=True)
class Scope:
    """One entry of a fine-grained token's `scoped` list: an entity and what the token may do."""

    name: str  # a user or org name, or a repo id
    permissions: tuple[str, ...] = ("repo.content.read", "repo.write")
    type: str = "user"  # user | org | model | dataset | space


@dataclass(frozen=True)
class Token:
    """What the Hub knows of a token (`FakeHub.tokens`)."""

    user: str = "fake-user"
    role: str = "write"  # read | write | fineGrained
    scoped: tuple[Scope, ...] = ()  # fineGrained only

    def may_write(self, repo_id: str) -> bool:
        if self.role == "write":
            return True
        namespace = repo_id.split("/", 1)[0]
        return self.role == "fineGrained" and any(
            "repo.write" in s.permissions and s.name in (namespace, repo_id) for s in self.scoped
        )

    def access_token(self) -> dict[str, Any]:
        """whoami's `auth.accessToken`, shaped as the Hub answers it."""
        info: dict[str, Any] = {
            "displayName": "fake-token",
            "role": self.role,
            "createdAt": "2026-01-01T00:00:00.000Z",
        }
        if self.role == "fineGrained":
            info["fineGrained"] = {
                "canReadGatedRepos": False,
                "global": [],
                "scoped": [
                    {
                        "entity": {"_id": f"id-{s.name}", "type": s.type, "name": s.name},
                        "permissions": list(s.permissions),
                    }
                    for s in self.scoped
                ],
            }
        return info


@dataclass
class Repo:
    repo_id: str
    repo_type: str = "model"
    private: bool = False
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    # sha -> {"title", "message", "parent", "date"}, for the commits listing
    meta: dict[str, dict[str, str]] = field(default_factory=dict)
    gated_tokens: frozenset[str] | None = None  # None: not gated; else tokens allowed in
    # sha -> {path: sha256 hex} of the files stored as Xet (LFS) files in that commit
    lfs: dict[str, dict[str, str]] = field(default_factory=dict)
    members: frozenset[str] = frozenset()  # users who see it when private (namespace, creator)

    def resolve(self, rev: str) -> str | None:
        """A branch name or a full commit sha -> the commit sha, or None."""
        return self.branches.get(rev) or (rev if rev in self.commits else None)


@dataclass
class Hang:
    """Requests held unanswered until `released` is set (`FakeHub.hang`)."""

    method: str | None
    path_contains: str | None
    body_contains: bytes | None
    released: threading.Event = field(default_factory=threading.Event)
    held: int = 0  # requests waiting on it now


Reply = tuple[int, bytes, dict[str, str], str]  # status, body, headers, content type


class HubError(Exception):
    def __init__(self, status: int, code: str | None, message: str, commit: str = "") -> None:
        super().__init__(message)
        self.status, self.code, self.commit = status, code, commit


class FakeHub(Faults):
    """Start with `with FakeHub() as hub:`; point the client at `hub.url`. `xet=False`: no
    Xet (every file `regular`, no CAS), for a test that must not depend on it."""

    def __init__(self, *, xet: bool = True) -> None:
        self.xet = xet
        self._cas = FakeXetCas() if xet else None
        self.commits_page_size = 50  # commits per page of `GET .../commits/{rev}`
        self.repos: dict[tuple[str, str], Repo] = {}
        self.requests: list[Seen] = []
        self.faults: list[Fault] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._commit_no = 0
        self._delay_s = 0.0
        self.in_flight = InFlight()  # the delayed requests answered at once (both servers)
        if self._cas is not None:
            self._cas.in_flight = self.in_flight
        self.users: dict[str, str] = {}  # token -> user name, for whoami
        self.whoami_name = "fake-user"  # the user of any other token
        self.tokens: dict[str, Token] = {}  # token -> its user and role (others: write)
        self.refused_tokens: set[str] = set()  # 401 on every call that sends one
        self.hangs: list[Hang] = []

    # -- lifecycle ---------------------------------------------------------------------------
    def __enter__(self) -> FakeHub:
        hub = self

        class Handler(_Handler):
            fake = hub

        if self._cas is not None:
            self._cas.__enter__()
        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        self._server = server
        # A short poll interval: shutdown() waits for it, once per test.
        threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()  # held handler threads answer and end
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._cas is not None:
            self._cas.__exit__()

    @property
    def delay_s(self) -> float:
        """Pause before sending file content (resolve GETs and CAS xorb fetches): widens races
        in lock tests."""
        return self._delay_s

    @delay_s.setter
    def delay_s(self, value: float) -> None:
        self._delay_s = value
        if self._cas is not None:
            self._cas.delay_s = value

    @property
    def cas(self) -> FakeXetCas:
        """The loopback Xet CAS the xet token routes point at."""
        assert self._cas is not None, "FakeHub(xet=False) has no CAS"
        return self._cas

    @property
    def url(self) -> str:
        assert self._server is not None, "use FakeHub as a context manager"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    # -- seeding and inspection --------------------------------------------------------------
    def add_repo(
        self,
        repo_id: str,
        files: dict[str, bytes] | None = None,
        *,
        repo_type: str = "model",
        gated_tokens: set[str] | None = None,
        private: bool = False,
    ) -> str:
        """Create (or replace) a repo with one commit holding `files`; return its sha. With
        Xet on, files the Hub would send to LFS are stored in the CAS as Xet files."""
        gated = frozenset(gated_tokens) if gated_tokens is not None else None
        files = dict(files or {})
        with self._lock:
            repo = Repo(
                repo_id,
                repo_type,
                private=private,
                gated_tokens=gated,
                members=frozenset({repo_id.split("/", 1)[0]}),
            )
            self.repos[(repo_type, repo_id)] = repo
            lfs: dict[str, str] = {}
            if self._cas is not None:
                with self._cas._lock:
                    for path, data in files.items():
                        if data and wants_lfs(files, repo_type, path, len(data), data[:512]):
                            lfs[path] = self._cas.store.ingest(data).sha256
            return self._commit(repo, "main", files, lfs=lfs)

    def xet_paths(
        self, repo_id: str, revision: str = "main", repo_type: str = "model"
    ) -> dict[str, str]:
        """{path: sha256} of the files stored as Xet files at `revision`."""
        repo = self.repos[(repo_type, repo_id)]
        sha = repo.resolve(revision)
        assert sha is not None, f"no revision {revision} in {repo_id}"
        return dict(repo.lfs.get(sha, {}))

    def files(
        self, repo_id: str, revision: str = "main", repo_type: str = "model"
    ) -> dict[str, bytes]:
        repo = self.repos[(repo_type, repo_id)]
        sha = repo.resolve(revision)
        assert sha is not None, f"no revision {revision} in {repo_id}"
        return dict(repo.commits[sha])

    def hang(
        self,
        *,
        method: str | None = None,
        path_contains: str | None = None,
        body_contains: bytes | None = None,
    ) -> None:
        """Accept matching requests (all, by default) and answer none until `release()`, as a
        Hub that hangs; then they are served as usual (a very slow answer)."""
        with self._lock:
            self.hangs.append(Hang(method, path_contains, body_contains))

    def release(self) -> None:
        """End every `hang()`: held requests are answered now, later ones at once."""
        with self._lock:
            hangs, self.hangs = self.hangs, []
        for hang in hangs:
            hang.released.set()

    @property
    def held(self) -> int:
        """Requests held unanswered by `hang()` right now."""
        with self._lock:
            return sum(h.held for h in self.hangs)

    def down(self) -> None:
        """Stop listening: every new connection is refused (a Hub that is down) until `up()`."""
        assert self._server is not None, "use FakeHub as a context manager"
        self._server.shutdown()
        self._server.server_close()

    def up(self) -> None:
        """Listen again, on the same port, after `down()`; the repos are as they were."""
        old = self._server
        assert old is not None, "use FakeHub as a context manager"
        server = ThreadingHTTPServer(old.server_address[:2], old.RequestHandlerClass)
        server.daemon_threads = True
        self._server = server
        threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True).start()

    def commits(self, repo_id: str, repo_type: str = "model") -> list[dict[str, str]]:
        """The commits of `main`, newest first: {"id", "title", "message"}."""
        with self._lock:
            repo = self.repos[(repo_type, repo_id)]
            return [
                {"id": sha, "title": meta["title"], "message": meta["message"]}
                for sha, meta in _history(repo, repo.branches["main"])
            ]

    def downloads(self) -> int:
        """File-content fetches: GETs on a resolve URL, plus the CAS reconstructions a Xet
        download asks for instead (one per file the real client fetches through Xet)."""
        xet = self._cas.count("GET", "/v1/reconstructions/") if self._cas is not None else 0
        return self.count("GET", "/resolve/") + xet

    # -- internals ---------------------------------------------------------------------------
    def _commit(
        self,
        repo: Repo,
        branch: str,
        files: dict[str, bytes],
        title: str = "initial commit",
        message: str = "",
        lfs: dict[str, str] | None = None,
    ) -> str:
        self._commit_no += 1
        seed = f"{repo.repo_type}/{repo.repo_id}/{branch}/{self._commit_no}".encode()
        sha = hashlib.sha1(seed, usedforsecurity=False).hexdigest()
        repo.meta[sha] = {
            "title": title,
            "message": message,
            "parent": repo.branches.get(branch, ""),
            "date": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
        }
        repo.commits[sha] = files
        repo.lfs[sha] = dict(lfs or {})
        repo.branches[branch] = sha
        return sha

    def _hold(self, method: str, path: str, body: bytes) -> None:
        """Block a request that a `hang()` matches until it is released."""
        with self._lock:
            hang = next(
                (
                    h
                    for h in self.hangs
                    if h.method in (None, method)
                    and (h.path_contains or "") in path
                    and (h.body_contains is None or h.body_contains in body)
                ),
                None,
            )
            if hang is None:
                return
            hang.held += 1
        hang.released.wait()
        with self._lock:
            hang.held -= 1


class _Handler(BaseHTTPRequestHandler):
    fake: FakeHub
    protocol_version = "HTTP/1.0"  # one request per connection: simple and good enough

    def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
        return

    def do_GET(self) -> None:
        self._handle("GET")

    def do_HEAD(self) -> None:
        self._handle("HEAD")

    def do_POST(self) -> None:
        self._handle("POST")

    # -- plumbing ----------------------------------------------------------------------------
    def _handle(self, method: str) -> None:
        split = urlsplit(self.path)
        raw = [s for s in split.path.split("/") if s]
        path = "/" + "/".join(unquote(s) for s in raw)
        hub = self.fake
        with hub._lock:
            hub.requests.append(Seen(method, path, "authorization" in self.headers))
        body = self._body() if method == "POST" else b""
        hub._hold(method, path, body)
        fault = hub._take_fault(method, path)
        if fault is not None and not fault.drop:
            self._json(fault.status, {"error": f"injected {fault.status}"}, fault.headers)
            return
        if self._token() in hub.refused_tokens:  # the Hub refuses a bad token on any route
            self._json(401, {"error": "Invalid credentials in Authorization header"})
            return
        try:
            with hub._lock:  # state changes under the lock; bytes are sent outside it
                reply = self._route(method, [unquote(s) for s in raw], parse_qs(split.query), body)
            if fault is not None:  # a drop: the change is made, the answer is lost
                self.close_connection = True
                return
            if method == "GET" and "/resolve/" in path and hub.delay_s:
                hub.in_flight.wait(path, hub.delay_s)
            self._send(*reply)
        except HubError as err:
            headers = {"X-Error-Message": str(err)}
            if err.code:
                headers["X-Error-Code"] = err.code
            if err.commit:
                headers["X-Repo-Commit"] = err.commit
            self._json(err.status, {"error": str(err)}, headers)

    def _body(self) -> bytes:
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            out = bytearray()  # the client streams NDJSON commits chunked
            while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                out += self.rfile.read(size)
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                pass
            return bytes(out)
        return self.rfile.read(int(self.headers.get("content-length") or 0))

    def _send(self, status: int, body: bytes, headers: dict[str, str], ctype: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        self._send(*_json(status, payload, headers))

    def _token(self) -> str | None:
        auth = self.headers.get("authorization", "")
        return auth[7:] if auth.startswith("Bearer ") else None

    def _may_write(self, repo_id: str, doing: str) -> None:
        """403 for a token without write access to `repo_id`, as the Hub answers."""
        token = self._token()
        info = self.fake.tokens.get(token) if token is not None else None
        if info is not None and not info.may_write(repo_id):
            namespace = repo_id.split("/", 1)[0]
            raise HubError(
                403,
                None,
                f'You don\'t have the rights to {doing} under the namespace "{namespace}"',
            )

    def _user(self) -> str | None:
        """The user the request's token belongs to (None: no token)."""
        token = self._token()
        if token is None:
            return None
        info = self.fake.tokens.get(token)
        return info.user if info is not None else self.fake.users.get(token, self.fake.whoami_name)

    def _repo(self, repo_type: str, repo_id: str) -> Repo:
        repo = self.fake.repos.get((repo_type, repo_id))
        # The Hub answers 401 for unknown repos, and for private ones the caller may not see.
        if repo is None or (repo.private and self._user() not in repo.members):
            raise HubError(401, "RepoNotFound", f"Repository Not Found for {repo_id}")
        return repo

    def _gate(self, repo: Repo) -> None:
        if repo.gated_tokens is not None and self._token() not in repo.gated_tokens:
            status = 401 if self._token() is None else 403
            raise HubError(
                status,
                "GatedRepo",
                f"Access to model {repo.repo_id} is restricted. You must have access to it "
                "and be authenticated to access it. Please log in.",
            )

    def _api_url(self, repo: Repo) -> str:
        return f"{self.fake.url}/api/{repo.repo_type}s/{repo.repo_id}"

    @staticmethod
    def _sha(repo: Repo, rev: str) -> str:
        sha = repo.resolve(rev)
        if sha is None:
            raise HubError(404, "RevisionNotFound", f"Invalid rev id: {rev}")
        return sha

    # -- routes ------------------------------------------------------------------------------
    def _route(
        self, method: str, seg: list[str], query: dict[str, list[str]], body: bytes
    ) -> Reply:
        if seg[:2] == ["api", "whoami-v2"] and method == "GET":
            return self._whoami()
        if seg[:2] == ["api", "validate-yaml"] and method == "POST":
            return self._validate_yaml(json.loads(body or b"{}"))
        if seg[:3] == ["api", "repos", "create"] and method == "POST":
            return self._create(json.loads(body or b"{}"))
        if len(seg) >= 4 and seg[0] == "api" and seg[1] in API_TYPE:
            repo = self._repo(API_TYPE[seg[1]], f"{seg[2]}/{seg[3]}")
            return self._api(method, repo, seg[4:], query, body)
        kind = "model"
        if seg and seg[0] in ("datasets", "spaces"):
            kind, seg = API_TYPE[seg[0]], seg[1:]
        if len(seg) >= 5 and seg[2] == "resolve" and method in ("GET", "HEAD"):
            repo = self._repo(kind, f"{seg[0]}/{seg[1]}")
            return self._resolve(repo, seg[3], "/".join(seg[4:]))
        raise HubError(404, None, f"no route for {method} /{'/'.join(seg)}")

    def _create(self, req: dict[str, Any]) -> Reply:
        if self._token() is None:
            raise HubError(401, None, "Invalid credentials in Authorization header")
        repo_type = req.get("type") or "model"
        repo_id = f"{req['organization']}/{req['name']}" if req.get("organization") else req["name"]
        self._may_write(repo_id, f"create a {repo_type}")
        url = f"{self.fake.url}/{PREFIX[repo_type]}{repo_id}"
        if (repo_type, repo_id) in self.fake.repos:  # its visibility stays as it is
            return _json(409, {"error": "You already created this repo", "url": url})
        private = req.get("visibility") == "private" or req.get("private") is True
        members = frozenset({repo_id.split("/", 1)[0], self._user() or ""})
        repo = Repo(repo_id, repo_type, private=private, members=members)
        self.fake.repos[(repo_type, repo_id)] = repo
        self.fake._commit(repo, "main", {})
        return _json(200, {"url": url, "name": repo_id})

    @staticmethod
    def _validate_yaml(req: dict[str, Any]) -> Reply:
        """The README metadata check create_commit makes: front matter must be closed."""
        content = str(req.get("content", ""))
        if content.startswith("---") and "\n---" not in content[3:]:
            return _json(400, {"errors": [{"message": "unterminated YAML front matter"}]})
        return _json(200, {"errors": [], "warnings": []})

    def _whoami(self) -> Reply:
        token = self._token()
        if token is None:
            raise HubError(401, None, "Invalid credentials in Authorization header")
        info = self.fake.tokens.get(token)
        name = info.user if info is not None else self.fake.users.get(token, self.fake.whoami_name)
        access = (info or Token(user=name)).access_token()
        auth = {"type": "access_token", "accessToken": access}
        return _json(200, {"type": "user", "name": name, "orgs": [], "auth": auth})

    def _api(
        self, method: str, repo: Repo, rest: list[str], query: dict[str, list[str]], body: bytes
    ) -> Reply:
        action = rest[0] if rest else "revision"
        rev = rest[1] if len(rest) > 1 else "main"
        if method == "GET" and action == "revision":
            sha = self._sha(repo, rev)
            return _json(200, self._info(repo, sha))
        if method == "GET" and action == "tree":
            sha = self._sha(repo, rev)
            recursive = query.get("recursive", ["false"])[0].lower() == "true"
            entries = _tree(repo.commits[sha], "/".join(rest[2:]), recursive)
            return _json(200, [self._lfs_entry(repo, sha, e) for e in entries])
        if method == "POST" and action == "paths-info":
            return self._paths_info(repo, self._sha(repo, rev), body)
        if method == "POST" and action == "preupload":
            self._may_write(repo.repo_id, f"write to a {repo.repo_type}")
            return self._preupload(repo, self._sha(repo, rev), json.loads(body)["files"])
        if method == "POST" and action == "commit":
            return self._commit_ndjson(repo, rev, body)
        if method == "GET" and action == "commits":
            return self._commits_page(repo, rev, query)
        if method == "GET" and action in ("xet-write-token", "xet-read-token") and self.fake.xet:
            return self._xet_token(repo, action == "xet-write-token")
        raise HubError(404, None, f"no route for {method} {action}")

    def _preupload(self, repo: Repo, sha: str, wanted: list[dict[str, Any]]) -> Reply:
        files, lfs = repo.commits[sha], repo.lfs.get(sha, {})
        answer = []
        for f in wanted:
            path = f["path"]
            sample = base64.b64decode(f.get("sample") or "")
            mode = (
                "lfs"
                if self.fake.xet and wants_lfs(files, repo.repo_type, path, f["size"], sample)
                else "regular"
            )
            # The remote oid the client compares with its own: sha256 for LFS, git SHA-1 else.
            oid = lfs.get(path) or (git_oid(files[path]) if path in files else None)
            answer.append({"path": path, "uploadMode": mode, "shouldIgnore": False, "oid": oid})
        return _json(200, {"files": answer})

    def _xet_token(self, repo: Repo, write: bool) -> Reply:
        """A CAS access token, as the Hub's xet token routes answer (JSON and headers)."""
        if write:
            if self._token() is None:
                raise HubError(401, None, "Invalid credentials in Authorization header")
            self._may_write(repo.repo_id, f"write to a {repo.repo_type}")
        else:
            self._gate(repo)
        cas = self.fake.cas
        token, exp = cas.issue("write" if write else "read", f"{repo.repo_type}/{repo.repo_id}")
        headers = {
            "X-Xet-Access-Token": token,
            "X-Xet-Token-Expiration": str(exp),
            "X-Xet-Cas-Url": cas.url,
        }
        return _json(200, {"accessToken": token, "exp": exp, "casUrl": cas.url}, headers)

    def _commits_page(self, repo: Repo, rev: str, query: dict[str, list[str]]) -> Reply:
        """One page of the history, newest first, with a `Link` to the next as the Hub pages."""
        history = list(_history(repo, self._sha(repo, rev)))
        size = self.fake.commits_page_size
        page = int(query.get("p", ["0"])[0] or 0)
        items = [_commit_item(sha, m) for sha, m in history[page * size : (page + 1) * size]]
        headers = {}
        if (page + 1) * size < len(history):
            nxt = f"{self._api_url(repo)}/commits/{quote(rev, safe='')}?p={page + 1}"
            headers["Link"] = f'<{nxt}>; rel="next"'
        return _json(200, items, headers)

    def _lfs_entry(self, repo: Repo, sha: str, entry: dict[str, Any]) -> dict[str, Any]:
        """A tree entry with `lfs` and `xetHash` for a Xet file, as the Hub lists one."""
        sha256 = repo.lfs.get(sha, {}).get(entry["path"])
        if entry["type"] != "file" or sha256 is None:
            return entry
        pointer = lfs_pointer(sha256, entry["size"])
        stored = self.fake.cas.store.by_oid(sha256)
        assert stored is not None, f"{entry['path']} is Xet but the CAS lacks it"
        return {
            **entry,
            "oid": git_oid(pointer),
            "lfs": {"oid": sha256, "size": entry["size"], "pointerSize": len(pointer)},
            "xetHash": xet_hex(stored.file_hash),
        }

    def _paths_info(self, repo: Repo, sha: str, body: bytes) -> Reply:
        """`POST .../paths-info/{rev}` (form-encoded `paths`): the entries that exist."""
        form = parse_qs(body.decode())
        wanted = form.get("paths", [])
        if not wanted and body.strip().startswith(b"{"):
            wanted = json.loads(body).get("paths", [])
        files = repo.commits[sha]
        entries = list(_tree(files, "", recursive=True))
        out = [self._lfs_entry(repo, sha, e) for e in entries if e["path"] in wanted]
        return _json(200, out)

    def _info(self, repo: Repo, sha: str) -> dict[str, Any]:
        files = repo.commits[sha]
        return {
            "id": repo.repo_id,
            "sha": sha,
            "private": repo.private,
            "gated": "manual" if repo.gated_tokens is not None else False,
            "siblings": [{"rfilename": p} for p in sorted(files)],
        }

    def _commit_ndjson(self, repo: Repo, rev: str, body: bytes) -> Reply:
        if self._token() is None:
            raise HubError(401, None, "Invalid credentials in Authorization header")
        self._may_write(repo.repo_id, f"write to a {repo.repo_type}")
        head = self._sha(repo, rev)
        files = dict(repo.commits[head])
        lfs = dict(repo.lfs.get(head, {}))
        title, message = "", ""
        for line in body.splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            key, value = item["key"], item["value"]
            if key == "header":
                parent = value.get("parentCommit")
                if parent and parent != head:
                    raise HubError(412, None, f"parent commit {parent} is not the head {head}")
                title, message = value.get("summary", ""), value.get("description", "")
            elif key == "file":
                files[value["path"]] = base64.b64decode(value["content"])
                lfs.pop(value["path"], None)
            elif key == "lfsFile" and self.fake.xet:
                files[value["path"]] = self._uploaded(value)
                lfs[value["path"]] = value["oid"]
            elif key == "deletedFile":
                files.pop(value["path"], None)
                lfs.pop(value["path"], None)
            elif key == "deletedFolder":
                prefix = value["path"].rstrip("/") + "/"
                files = {p: d for p, d in files.items() if not p.startswith(prefix)}
                lfs = {p: o for p, o in lfs.items() if not p.startswith(prefix)}
            else:
                raise HubError(400, None, f"the fake hub does not accept {key!r} operations")
        sha = self.fake._commit(repo, rev, files, title, message, lfs)
        url = f"{self.fake.url}/{PREFIX[repo.repo_type]}{repo.repo_id}/commit/{sha}"
        return _json(200, {"commitUrl": url, "commitOid": sha, "success": True})

    def _uploaded(self, value: dict[str, Any]) -> bytes:
        """The bytes of an `lfsFile` line's object; 400 unless the CAS holds it."""
        path, oid = value.get("path"), str(value.get("oid", ""))
        if value.get("algo", "sha256") != "sha256":
            raise HubError(400, None, f"lfsFile {path}: unsupported algo {value.get('algo')!r}")
        cas = self.fake.cas
        with cas._lock:
            stored = cas.store.by_oid(oid)
            data = cas.store.read(stored) if stored is not None else None
        if data is None:
            raise HubError(
                400, None, f"Your push was rejected: LFS object {oid} for {path} was not uploaded"
            )
        if value.get("size") is not None and int(value["size"]) != len(data):
            raise HubError(400, None, f"lfsFile {path}: size {value['size']} is not {len(data)}")
        return data

    def _resolve(self, repo: Repo, rev: str, path: str) -> Reply:
        self._gate(repo)
        sha = self._sha(repo, rev)
        data = repo.commits[sha].get(path)
        if data is None:
            raise HubError(404, "EntryNotFound", f"{path} does not exist on {rev}", commit=sha)
        headers = {"X-Repo-Commit": sha, "ETag": f'"{git_oid(data)}"', "Accept-Ranges": "bytes"}
        sha256 = repo.lfs.get(sha, {}).get(path)
        if sha256 is not None:  # a Xet file: what sends hf_hub_download to the CAS
            stored = self.fake.cas.store.by_oid(sha256)
            assert stored is not None, f"{path} is Xet but the CAS lacks it"
            token_url = f"{self._api_url(repo)}/xet-read-token/{sha}"
            headers |= {
                "ETag": f'"{sha256}"',
                "X-Linked-ETag": f'"{sha256}"',
                "X-Linked-Size": str(len(data)),
                "X-Xet-Hash": xet_hex(stored.file_hash),
                "Link": f'<{token_url}>; rel="xet-auth"',
            }
        status, start, end = 200, 0, len(data)
        ranged = self.headers.get("range", "")
        if ranged.startswith("bytes="):
            first, _, last = ranged[6:].partition("-")
            start = int(first or 0)
            end = min(int(last) + 1, len(data)) if last else len(data)
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{len(data)}"
        return status, data[start:end], headers, "application/octet-stream"


def xet_hex(file_hash: bytes) -> str:
    """A Xet hash as the Hub shows it (`X-Xet-Hash`, `xetHash`): the spec's hash string."""
    return to_hex(file_hash)


def lfs_pointer(sha256: str, size: int) -> bytes:
    """The git LFS pointer file the Hub's git tree holds for an LFS/Xet file."""
    return (
        f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()
    )


def _lfs_patterns(files: dict[str, bytes]) -> tuple[str, ...]:
    """The `filter=lfs` patterns of the repo's .gitattributes, or the Hub's defaults."""
    text = files.get(".gitattributes")
    if text is None:
        return DEFAULT_LFS_PATTERNS
    return tuple(
        line.split()[0]
        for line in text.decode(errors="replace").splitlines()
        if "filter=lfs" in line.split()[1:]
    )


def _binary(sample: bytes) -> bool:
    """NUL bytes, or not UTF-8 (a multi-byte character cut at the sample's end excepted)."""
    if b"\0" in sample:
        return True
    try:
        sample.decode("utf-8")
    except UnicodeDecodeError as err:
        return not (err.reason == "unexpected end of data" and err.end == len(sample))
    return False


def wants_lfs(files: dict[str, bytes], repo_type: str, path: str, size: int, sample: bytes) -> bool:
    """The Hub's preupload rule: LFS (so Xet) for a .gitattributes LFS pattern, 10 MiB or
    more, or binary content; `regular` otherwise. Empty files are always regular."""
    if size == 0:
        return False
    name = path.rsplit("/", 1)[-1]
    patterns = _lfs_patterns(files)
    matched = any(fnmatch(path, p) or ("/" not in p and fnmatch(name, p)) for p in patterns)
    return matched or size >= LFS_MIN_SIZE or _binary(sample)


def _json(status: int, payload: Any, headers: dict[str, str] | None = None) -> Reply:
    return status, json.dumps(payload).encode(), headers or {}, "application/json"


def _history(repo: Repo, head: str) -> Iterator[tuple[str, dict[str, str]]]:
    """(sha, meta) from `head` back along the parents, newest first."""
    sha = head
    while sha:
        meta = repo.meta.get(sha, {"title": "", "message": "", "parent": "", "date": ""})
        yield sha, meta
        sha = meta["parent"]


def _commit_item(sha: str, meta: dict[str, str]) -> dict[str, Any]:
    return {
        "id": sha,
        "authors": [{"user": "fake-user"}],
        "date": meta["date"] or "1970-01-01T00:00:00.000Z",
        "title": meta["title"],
        "message": meta["message"],
    }


def _tree(files: dict[str, bytes], under: str, recursive: bool) -> Iterator[dict[str, Any]]:
    """Tree entries below `under`, directories included, sorted by path."""
    prefix = under.strip("/") + "/" if under.strip("/") else ""
    entries: dict[str, dict[str, Any]] = {}
    for path, data in files.items():
        if not path.startswith(prefix):
            continue
        parts = path[len(prefix) :].split("/")
        for depth in range(1, len(parts)):
            if not recursive and depth > 1:
                break
            folder = prefix + "/".join(parts[:depth])
            entries[folder] = {"type": "directory", "path": folder, "oid": git_oid(b"")}
        if recursive or len(parts) == 1:
            entries[path] = {"type": "file", "path": path, "size": len(data), "oid": git_oid(data)}
    if prefix and not entries:
        raise HubError(404, "EntryNotFound", f"{under} does not exist")
    yield from (entries[p] for p in sorted(entries))


# -- repo layouts ---------------------------------------------------------------------------------
# The file names of stabilityai/stable-diffusion-xl-base-1.0 (a public listing of the repo), the
# repo diffusers' from_single_file asks the Hub for when it loads an SDXL checkpoint. Configs are
# small real-shaped JSON; every other file is a placeholder: only names and which are fetched
# matter. Its weights (tens of GB) must never be fetched.
_SDXL_CONFIGS = (
    "scheduler/scheduler_config.json",
    "text_encoder/config.json",
    "text_encoder_2/config.json",
    "tokenizer/special_tokens_map.json",
    "tokenizer/tokenizer_config.json",
    "tokenizer/vocab.json",
    "tokenizer_2/special_tokens_map.json",
    "tokenizer_2/tokenizer_config.json",
    "tokenizer_2/vocab.json",
    "unet/config.json",
    "vae/config.json",
    "vae_1_0/config.json",
    "vae_decoder/config.json",
    "vae_encoder/config.json",
)
_SDXL_TEXT = ("tokenizer/merges.txt", "tokenizer_2/merges.txt")
_SDXL_OTHER = (
    ".gitattributes",
    "01.png",
    "comparison.png",
    "pipeline.png",
    "LICENSE.md",
    "README.md",
    "sd_xl_base_1.0.safetensors",
    "sd_xl_base_1.0_0.9vae.safetensors",
    "sd_xl_offset_example-lora_1.0.safetensors",
    "text_encoder/flax_model.msgpack",
    "text_encoder/model.fp16.safetensors",
    "text_encoder/model.onnx",
    "text_encoder/model.safetensors",
    "text_encoder/openvino_model.bin",
    "text_encoder/openvino_model.xml",
    "text_encoder_2/flax_model.msgpack",
    "text_encoder_2/model.fp16.safetensors",
    "text_encoder_2/model.onnx",
    "text_encoder_2/model.onnx_data",
    "text_encoder_2/model.safetensors",
    "text_encoder_2/openvino_model.bin",
    "text_encoder_2/openvino_model.xml",
    "unet/diffusion_flax_model.msgpack",
    "unet/diffusion_pytorch_model.fp16.safetensors",
    "unet/diffusion_pytorch_model.safetensors",
    "unet/model.onnx",
    "unet/model.onnx_data",
    "unet/openvino_model.bin",
    "unet/openvino_model.xml",
    "vae/diffusion_flax_model.msgpack",
    "vae/diffusion_pytorch_model.fp16.safetensors",
    "vae/diffusion_pytorch_model.safetensors",
    "vae_1_0/diffusion_pytorch_model.fp16.safetensors",
    "vae_1_0/diffusion_pytorch_model.safetensors",
    "vae_decoder/model.onnx",
    "vae_decoder/openvino_model.bin",
    "vae_encoder/model.onnx",
    "vae_encoder/openvino_model.bin",
)
SDXL_BASE_MODEL_INDEX = {
    "_class_name": "StableDiffusionXLPipeline",
    "_diffusers_version": "0.19.0.dev0",
    "force_zeros_for_empty_prompt": True,
    "add_watermarker": None,
    "scheduler": ["diffusers", "EulerDiscreteScheduler"],
    "text_encoder": ["transformers", "CLIPTextModel"],
    "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
    "tokenizer": ["transformers", "CLIPTokenizer"],
    "tokenizer_2": ["transformers", "CLIPTokenizer"],
    "unet": ["diffusers", "UNet2DConditionModel"],
    "vae": ["diffusers", "AutoencoderKL"],
}
# What from_single_file needs of that repo: its configs, tokenizers and vocabularies.
SDXL_BASE_CONFIG_FILES = ("model_index.json", *_SDXL_CONFIGS, *_SDXL_TEXT)


def sdxl_base_files() -> dict[str, bytes]:
    """stabilityai/stable-diffusion-xl-base-1.0's layout, for `add_repo`: placeholders, but
    for the UNet's and the text encoders' configs (a toy size's, real ones)."""
    from tests.support.family_loras import base_files  # noqa: PLC0415

    files = {"model_index.json": json.dumps(SDXL_BASE_MODEL_INDEX).encode()}
    files |= {p: json.dumps({"_for": p}).encode() for p in _SDXL_CONFIGS}
    # The configs the verify step builds the UNet and text encoders from: a toy size's.
    files |= base_files("sdxl")
    files |= {p: b"#version: 0.2\n" for p in _SDXL_TEXT}
    files |= {p: b"\0" * 32 for p in _SDXL_OTHER}
    return files
