"""Publish to a Hugging Face Hub repo: one commit with the LoRA, its configs and a model card.

The Hub client does not retry the commit POST (a retry after a lost response would commit
twice), so this module owns that retry: 429 waits what the server asks (RateLimit `t=` or
Retry-After), 409 (another commit holds the repo lock) and 5xx back off with jitter. Every commit
carries a marker (job id + content digest) in its description; before any attempt that may
follow a commit that landed unseen, the recent commits are searched for the marker, so a
dropped response never leads to a duplicate commit. Errors are rewritten so no token leaks.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import httpx2
import structlog
from huggingface_hub import CommitOperationAdd, HfApi
from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

from stages.errors import StageFailed
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

log = structlog.get_logger(__name__)

REFUSED = (
    "output.huggingface.token was refused: it needs write access "
    "(https://huggingface.co/settings/tokens)"
)
MARKER_PREFIX = "diffusion-pipe-serverless publish"
_RETRY_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})
_AMBIGUOUS_STATUS = frozenset({408, 500, 502, 503, 504})  # the commit may have landed
_MARKER_SCAN = 100  # recent commits searched for our marker (the UPDATES mirror commits too)
_RATELIMIT_T = re.compile(r"\bt=(\d+)")


def marker(job_id: str, digest: str) -> str:
    return f"{MARKER_PREFIX}: job={job_id} digest={digest}"


def default_repo_id(user: str, model_type: str, job_id: str) -> str:
    short = re.sub(r"[^A-Za-z0-9]", "", job_id)[:8].lower() or "job"
    return f"{user}/{model_type.replace('_', '-')}-lora-{short}"


def resolve_url(endpoint: str, repo_id: str, path: str) -> str:
    return f"{endpoint}/{repo_id}/resolve/main/{quote(path)}?download=true"


# -- retries ------------------------------------------------------------------------------------


def _server_wait(response: Any, policy: RetryPolicy) -> float | None:
    """The wait a 429 asks for: the RateLimit header's `t=` when no requests remain, else a
    numeric Retry-After. None when the server did not say."""
    headers = getattr(response, "headers", {}) or {}
    ratelimit = headers.get("ratelimit") or ""
    match = _RATELIMIT_T.search(ratelimit)
    if match and "r=0" in ratelimit.replace(" ", ""):
        return min(float(match[1]) + 1.0, policy.max_wait_s)
    retry_after = (headers.get("retry-after") or "").strip()
    if retry_after.isdigit():
        return min(float(retry_after), policy.max_wait_s)
    if match:
        return min(float(match[1]) + 1.0, policy.max_wait_s)
    return None


def _status(err: HfHubHTTPError) -> int:
    response = getattr(err, "response", None)
    return int(getattr(response, "status_code", 0) or 0)


def _server_message(err: HfHubHTTPError) -> str:
    """The first line of the client's message: status, URL path and the server's reason."""
    return str(err).strip().splitlines()[0][:300] if str(err).strip() else type(err).__name__


class HubPublisher:
    """Publishes one job to one repo. `sleep` and `rng` are injectable so tests run fast."""

    def __init__(
        self,
        inputs: PublishInputs,
        *,
        endpoint: str,
        policy: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        spec = inputs.destination.huggingface
        if spec is None:
            raise fail(inputs, "output.huggingface.token is required to publish to Hugging Face")
        self.inputs = inputs
        self.spec = spec
        self.endpoint = endpoint.rstrip("/")
        self.api = HfApi(endpoint=self.endpoint, token=spec.token.get_secret_value())
        self.policy = policy or RetryPolicy()
        self.sleep = sleep
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
        return fail(self.inputs, f"Hugging Face {doing} failed: {_server_message(err)}")

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
                wait = _server_wait(err.response, self.policy) if status == 429 else None
            except httpx2.TransportError as err:
                if attempt == self.policy.attempts:
                    raise fail(self.inputs, f"Hugging Face {doing} failed: {err!r}") from None
                wait = None
            self._pause(attempt, wait, doing)
        raise AssertionError("unreachable")

    def _pause(self, attempt: int, wait: float | None, doing: str) -> None:
        delay = self.policy.backoff(attempt, self.rng) if wait is None else wait
        if wait is not None:
            delay += self.rng.uniform(0.0, min(1.0, self.policy.base_s))  # do not stampede
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

    def find_marker(self, repo_id: str, mark: str) -> str | None:
        """The id of a recent commit whose message carries `mark`, if one landed."""
        commits = self._call("listing commits", lambda: self.api.list_repo_commits(repo_id))
        for commit in commits[:_MARKER_SCAN]:
            if mark in (commit.message or "") or mark in (commit.title or ""):
                return str(commit.commit_id)
        return None

    def commit(self, repo_id: str, artifacts: list[Artifact], mark: str) -> tuple[str, bool]:
        """Commit every artifact at once; (commit id, whether this call made the commit)."""
        entry = self.inputs.model
        title = f"Upload {entry.display_name} LoRA ({self.inputs.lora_name})"
        maybe_landed = True  # a previous delivery may have committed before it died
        for attempt in range(1, self.policy.attempts + 1):
            if maybe_landed:
                found = self.find_marker(repo_id, mark)
                if found is not None:
                    log.info("publish commit already on the hub", repo_id=repo_id, commit=found)
                    return found, False
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
                return str(info.oid), True
            except HfHubHTTPError as err:
                status = _status(err)
                if status not in _RETRY_STATUS or attempt == self.policy.attempts:
                    raise self._refused(err, "commit") from None
                maybe_landed = status in _AMBIGUOUS_STATUS
                wait = _server_wait(err.response, self.policy) if status == 429 else None
            except ValueError as err:  # the client's README metadata check refused the card
                raise fail(self.inputs, f"Hugging Face refused the model card: {err}") from None
            except httpx2.TransportError as err:
                # No answer: the commit may or may not have been applied.
                if attempt == self.policy.attempts:
                    raise fail(self.inputs, f"Hugging Face commit failed: {err!r}") from None
                maybe_landed, wait = True, None
            self._pause(attempt, wait, "commit")
        raise AssertionError("unreachable")

    def publish(self) -> Published:
        repo_id = self.repo_id()
        private = bool(self.spec.private)
        url = self._call(
            "repo creation",
            lambda: self.api.create_repo(
                repo_id, private=private, exist_ok=True, repo_type="model"
            ),
        )
        artifacts = collect_artifacts(self.inputs)
        card = model_card(self.inputs, repo_id)
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
            details={
                "repo_id": repo_id,
                "commit": commit_id,
                "committed_now": made,
                "private": private,
            },
        )


def publish_hf(
    inputs: PublishInputs,
    *,
    endpoint: str,
    policy: RetryPolicy | None = None,
    sleep: Callable[[float], None] = time.sleep,
    rng: random.Random | None = None,
) -> Published:
    """Create the repo if needed and commit the job's files in one commit; see the module doc."""
    return HubPublisher(inputs, endpoint=endpoint, policy=policy, sleep=sleep, rng=rng).publish()
