"""The Hub's rate limits as it sends them, met by a publish: the real client against the fake
Hub, with an injected clock and sleep. A wait within the bound is waited (once, by the Hub's
time); a longer one (the commit limit's "about 1 hour", or a repo's spent budget in the shared
ledger) defers the publish at once, with no GPU time spent waiting."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from huggingface_hub.errors import HfHubHTTPError

from events.projections.hub_limits import HOURLY_LIMIT, CommitLedger
from stages.errors import PublishDeferred
from stages.publish.common import PublishInputs, RetryPolicy
from stages.publish.hub import MARKER_PREFIX, HubPublisher
from tests.support.fakehub import FakeHub
from tests.support.publish_job import CANARY, hub_job, make_job

REPO = "alice/qwen-style"
COMMIT_LIMIT = {
    # The Hub's per-repo commit limit, as it answered in braindecode/braindecode#947: the
    # RateLimit header is the *api* bucket's, with requests left; the message has the wait.
    "X-Error-Message": "You have exceeded the rate limit for repository commits (128 per hour). "
    "You can retry this action in about 1 hour.",
    "RateLimit": '"api";r=949;t=271',
    "RateLimit-Policy": '"fixed window";"api";q=1000;w=300',
}
T0 = 1_800_000_000.0


class Clock:
    """A clock that the injected sleep moves forward."""

    def __init__(self) -> None:
        self.now = T0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def hub() -> Iterator[FakeHub]:
    with FakeHub(xet=False) as fake:  # the limits are the commit POST's: no file goes by Xet
        fake.users[CANARY["hf_output"]] = "alice"
        fake.add_repo(REPO)
        yield fake


def _inputs(tmp_path: Path) -> PublishInputs:
    return hub_job(tmp_path, REPO)


def _publisher(
    hub: FakeHub, inputs: PublishInputs, clock: Clock, wait_s: float = 900.0
) -> HubPublisher:
    policy = RetryPolicy(attempts=4, base_s=0.01, cap_s=0.05, publish_wait_s=wait_s)
    return HubPublisher(
        inputs,
        endpoint=hub.url,
        policy=policy,
        sleep=clock.sleep,
        rng=random.Random(1),
        clock=clock,
    )


def _ours(hub: FakeHub) -> int:
    return sum(MARKER_PREFIX in c["message"] for c in hub.commits(REPO))


def test_the_commit_limit_defers_the_publish_at_once(hub: FakeHub, tmp_path: Path) -> None:
    inputs = _inputs(tmp_path)
    hub.fail(429, method="POST", path_contains="/commit/", headers=COMMIT_LIMIT)
    clock = Clock()
    with pytest.raises(PublishDeferred) as info:
        _publisher(hub, inputs, clock).publish()
    deferred = info.value
    assert deferred.retry_at == T0 + 3600  # "about 1 hour", not the api bucket's t=271
    assert clock.sleeps == []  # no GPU time spent waiting for an hour it cannot wait
    assert deferred.lora_path == str(inputs.lora_path.absolute())
    assert str(inputs.lora_path.absolute()) in str(deferred)
    assert "2027-01-15T09:00:00Z" in str(deferred)  # T0 + 1 h, in UTC
    assert "128 per hour" in str(deferred)  # the Hub's own reason
    assert hub.count("POST", "/commit/") == 1
    assert _ours(hub) == 0
    # Every job on the volume committing to this repo now holds off until then.
    ledger = CommitLedger.for_job(inputs.job_dir, REPO, clock=clock)
    assert ledger.wait_s("publish") == pytest.approx(3600)


def test_a_wait_within_the_bound_is_waited_once_by_the_hubs_time(
    hub: FakeHub, tmp_path: Path
) -> None:
    inputs = _inputs(tmp_path)
    headers = {**COMMIT_LIMIT, "X-Error-Message": "You can retry this action in about 5 minutes."}
    hub.fail(429, method="POST", path_contains="/commit/", headers=headers)
    clock = Clock()
    _publisher(hub, inputs, clock).publish()
    assert len(clock.sleeps) == 1
    assert 300 <= clock.sleeps[0] <= 301
    assert hub.count("POST", "/commit/") == 2
    assert _ours(hub) == 1


def test_the_bound_is_the_environments_choice(hub: FakeHub, tmp_path: Path) -> None:
    """The same 5-minute wait past a 60 s bound: deferred, nothing slept."""
    inputs = _inputs(tmp_path)
    headers = {**COMMIT_LIMIT, "X-Error-Message": "You can retry this action in about 5 minutes."}
    hub.fail(429, method="POST", path_contains="/commit/", headers=headers)
    clock = Clock()
    with pytest.raises(PublishDeferred) as info:
        _publisher(hub, inputs, clock, wait_s=60).publish()
    assert info.value.retry_at == T0 + 300
    assert clock.sleeps == []


def test_a_spent_budget_in_the_shared_ledger_defers_without_a_request(
    hub: FakeHub, tmp_path: Path
) -> None:
    """Other jobs' commits to the repo count: 128 in the last hour, the oldest 10 min ago."""
    inputs = _inputs(tmp_path)
    clock = Clock()
    ledger = CommitLedger.for_job(inputs.job_dir, REPO, clock=clock)
    clock.now = T0 - 600
    for _ in range(HOURLY_LIMIT):
        ledger.record("updates")
    clock.now = T0
    with pytest.raises(PublishDeferred) as info:
        _publisher(hub, inputs, clock).publish()
    assert info.value.retry_at == pytest.approx(T0 + 3000, abs=1)
    assert hub.count("POST", "/commit/") == 0
    assert clock.sleeps == []


def test_a_budget_that_frees_up_within_the_bound_is_waited_and_the_commit_recorded(
    hub: FakeHub, tmp_path: Path
) -> None:
    inputs = _inputs(tmp_path)
    clock = Clock()
    ledger = CommitLedger.for_job(inputs.job_dir, REPO, clock=clock)
    clock.now = T0 - 3500
    ledger.record("updates")
    clock.now = T0 - 60
    for _ in range(HOURLY_LIMIT - 1):
        ledger.record("updates")
    clock.now = T0
    _publisher(hub, inputs, clock).publish()
    assert len(clock.sleeps) == 1
    assert 100 <= clock.sleeps[0] <= 101  # until the oldest commit leaves the hour
    assert _ours(hub) == 1
    assert ledger.commits_in_last_hour() == HOURLY_LIMIT  # the oldest left, ours came in


def test_a_long_429_on_another_call_defers_too(
    hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """whoami has its own, tighter limit; the client retries it for seconds, then raises the
    429: an hour asked there is not slept through either."""
    output = {"method": "huggingface", "huggingface": {"token": CANARY["hf_output"]}}
    inputs = make_job(tmp_path, output)
    clock = Clock()
    publisher = _publisher(hub, inputs, clock)
    request = httpx2.Request("GET", f"{hub.url}/api/whoami-v2")

    def limited() -> Any:
        raise HfHubHTTPError(
            "429 Too Many Requests\nYou can retry this action in about 1 hour.",
            response=httpx2.Response(429, request=request),
        )

    monkeypatch.setattr(publisher.api, "whoami", limited)
    with pytest.raises(PublishDeferred) as info:
        publisher.publish()
    assert info.value.retry_at == T0 + 3600
    assert clock.sleeps == []
