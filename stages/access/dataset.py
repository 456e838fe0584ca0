"""The dataset URLs answer, before anything downloads.

http(s): one `GET` with `Range: bytes=0-0` (not HEAD: a presigned S3 GET URL refuses HEAD),
closed once the status is in; redirects are followed by hand and every hop, and the address
really reached, is held to the worker's address policy, exactly as the download does
(`stages.dataset.download`, whose status messages these are). 404/410/401/403 and a name that
does not resolve are definite; connection errors, timeouts, 429 and 5xx are tried again within
the bounds. `hf://datasets/...`: the repo exists and the token can read it (dataset_info).
`data:` URLs hold the dataset itself: nothing to reach. Messages show host and path only.
"""

from __future__ import annotations

import socket
from urllib.parse import urlsplit

import httpx
import httpx2
from huggingface_hub import HfApi
from huggingface_hub.errors import (
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from stages.access.inputs import Bounds, DatasetTarget
from stages.access.retry import Clock, Sleep, Transient, retried
from stages.addresses import check_host, check_peer
from stages.dataset.download import (
    MAX_REDIRECTS,
    _check_status,  # the download's own answer to each status, so both say the same
    _redirect,
    _Retry,
    where,
)
from stages.dataset.hub import parse_hf
from stages.dataset.inputs import DatasetSource
from stages.errors import DownloadFailed

PROBE = {"Range": "bytes=0-0", "Accept-Encoding": "identity"}
_WHAT = "dataset URLs"
_TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})
# getaddrinfo's answers for a name that does not exist (EAI_AGAIN is a resolver that may
# answer on the next try).
_NO_SUCH_NAME = {socket.EAI_NONAME, getattr(socket, "EAI_NODATA", socket.EAI_NONAME)}


def check_source(
    source: DatasetSource,
    target: DatasetTarget,
    bounds: Bounds,
    *,
    sleep: Sleep,
    clock: Clock,
) -> dict[str, object]:
    """What was found of one archive (JSON-ready, no secret); raises DownloadFailed."""
    field, url = f"dataset.{source.field}", source.url
    if url[:5].lower() == "data:":  # an inline dataset (stages.dataset.inline)
        return {"field": field, "inline": True}
    if url.startswith("hf://"):
        repo, rev = parse_hf(url, field)
        retried(
            f"{field} on the hub",
            lambda: _hub_dataset(repo, rev, field, target),
            bounds,
            sleep=sleep,
            clock=clock,
        )
        return {"field": field, "hub_dataset": repo}
    if urlsplit(url).scheme.lower() not in ("http", "https"):
        return {"field": field, "checked": False}  # the download refuses it with the reason
    start = clock()
    with httpx.Client(follow_redirects=False) as client:

        def probe() -> int:
            left = max(1.0, bounds.retry_s - (clock() - start))
            timeout = min(bounds.request_timeout_s, left)
            return _probe(client, url, field, target, httpx.Timeout(timeout))

        status = retried(field, probe, bounds, sleep=sleep, clock=clock)
    return {"field": field, "at": where(url), "status": status}


def _resolve(url: str, field: str) -> None:
    host = urlsplit(url).hostname or ""
    try:
        socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except socket.gaierror as exc:
        if exc.errno in _NO_SUCH_NAME:
            raise DownloadFailed(
                f"{field}: the host {host} was not found (DNS); check the URL"
            ) from None
        raise Transient(f"DNS lookup of {host} failed ({exc.strerror})") from None
    except UnicodeError:
        raise DownloadFailed(f"{field}: the host name in the URL is not valid") from None


def _probe(
    client: httpx.Client, url: str, field: str, target: DatasetTarget, timeout: httpx.Timeout
) -> int:
    """One probe, following redirects: the status of the answer that ended it."""
    policy = target.addresses
    current = url
    try:
        for _ in range(MAX_REDIRECTS + 1):
            check_host(current, field, policy, error=DownloadFailed, what=_WHAT)
            _resolve(current, field)
            with client.stream("GET", current, headers=PROBE, timeout=timeout) as response:
                check_peer(response, current, field, policy, error=DownloadFailed, what=_WHAT)
                if response.is_redirect:
                    current = _redirect(current, response, field)
                    continue
                if response.status_code == 416:  # an empty file: the download says more
                    return 416
                _check_status(response, url, field)  # the body is never read
                return response.status_code
    except _Retry as exc:
        raise Transient(f"{where(url)} answered {exc}") from None
    except httpx.TimeoutException as exc:
        raise Transient(f"{where(url)} timed out ({type(exc).__name__})") from None
    except httpx.TransportError as exc:
        raise Transient(f"{where(url)} did not answer ({type(exc).__name__})") from None
    raise DownloadFailed(f"{field}: more than {MAX_REDIRECTS} redirects from {where(url)}")


def _hub_dataset(repo: str, rev: str | None, field: str, target: DatasetTarget) -> None:
    token = target.hub_token.get_secret_value() if target.hub_token is not None else None
    api = HfApi(endpoint=target.hub_endpoint, token=token or False)
    try:
        info = api.dataset_info(repo, revision=rev)
    except RevisionNotFoundError:
        raise DownloadFailed(f"{field}: {repo} has no revision {rev!r}") from None
    except RepositoryNotFoundError:
        raise DownloadFailed(
            f"{field}: dataset {repo} was not found on the Hub (or it is private and the token "
            "cannot read it)"
        ) from None
    except HfHubHTTPError as exc:
        status = int(getattr(exc.response, "status_code", 0) or 0)
        if status in _TRANSIENT_STATUS:
            raise Transient(f"the Hub answered HTTP {status} for {repo}") from None
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else "refused"
        raise DownloadFailed(f"{field}: the Hub refused {repo}: {first}") from None
    except (httpx2.TransportError, OSError) as exc:
        raise Transient(f"the Hub did not answer for {repo} ({type(exc).__name__})") from None
    if info.gated and token is None:
        raise DownloadFailed(f"{field}: {repo} is gated; accept its terms and give a token")
