"""Fetch a dataset archive: http(s) with resume, or a Hub dataset repo (hf://datasets/...).

`download(url, dest_dir, field=..., limits=...)` streams an http(s) URL to `dest_dir` with a
size cap, connect/read timeouts, retries with backoff and a resumed transfer (HTTP Range,
checked against Content-Range; a server that ignores Range gets a fresh download). Redirects
are followed by hand so that only http(s) targets are ever contacted. A trickle cannot hold the
worker: the whole download (every try and wait) has a deadline, an average rate it must keep
once a grace period passed, and a cap on tries even while bytes come in (`DownloadLimits`).
`hf://datasets/owner/name[@rev]` goes through huggingface_hub (stages.dataset.hub). A `data:`
URL (stages.dataset.inline) is decoded to the same file, within `max_inline_bytes`, and its
payload is never shown.

A finished download leaves `<name>.manifest.json` (size + sha256 + a hash of the full URL) next
to the file, so a job delivered again reuses it instead of downloading again.

Every error is a `DownloadFailed` (a `StageFailed`) naming the request field; messages show the
host and path only, never a URL's userinfo or query (a presigned URL's signature is a secret).
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx

from events.atomic import write_atomic
from events.redact import mask_url
from stages.addresses import check_host, check_peer
from stages.dataset import inline
from stages.dataset.hub import fetch_hub
from stages.dataset.limits import DownloadLimits, human, too_large
from stages.errors import DownloadFailed

CHUNK = 1 << 20
_WHAT = "dataset URLs"
MAX_REDIRECTS = 10
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")
_DISK_FULL = {errno.ENOSPC, errno.EDQUOT}
ProgressFn = Callable[[int, int | None], None]  # (bytes done, bytes total or None)
Sleep = Callable[[float], None]


class _MaskUrlSecrets(logging.Filter):
    """httpx logs every request's full URL at INFO, and `import runpod` turns INFO on for the
    worker: a presigned URL's signature (its query) would reach the logs. Mask it there."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and any(isinstance(a, httpx.URL) for a in record.args):
            record.args = tuple(
                mask_url(str(a)) if isinstance(a, httpx.URL) else a for a in record.args
            )
        return True


_HTTPX_LOG = logging.getLogger("httpx")
if not any(isinstance(f, _MaskUrlSecrets) for f in _HTTPX_LOG.filters):
    _HTTPX_LOG.addFilter(_MaskUrlSecrets())


class _Retry(Exception):
    """A transient failure (network, 5xx, 429): try again, resuming if possible."""


@dataclass(frozen=True)
class Downloaded:
    """A fetched dataset: an archive file (http) or a folder (hf://)."""

    path: Path
    size: int
    sha256: str
    reused: bool  # an earlier delivery's download was still valid


