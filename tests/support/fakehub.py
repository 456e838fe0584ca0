"""A loopback Hugging Face Hub that the real `huggingface_hub` client can talk to.

It speaks the slice of the wire protocol in reference/hub-and-eventsourcing.md §2: repo
create/info, recursive tree listing, preupload (always `regular`, so neither LFS nor Xet is ever
touched), NDJSON commits (412 on a stale `parentCommit`), and `resolve` downloads with
`X-Repo-Commit`, `ETag`, `Content-Length` and Range. Errors carry the `X-Error-Code` headers the
client maps to exceptions. Repos live in memory as commit sha -> {path: bytes}; file oids are git
blob SHA-1s, so the client's no-op detection works. Every request is recorded for counting, and
`fail()` injects faults (409/429/5xx) for retry tests; `drop()` applies a request and then
closes the connection without answering (a response lost after the commit landed). Commits
keep their title, description and parent, listed by `GET /api/{t}/{id}/commits/{rev}`, and
`GET /api/whoami-v2` names the token's user (`users`, else `whoami_name`); `POST
/api/validate-yaml` (the README check create_commit makes) only checks the front matter closes.
`hang()` accepts matching requests and answers none until `release()` (a Hub that hangs);
`down()` stops listening, so connections are refused, until `up()` (a Hub that is down).
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}
API_TYPE = {"models": "model", "datasets": "dataset", "spaces": "space"}


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

    def resolve(self, rev: str) -> str | None:
        """A branch name or a full commit sha -> the commit sha, or None."""
        return self.branches.get(rev) or (rev if rev in self.commits else None)


@dataclass(frozen=True)
class Seen:
    method: str
    path: str  # unquoted, without the query string
    auth: bool  # an Authorization header was sent


@dataclass
class Fault:
    status: int
    method: str | None
    path_contains: str | None
    times: int
    headers: dict[str, str]
    drop: bool = False  # apply the request, then close the connection without a response


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


class FakeHub:
    """Start with `with FakeHub() as hub:`; point the client at `hub.url`."""

    def __init__(self) -> None:
        self.repos: dict[tuple[str, str], Repo] = {}
        self.requests: list[Seen] = []
        self.faults: list[Fault] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._commit_no = 0
        self.delay_s = 0.0  # pause before sending file content: widens races in lock tests
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
        """Create (or replace) a repo with one commit holding `files`; return its sha."""
        gated = frozenset(gated_tokens) if gated_tokens is not None else None
        with self._lock:
            repo = Repo(repo_id, repo_type, private=private, gated_tokens=gated)
            self.repos[(repo_type, repo_id)] = repo
            return self._commit(repo, "main", dict(files or {}))

    def files(
        self, repo_id: str, revision: str = "main", repo_type: str = "model"
    ) -> dict[str, bytes]:
        repo = self.repos[(repo_type, repo_id)]
        sha = repo.resolve(revision)
        assert sha is not None, f"no revision {revision} in {repo_id}"
        return dict(repo.commits[sha])

    def fail(
        self,
        status: int,
        *,
        method: str | None = None,
        path_contains: str | None = None,
        times: int = 1,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Answer the next `times` matching requests with `status` (409, 429, 5xx...)."""
        with self._lock:
            self.faults.append(Fault(status, method, path_contains, times, dict(headers or {})))

    def drop(
        self, *, method: str | None = None, path_contains: str | None = None, times: int = 1
    ) -> None:
        """Apply the next `times` matching requests, then close the connection unanswered."""
        with self._lock:
            self.faults.append(Fault(0, method, path_contains, times, {}, drop=True))

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

    def count(self, method: str | None = None, contains: str = "") -> int:
        with self._lock:
            return sum(
                1
                for r in self.requests
                if (method is None or r.method == method) and contains in r.path
            )

    def downloads(self) -> int:
        """File-content fetches (GET on a resolve URL)."""
        return self.count("GET", "/resolve/")

    # -- internals ---------------------------------------------------------------------------
    def _commit(
        self,
        repo: Repo,
        branch: str,
        files: dict[str, bytes],
        title: str = "initial commit",
        message: str = "",
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

    def _take_fault(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if (fault.method in (None, method)) and (fault.path_contains or "") in path:
                    fault.times -= 1
                    if fault.times <= 0:
                        self.faults.remove(fault)
                    return fault
        return None


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
                time.sleep(hub.delay_s)
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

    def _repo(self, repo_type: str, repo_id: str) -> Repo:
        repo = self.fake.repos.get((repo_type, repo_id))
        if repo is None:  # the Hub answers 401 for unknown repos, as for private ones
            raise HubError(401, "RepoNotFound", f"Repository Not Found for {repo_id}")
        return repo

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
        if (repo_type, repo_id) in self.fake.repos:
            return _json(409, {"error": "You already created this repo", "url": url})
        private = req.get("visibility") == "private" or req.get("private") is True
        repo = Repo(repo_id, repo_type, private=private)
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
            return _json(200, list(_tree(repo.commits[sha], "/".join(rest[2:]), recursive)))
        if method == "POST" and action == "preupload":
            self._may_write(repo.repo_id, f"write to a {repo.repo_type}")
            files = repo.commits[self._sha(repo, rev)]
            wanted = json.loads(body)["files"]
            answer = [
                {
                    "path": f["path"],
                    "uploadMode": "regular",  # never LFS/Xet: the fake stores bytes inline
                    "shouldIgnore": False,
                    "oid": git_oid(files[f["path"]]) if f["path"] in files else None,
                }
                for f in wanted
            ]
            return _json(200, {"files": answer})
        if method == "POST" and action == "commit":
            return self._commit_ndjson(repo, rev, body)
        if method == "GET" and action == "commits":
            return _json(
                200, [_commit_item(sha, m) for sha, m in _history(repo, self._sha(repo, rev))]
            )
        raise HubError(404, None, f"no route for {method} {action}")

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
            elif key == "deletedFile":
                files.pop(value["path"], None)
            elif key == "deletedFolder":
                prefix = value["path"].rstrip("/") + "/"
                files = {p: d for p, d in files.items() if not p.startswith(prefix)}
            else:
                raise HubError(400, None, f"the fake hub does not accept {key!r} operations")
        sha = self.fake._commit(repo, rev, files, title, message)
        url = f"{self.fake.url}/{PREFIX[repo.repo_type]}{repo.repo_id}/commit/{sha}"
        return _json(200, {"commitUrl": url, "commitOid": sha, "success": True})

    def _resolve(self, repo: Repo, rev: str, path: str) -> Reply:
        if repo.gated_tokens is not None and self._token() not in repo.gated_tokens:
            status = 401 if self._token() is None else 403
            raise HubError(
                status,
                "GatedRepo",
                f"Access to model {repo.repo_id} is restricted. You must have access to it "
                "and be authenticated to access it. Please log in.",
            )
        sha = self._sha(repo, rev)
        data = repo.commits[sha].get(path)
        if data is None:
            raise HubError(404, "EntryNotFound", f"{path} does not exist on {rev}", commit=sha)
        headers = {"X-Repo-Commit": sha, "ETag": f'"{git_oid(data)}"', "Accept-Ranges": "bytes"}
        status, start, end = 200, 0, len(data)
        ranged = self.headers.get("range", "")
        if ranged.startswith("bytes="):
            first, _, last = ranged[6:].partition("-")
            start = int(first or 0)
            end = min(int(last) + 1, len(data)) if last else len(data)
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{len(data)}"
        return status, data[start:end], headers, "application/octet-stream"


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
    """stabilityai/stable-diffusion-xl-base-1.0's layout, for `add_repo`."""
    files = {"model_index.json": json.dumps(SDXL_BASE_MODEL_INDEX).encode()}
    files |= {p: json.dumps({"_for": p}).encode() for p in _SDXL_CONFIGS}
    files |= {p: b"#version: 0.2\n" for p in _SDXL_TEXT}
    files |= {p: b"\0" * 32 for p in _SDXL_OTHER}
    return files
