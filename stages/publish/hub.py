"""Publish to a Hugging Face Hub repo: one commit with the LoRA, its configs and a model card.

The Hub client does not retry the commit POST (a retry after a lost response would commit
twice), so this module owns that retry. 409 (another commit holds the repo lock), 5xx, network
errors and Xet failures (hf_xet raises `ConnectionError` for its token route and the CAS) back
off with jitter; a refused token (401/403, `XetAuthenticationError`) fails at once. A 429 waits
what the Hub asks (`rate_limit_wait`: the commit limit's "about 1 hour", not the api bucket's
`t=`) and the repo's `CommitLedger` (shared by every job on the volume) is asked before every
commit, both within `RetryPolicy.publish_wait_s`; a longer wait raises `PublishDeferred` at
once, so no GPU time is spent waiting (the LoRA stays on the volume for a later delivery).

Every commit carries a marker (job id + content digest) in its description; before any attempt
that may follow a commit that landed unseen, the commits since the job's first publish attempt
(its time is kept in the job folder) are searched for the marker, page by page, so a dropped
response never leads to a duplicate commit and a long history is not read. Errors are
rewritten so no token leaks.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import httpx2
import structlog
from huggingface_hub import CommitOperationAdd, HfApi
from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError
from huggingface_hub.utils._datetime import parse_datetime
from huggingface_hub.utils._headers import build_hf_headers
from huggingface_hub.utils._pagination import paginate  # lazy: stops when we stop reading

from events.atomic import write_atomic
from events.projections.hub_limits import CommitLedger, rate_limit_wait
from stages.errors import PublishDeferred, StageFailed
from stages.publish.annotate import repo_label
from stages.publish.card import model_card
from stages.publish.common import (
    Artifact,
    Published,
    PublishInputs,
    RetryPolicy,
    collect_artifacts,
    content_digest,
    fail,
)
from stages.xet_errors import XetAuthenticationError, xet_status

log = structlog.get_logger(__name__)

REFUSED = (
    "output.huggingface.token was refused: it needs write access "
    "(https://huggingface.co/settings/tokens)"
)
MARKER_PREFIX = "diffusion-pipe-serverless publish"
PRIVATE_NOTE = (
    "Direct download link for your trained LoRA safetensors file; the repo is private, so "
    "the download needs your Hugging Face token (an `Authorization: Bearer <token>` header)"
)
ATTEMPTS_FILE = "hub-publish.json"  # in the job folder: when this job first tried to commit
_RETRY_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})
_AMBIGUOUS_STATUS = frozenset({408, 500, 502, 503, 504})  # the commit may have landed
_CARD_REFUSED = "Invalid metadata in README.md"  # the client's README check (validate-yaml)
# The Hub's clock and the worker's may disagree: commits this much older than the first
# attempt are still read before the scan stops.
SCAN_SKEW_S = 600.0
_RATE_LIMITED_TRIES = 24  # 429s answered within the wait bound (the bound is what ends them)

# -- repo naming --------------------------------------------------------------------------------
REPO_NAME_MAX = 96
_PLAIN_ID = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")


def default_repo_id(user: str, model_type: str, job_id: str) -> str:
    """`<user>/<model>-lora-<id>`: the whole job id when it is already a plain lower-case name
    (RunPod's `<uuid>-u1` and `sync-<uuid>`, the local `local-<UTC>-<hex>`), else a cleaned
    prefix plus `_` and a hash of the exact id. Distinct ids give distinct names: a plain id
    is kept as is, and only a hashed one holds `_`."""
    model = re.sub(r"[^a-z0-9]+", "-", model_type.lower()).strip("-") or "model"
    stem = f"{model}-lora-"
    room = REPO_NAME_MAX - len(stem)
    if _PLAIN_ID.fullmatch(job_id) and len(job_id) <= room:
        return f"{user}/{stem}{job_id}"
    digest = hashlib.sha256(job_id.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    prefix = re.sub(r"[^a-z0-9]+", "-", job_id.lower())[: room - len(digest) - 1].strip("-")
    return f"{user}/{stem}{prefix}_{digest}" if prefix else f"{user}/{stem}{digest}"


def marker(job_id: str, digest: str) -> str:
    return f"{MARKER_PREFIX}: job={job_id} digest={digest}"


def job_trace(job_id: str) -> str:
    """What a commit of this job carries in its description (the publish marker's start)."""
    return f"job={job_id} "


def resolve_url(endpoint: str, repo_id: str, path: str) -> str:
    return f"{endpoint}/{repo_id}/resolve/main/{quote(path)}?download=true"


# -- errors -------------------------------------------------------------------------------------


def _status(err: HfHubHTTPError) -> int:
    response = getattr(err, "response", None)
    return int(getattr(response, "status_code", 0) or 0)


def _first_line(err: BaseException) -> str:
    """The first line of the client's message: status, URL path and the server's reason."""
    text = str(err).strip()
    return text.splitlines()[0][:300] if text else type(err).__name__


def _utc(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class HubPublisher:
    """Publishes one job to one repo. `sleep`, `clock` and `rng` are injectable for tests."""

    def __init__(
        self,
        inputs: PublishInputs,
        *,
        endpoint: str,
        policy: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        spec = inputs.destination.huggingface
        if spec is None:
            raise fail(inputs, "output.huggingface.token is required to publish to Hugging Face")
        self.inputs = inputs
        self.spec = spec
        self.endpoint = endpoint.rstrip("/")
        self._token = spec.token.get_secret_value()
        self.api = HfApi(endpoint=self.endpoint, token=self._token)
        self.policy = policy or RetryPolicy()
        self.sleep = sleep
        self.clock = clock
        self.rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        self.waits: list[float] = []  # what was slept, for tests and logs

    def _refused(self, err: HfHubHTTPError, doing: str) -> StageFailed:
        status = _status(err)
        if isinstance(err, RepositoryNotFoundError):
            return fail(
                self.inputs,
                f"Hugging Face {doing} failed: the repository was not found or the token cannot "
                f"write to it ({REFUSED})",
            )
        if status in (401, 403):
            return StageFailed(REFUSED)
        return fail(self.inputs, f"Hugging Face {doing} failed: {_first_line(err)}")

    def _call(self, doing: str, fn: Callable[[], Any]) -> Any:
        """Calls other than the commit (whoami, create_repo, list commits): retried on 429/5xx
        and network errors; they change nothing twice (create_repo has exist_ok)."""
        for attempt in range(1, self.policy.attempts + 1):
            try:
                return fn()
            except HfHubHTTPError as err:
                status = _status(err)
                if status not in _RETRY_STATUS or attempt == self.policy.attempts:
                    raise self._refused(err, doing) from None
                wait = self._limited_call(err, doing) if status == 429 else None
            except (httpx2.TransportError, OSError) as err:
                if attempt == self.policy.attempts:
                    raise fail(self.inputs, f"Hugging Face {doing} failed: {err!r}") from None
                wait = None
            self._pause(attempt, wait, doing)
        raise AssertionError("unreachable")

    def _limited_call(self, err: HfHubHTTPError, doing: str) -> float | None:
        """The wait a 429 on another call asks for; past the bound (whoami's own limit, say)
        the publish is deferred rather than the GPU kept waiting."""
        wait = rate_limit_wait(err)
        if wait is not None and wait > min(self.policy.publish_wait_s, self.policy.max_wait_s):
            target = str(self.spec.repo_id or "the job's repo")
            raise self._deferred(target, self.clock() + wait, f"HTTP 429 on {doing}")
        return wait

    def _pause(self, attempt: int, wait: float | None, doing: str) -> None:
        delay = self.policy.backoff(attempt, self.rng) if wait is None else wait
        if wait is not None:
            delay += self.rng.uniform(0.0, min(1.0, self.policy.base_s))  # do not stampede
        self._sleep(delay, doing, attempt)

    def _sleep(self, delay: float, doing: str, attempt: int = 0) -> None:
        log.info("hub call will be retried", doing=doing, attempt=attempt, wait_s=round(delay, 2))
        self.waits.append(delay)
        self.sleep(delay)

    def repo_id(self) -> str:
        if self.spec.repo_id:
            return str(self.spec.repo_id)
        me = self._call("whoami", self.api.whoami)
        user = str(me.get("name") or "")
        if not user:
            raise fail(self.inputs, "Hugging Face whoami did not name the token's user")
        return default_repo_id(user, self.inputs.model.model_type, self.inputs.job_id)

    # -- the first attempt's time, for the marker scan ------------------------------------------
    def first_attempt(self, repo_id: str) -> float | None:
        """When this job first tried to commit to `repo_id` (None: never)."""
        try:
            raw = json.loads((self.inputs.job_dir / ATTEMPTS_FILE).read_text("utf-8"))
            return float(raw[repo_id])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _note_attempt(self, repo_id: str) -> float:
        """Kept before the first commit is sent: a later scan reads no commit older. Returns
        the time noted."""
        path = self.inputs.job_dir / ATTEMPTS_FILE
        try:
            raw = json.loads(path.read_text("utf-8"))
        except (OSError, ValueError):
            raw = {}
        now = self.clock()
        if isinstance(raw, dict):
            write_atomic(path, json.dumps({**raw, repo_id: now}) + "\n")
        return now

    def find_marker(self, repo_id: str, mark: str, since: float | None = None) -> str | None:
        """The id of a commit carrying `mark`, read newest first and lazily, page by page: no
        page is fetched once a commit older than `since` (less the clock skew) was read."""
        url = f"{self.endpoint}/api/models/{repo_id}/commits/main"
        stop = None if since is None else since - SCAN_SKEW_S

        def scan() -> str | None:
            headers = build_hf_headers(token=self._token)
            for item in paginate(url, params={}, headers=headers):
                if mark in str(item.get("message") or "") or mark in str(item.get("title") or ""):
                    return str(item["id"])
                if stop is not None and _commit_time(item) < stop:
                    return None
            return None

        found: str | None = self._call("listing commits", scan)
        return found

    # -- the commit ---------------------------------------------------------------------------
    def commit(self, repo_id: str, artifacts: list[Artifact], mark: str) -> tuple[str, bool]:
        """Commit every artifact at once; (commit id, whether this call made the commit)."""
        entry = self.inputs.model
        title = f"Upload {entry.display_name} LoRA ({self.inputs.lora_name})"
        ledger = CommitLedger.for_job(self.inputs.job_dir, repo_id, clock=self.clock)
        deadline = self.clock() + self.policy.publish_wait_s
        earlier = self.first_attempt(repo_id)
        maybe_landed = earlier is not None  # an earlier delivery tried: its commit may be there
        since = earlier if earlier is not None else self._note_attempt(repo_id)
        failures = limited = 0
        hold = 0.0  # the Hub said no commit before this (kept here too: the ledger may not save)
        while True:
            if maybe_landed:
                found = self.find_marker(repo_id, mark, since)
                if found is not None:
                    log.info("publish commit already on the hub", repo_id=repo_id, commit=found)
                    return found, False
            self._await_budget(ledger, repo_id, deadline, hold)
            # CommitOperationAdd objects are consumed by a commit: build fresh ones per attempt.
            ops = [
                CommitOperationAdd(
                    path_in_repo=a.name,
                    path_or_fileobj=a.data if a.data is not None else str(a.source),
                )
                for a in artifacts
            ]
            try:
                info = self.api.create_commit(
                    repo_id,
                    operations=ops,
                    commit_message=title,
                    commit_description=mark,
                    repo_type="model",
                )
            except HfHubHTTPError as err:
                status = _status(err)
                if status == 429:
                    limited += 1
                    hold = self._rate_limited(err, ledger, repo_id, deadline, limited)
                    maybe_landed = False
                    continue
                failures += 1
                if status not in _RETRY_STATUS or failures >= self.policy.attempts:
                    raise self._refused(err, "commit") from None
                maybe_landed = status in _AMBIGUOUS_STATUS
            except XetAuthenticationError:  # hf_xet: the Hub refused the token for Xet
                raise StageFailed(REFUSED) from None
            except ValueError as err:
                raise self._value_error(err) from None
            except (httpx2.TransportError, OSError) as err:
                # No answer (a dropped connection, a Xet token route or CAS that failed after
                # hf_xet's own retries): the commit may or may not have been applied.
                answered = xet_status(err)
                if answered in (401, 403):
                    raise StageFailed(REFUSED) from None
                failures += 1
                if failures >= self.policy.attempts or (
                    400 <= answered < 500 and answered not in _RETRY_STATUS
                ):
                    raise fail(
                        self.inputs,
                        f"Hugging Face commit failed: {type(err).__name__}: {_first_line(err)}",
                    ) from None
                maybe_landed = True
            else:
                ledger.record("publish")
                return str(info.oid), True
            self._pause(failures, None, "commit")

    def _value_error(self, err: ValueError) -> StageFailed:
        """Only the client's README metadata check refuses the card; other ValueErrors (an LFS
        batch answer, a bad path) say what they are."""
        text = str(err).strip()
        if text.startswith(_CARD_REFUSED):
            return fail(self.inputs, f"Hugging Face refused the model card: {text}")
        return fail(self.inputs, f"Hugging Face commit failed: ValueError: {_first_line(err)}")

    def _rate_limited(
        self,
        err: HfHubHTTPError,
        ledger: CommitLedger,
        repo_id: str,
        deadline: float,
        limited: int,
    ) -> float:
        """A 429 on the commit: every job of the volume holds off until the Hub's time (which
        is returned; the next try waits for it), or, past the bound, the publish is deferred
        at once."""
        asked = rate_limit_wait(err)
        wait = asked if asked is not None else self.policy.backoff(limited, self.rng)
        until = self.clock() + wait
        ledger.hold_until(until)
        if until > deadline or limited >= _RATE_LIMITED_TRIES:
            said = str(getattr(err, "server_message", None) or "").strip()
            why = said.splitlines()[0][:300] if said else _first_line(err)
            raise self._deferred(repo_id, until, f"HTTP 429: {why}")
        return until

    def _await_budget(
        self, ledger: CommitLedger, repo_id: str, deadline: float, hold: float
    ) -> None:
        """Wait for the repo's commit budget (other jobs' commits count, and a 429's hold),
        within the bound."""
        now = self.clock()
        wait = max(ledger.wait_s("publish"), hold - now)
        if wait <= 0:
            return
        wait += self.rng.uniform(0.0, min(1.0, self.policy.base_s))  # jobs held together
        if now + wait > deadline:
            raise self._deferred(
                repo_id, now + wait, "the repo's commit budget for this hour is spent"
            )
        self._sleep(wait, "commit budget")

    def _deferred(self, repo_id: str, retry_at: float, why: str) -> PublishDeferred:
        lora = self.inputs.lora_path.absolute()
        return PublishDeferred(
            self.inputs.scrub(
                f"Hugging Face takes no commit to {repo_id} before {_utc(retry_at)} ({why}); "
                f"the trained LoRA is kept on the volume at {lora}"
            ),
            retry_at=retry_at,
            repo_id=repo_id,
            lora_path=str(lora),
        )

    # -- the publish --------------------------------------------------------------------------
    def visibility(self, repo_id: str, asked: bool) -> bool:
        """The repo's true visibility: an existing repo keeps its own whatever was asked."""
        info = self._call("repo info", lambda: self.api.model_info(repo_id))
        private = getattr(info, "private", None)
        return asked if private is None else bool(private)

    def publish(self) -> Published:
        repo_id = self.repo_id()
        asked = bool(self.spec.private)
        url = self._call(
            "repo creation",
            lambda: self.api.create_repo(repo_id, private=asked, exist_ok=True, repo_type="model"),
        )
        private = self.visibility(repo_id, asked)
        artifacts = collect_artifacts(self.inputs, label=repo_label(repo_id))
        card = model_card(self.inputs, repo_id, private=private)
        artifacts.append(Artifact("README.md", data=card.encode()))
        mark = marker(self.inputs.job_id, content_digest(artifacts))
        commit_id, made = self.commit(repo_id, artifacts, mark)
        lora_url = resolve_url(self.endpoint, repo_id, self.inputs.lora_name)
        files = [a.name for a in artifacts]
        log.info("published to hugging face", repo_id=repo_id, commit=commit_id, files=len(files))
        return Published(
            method="huggingface",
            download_url=lora_url,
            safetensors_url=lora_url,
            repo_url=str(url) if str(url) else f"{self.endpoint}/{repo_id}",
            files=files,
            note=PRIVATE_NOTE if private else Published.note,
            details={
                "repo_id": repo_id,
                "commit": commit_id,
                "committed_now": made,
                "private": private,
                "private_requested": asked,
            },
        )


def _commit_time(item: dict[str, Any]) -> float:
    """A commits-listing item's date (the Hub's clock) as epoch seconds; unknown: the future,
    so an undated commit never ends the scan."""
    try:
        return parse_datetime(str(item.get("date"))).timestamp()
    except (ValueError, TypeError):
        return float("inf")


def publish_hf(
    inputs: PublishInputs,
    *,
    endpoint: str,
    policy: RetryPolicy | None = None,
    sleep: Callable[[float], None] = time.sleep,
    rng: random.Random | None = None,
    clock: Callable[[], float] = time.time,
) -> Published:
    """Create the repo if needed and commit the job's files in one commit; see the module doc."""
    publisher = HubPublisher(
        inputs, endpoint=endpoint, policy=policy, sleep=sleep, rng=rng, clock=clock
    )
    return publisher.publish()