def where(url: str) -> str:
    """host + path, the only parts of a URL an error message may show."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "the given URL"
    return f"{host}{port}{parts.path}"


def download(
    url: str,
    dest_dir: Path,
    *,
    field: str,
    name: str,
    limits: DownloadLimits | None = None,
    hub_endpoint: str = "https://huggingface.co",
    token: str | None = None,
    on_bytes: ProgressFn | None = None,
    sleep: Sleep = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> Downloaded:
    """Fetch `url` into `dest_dir/<name>` (a file, or a folder for hf://). See the module doc."""
    limits = limits or DownloadLimits()
    dest_dir.mkdir(parents=True, exist_ok=True)
    if inline.is_data_url(url):
        return _inline(url, dest_dir / name, field, limits, on_bytes)
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if url.startswith("hf://"):
        folder, size, digest = fetch_hub(
            url, dest_dir / name, field=field, endpoint=hub_endpoint, token=token, limits=limits
        )
        return Downloaded(folder, size, digest, reused=False)
    if scheme not in ("http", "https"):
        shown = scheme if re.fullmatch(r"[a-z][a-z0-9+.-]{0,15}", scheme) else "this"
        raise DownloadFailed(
            f'{field}: the "{shown}" scheme is not supported; use an http(s) URL or '
            "hf://datasets/owner/name"
        )
    target = dest_dir / name
    reused = _reuse(target, url)
    if reused is not None:
        if on_bytes is not None:
            on_bytes(reused.size, reused.size)
        return reused
    return _http(target, _Budget(url, field, limits, clock), on_bytes, sleep)


def _inline(
    url: str, target: Path, field: str, limits: DownloadLimits, on_bytes: ProgressFn | None
) -> Downloaded:
    """A data: URL's archive written where a download would be; then extracted like one."""
    try:
        size = inline.check(url)
    except inline.InlineError as exc:
        raise DownloadFailed(f"{field}: {exc}") from None
    bound = min(limits.max_inline_bytes, limits.max_bytes)
    if size > bound:
        raise DownloadFailed(
            f"{field}: the inline dataset is {human(size)}, over this worker's "
            f"{human(bound)} limit for data: URLs (DPS_DATASET_MAX_INLINE_BYTES); host the "
            "archive and give its http(s) or hf://datasets/ URL"
        )
    found = _reuse(target, url)
    if found is None:
        data = inline.decode(url)
        sha = hashlib.sha256(data).hexdigest()
        _manifest_path(target).unlink(missing_ok=True)
        try:
            write_atomic(target, data)
            _write_manifest(target, url, len(data), sha)
        except OSError as exc:
            target.unlink(missing_ok=True)
            if exc.errno in _DISK_FULL:
                raise DownloadFailed(
                    f"{field}: the volume is full while writing the inline dataset "
                    f"({human(len(data))}); free space on the volume"
                ) from exc
            raise
        found = Downloaded(target, len(data), sha, reused=False)
    if on_bytes is not None:
        on_bytes(found.size, found.size)
    return found


# --- manifest ----------------------------------------------------------------------------------


def _manifest_path(target: Path) -> Path:
    return target.with_name(target.name + ".manifest.json")


def _url_key(url: str) -> str:
    # The full URL may hold a credential: keep only its hash, to notice a changed request.
    return hashlib.sha256(url.encode()).hexdigest()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _reuse(target: Path, url: str) -> Downloaded | None:
    """The earlier download of `url`, when its manifest still matches the file."""
    try:
        manifest = json.loads(_manifest_path(target).read_text(encoding="utf-8"))
        if manifest.get("url") != _url_key(url) or not target.is_file():
            return None
        size = target.stat().st_size
        if size != manifest["size"] or sha256_file(target) != manifest["sha256"]:
            return None
        return Downloaded(target, size, str(manifest["sha256"]), reused=True)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write_manifest(target: Path, url: str, size: int, sha: str) -> None:
    data = {"url": _url_key(url), "size": size, "sha256": sha}
    write_atomic(_manifest_path(target), json.dumps(data))


# --- http(s) -----------------------------------------------------------------------------------


@dataclass
class _Part:
    """The partial file of a transfer in progress and the hash of its bytes so far."""

    path: Path
    size: int = 0
    digest: Any = None
    etag: str | None = None
    total: int | None = None  # the full size, once a response said it

    def reset(self) -> None:
        self.path.write_bytes(b"")
        self.size = 0
        self.digest = hashlib.sha256()


@dataclass
class _Budget:
    """The bounds of the whole download, every try and wait together: a deadline, an average
    rate since the start (judged once the grace passed) and a number of tries. Read timeouts
    alone let a byte a minute, or a byte per Range request, hold the worker for hours."""

    url: str
    field: str
    limits: DownloadLimits
    clock: Callable[[], float]
    start: float = 0.0
    tries: int = 0

    def check(self, part: _Part, *, new_try: bool = False) -> None:
        lim, elapsed = self.limits, self.clock() - self.start
        why = ""
        if elapsed > lim.deadline_s:
            why = f"did not finish within {_span(lim.deadline_s)}"
        elif elapsed >= lim.rate_grace_s and part.size < lim.min_rate * elapsed:
            rate, least = _per_s(part.size / elapsed), _per_s(lim.min_rate)
            why = f"averaged {rate}, under the {least} minimum"
        elif new_try and self.tries >= lim.max_tries:
            why = f"did not finish after {self.tries} tries"
        if why:
            of = human(part.total) if part.total is not None else "an unknown size"
            raise DownloadFailed(
                f"{self.field}: the download from {where(self.url)} {why} (received "
                f"{human(part.size)} of {of} in {_span(elapsed)}); use a faster or more "
                "reliable host, or a smaller dataset"
            )
        if new_try:
            self.tries += 1


def _span(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f}".removesuffix(".0") + " h"


def _per_s(rate: float) -> str:
    return f"{rate:.1f} B/s" if rate < 1024 else f"{human(rate)}/s"


def _http(target: Path, budget: _Budget, on_bytes: ProgressFn | None, sleep: Sleep) -> Downloaded:
    url = budget.url
    _manifest_path(target).unlink(missing_ok=True)
    part = _Part(target.with_name(target.name + ".part"))
    try:
        part.reset()  # a leftover .part from a crashed worker has no known validator: start over
        _tries(part, budget, on_bytes, sleep)
        sha = part.digest.hexdigest()
        os.replace(part.path, target)
        _write_manifest(target, url, part.size, sha)
    except BaseException as exc:
        for path in (part.path, target):  # a refused or failed download keeps no disk space
            path.unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.errno in _DISK_FULL:
            raise DownloadFailed(
                f"{budget.field}: the volume is full while downloading from {where(url)} "
                f"({human(part.size)} received); free space, or use a smaller dataset"
            ) from exc
        raise
    return Downloaded(target, part.size, sha, reused=False)


def _tries(part: _Part, budget: _Budget, on_bytes: ProgressFn | None, sleep: Sleep) -> None:
    """Try, resume and wait until `part` is whole or a bound is passed."""
    url, field, limits = budget.url, budget.field, budget.limits
    timeout = httpx.Timeout(limits.read_timeout_s, connect=limits.connect_timeout_s)
    failures = 0
    last = ""
    budget.start = budget.clock()
    with httpx.Client(timeout=timeout, follow_redirects=False) as client:
        while True:
            budget.check(part, new_try=True)  # the waits before count too
            before = part.size
            try:
                _transfer(client, part, budget, on_bytes)
                return
            except _Retry as exc:
                last = str(exc)
            # A drop after progress does not count: a flaky link may still finish by resuming.
            failures = 0 if part.size > before else failures + 1
            if failures >= limits.attempts:
                if "timed out" in last:
                    raise DownloadFailed(
                        f"{field}: timed out downloading from {where(url)} after "
                        f"{limits.attempts} attempts; check that the server is reachable"
                    )
                raise DownloadFailed(
                    f"{field}: Failed to download dataset from {where(url)} after "
                    f"{limits.attempts} attempts ({last}); verify the URL is publicly "
                    "accessible (test it with curl)"
                )
            sleep(min(60.0, limits.retry_wait_s * 2 ** max(0, failures - 1)))


def _transfer(
    client: httpx.Client, part: _Part, budget: _Budget, on_bytes: ProgressFn | None
) -> None:
    """One request (following redirects) that appends to `part`; raises _Retry on a drop."""
    url, field, limits = budget.url, budget.field, budget.limits
    headers: dict[str, str] = {"Accept-Encoding": "identity"}
    resuming = part.size > 0
    if resuming:
        headers["Range"] = f"bytes={part.size}-"
        if part.etag:  # the server sends the whole (new) file if it changed since
            headers["If-Range"] = part.etag
    current = url
    try:
        for _ in range(MAX_REDIRECTS + 1):
            # The first URL and every redirect, then the address really reached.
            check_host(current, field, limits.addresses, error=DownloadFailed, what=_WHAT)
            with client.stream("GET", current, headers=headers) as response:
                check_peer(
                    response, current, field, limits.addresses, error=DownloadFailed, what=_WHAT
                )
                if response.is_redirect:
                    current = _redirect(current, response, field)
                    continue
                _check_status(response, url, field)
                total = _start(response, part, limits, field)
                if on_bytes is not None:
                    on_bytes(part.size, total)
                first = part.size == 0
                with part.path.open("ab") as out:
                    for chunk in response.iter_bytes():  # as received: a drop keeps every byte
                        if first and chunk:
                            _sniff(chunk, url, field, response.headers.get("content-type", ""))
                            first = False
                        if part.size + len(chunk) > limits.max_bytes:
                            raise too_large(field, limits, None)
                        out.write(chunk)
                        part.digest.update(chunk)
                        part.size += len(chunk)
                        if on_bytes is not None:
                            on_bytes(part.size, total)
                        if total is None or part.size < total:  # a whole file is kept
                            budget.check(part)
                if total is not None and part.size < total:
                    raise _Retry(f"connection closed at {part.size} of {total} bytes")
                return
        raise DownloadFailed(f"{field}: more than {MAX_REDIRECTS} redirects from {where(url)}")
    except httpx.TimeoutException as exc:
        raise _Retry(f"timed out ({type(exc).__name__})") from exc
    except httpx.TransportError as exc:  # connect refused, reset, closed mid-body
        raise _Retry(type(exc).__name__) from exc


def _redirect(current: str, response: httpx.Response, field: str) -> str:
    location = response.headers.get("location")
    if not location:
        raise DownloadFailed(f"{field}: {where(current)} redirected without a Location")
    nxt: str = urljoin(current, str(location))
    scheme = urlsplit(nxt).scheme.lower()
    if scheme not in ("http", "https"):
        shown = scheme if re.fullmatch(r"[a-z][a-z0-9+.-]{0,15}", scheme) else "another"
        raise DownloadFailed(
            f'{field}: {where(current)} redirected to a "{shown}" URL; only http(s) '
            "redirects are followed"
        )
    return nxt


def _check_status(response: httpx.Response, url: str, field: str) -> None:
    code = response.status_code
    if code in (200, 206):
        return
    if code in {404, 410}:
        raise DownloadFailed(f"{field}: not found at {where(url)} (HTTP {code}); check the URL")
    if code in (401, 403):
        raise DownloadFailed(
            f"{field}: {where(url).split('/', 1)[0]} refused access (HTTP {code}): is the link "
            "public / not expired?"
        )
    if code == 416:
        raise _Retry("HTTP 416")  # our Range went past the end: the next try starts over
    if code == 429 or code >= 500:
        raise _Retry(f"HTTP {code}")
    raise DownloadFailed(
        f"{field}: Failed to download dataset from {where(url)} (HTTP {code}); verify the URL "
        "is publicly accessible (test it with curl)"
    )


def _start(response: httpx.Response, part: _Part, limits: DownloadLimits, field: str) -> int | None:
    """Decide append vs restart from the status and Content-Range; return the full size."""
    resuming = part.size > 0
    length = _int(response.headers.get("content-length"))
    if response.status_code == 206:
        match = _CONTENT_RANGE.fullmatch(response.headers.get("content-range", "").strip())
        if not resuming or match is None or int(match.group(1)) != part.size:
            # A range we did not ask for: trust nothing and start over on the next try.
            part.reset()
            raise _Retry("the server answered with an unexpected byte range")
        total = _int(match.group(3))
    else:
        if resuming:  # the server ignored Range (or the file changed): fresh download
            part.reset()
        total = length
        part.etag = response.headers.get("etag")
    if total is not None and total > limits.max_bytes:
        raise too_large(field, limits, total)
    part.total = total
    return total


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _sniff(head: bytes, url: str, field: str, content_type: str) -> None:
    """Refuse a web page early: share links often return HTML instead of the file."""
    if head.lstrip()[:1] == b"<" or content_type.startswith("text/html"):
        raise DownloadFailed(
            f"{field}: {where(url)} returned a web page, not an archive; use a direct download "
            "link to a .zip or .tar(.gz) file"
        )
