"""Xet failures met by a publish, as the real hf_xet client raises them against the fake Hub's
token routes and its loopback CAS: a refused token is REFUSED at once; 429/5xx and dropped
connections are retried within the policy, after a marker scan, and never make two commits.

hf_xet retries inside itself first (by default 6 tries over minutes); tests/conftest.py cuts
that for the session, before any test uses it (hf_xet reads its settings once per process)."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hf_xet  # type: ignore[import-untyped]
import pytest
from huggingface_hub import hf_hub_download

from stages.errors import StageFailed
from stages.publish.common import PublishInputs, RetryPolicy
from stages.publish.hub import MARKER_PREFIX, REFUSED, HubPublisher
from tests.support.fakehub import FakeHub
from tests.support.publish_job import CANARY, hub_job, is_published_lora

REPO = "alice/qwen-style"
FAST = RetryPolicy(attempts=4, base_s=0.01, cap_s=0.05)
LORA = "adapter_model.safetensors"


@pytest.fixture
def hub() -> Iterator[FakeHub]:
    with FakeHub() as fake:
        fake.users[CANARY["hf_output"]] = "alice"
        fake.add_repo(REPO)
        yield fake


def _inputs(tmp_path: Path) -> PublishInputs:
    return hub_job(tmp_path, REPO)


def _publish(hub: FakeHub, inputs: PublishInputs, sleeps: list[float]) -> dict[str, Any]:
    publisher = HubPublisher(
        inputs, endpoint=hub.url, policy=FAST, sleep=sleeps.append, rng=random.Random(1)
    )
    return publisher.publish().details


def _ours(hub: FakeHub) -> int:
    return sum(MARKER_PREFIX in c["message"] for c in hub.commits(REPO))


def _assert_published_once_through_xet(hub: FakeHub, tmp_path: Path) -> None:
    assert _ours(hub) == 1
    assert LORA in hub.xet_paths(REPO)  # the LoRA went through the CAS, as on the real Hub
    got = hf_hub_download(
        REPO, LORA, endpoint=hub.url, token=CANARY["hf_output"], cache_dir=tmp_path / "read-back"
    )
    assert is_published_lora(Path(got).read_bytes(), 2)


@pytest.mark.parametrize("status", [401, 403])
def test_a_refused_xet_write_token_is_refused_at_once(
    hub: FakeHub, tmp_path: Path, status: int
) -> None:
    hub.fail(status, method="GET", path_contains="xet-write-token", times=20)
    sleeps: list[float] = []
    with pytest.raises(StageFailed) as info:
        _publish(hub, _inputs(tmp_path), sleeps)
    assert str(info.value) == REFUSED
    assert sleeps == []  # not retried
    assert hub.count("POST", "/commit/") == 0


def test_a_cas_that_refuses_the_token_is_refused(hub: FakeHub, tmp_path: Path) -> None:
    hub.cas.fail(403, method="POST", path_contains="/v1/xorbs/", times=50)
    with pytest.raises(StageFailed) as info:
        _publish(hub, _inputs(tmp_path), [])
    assert str(info.value) == REFUSED


def test_xet_authentication_error_is_refused(
    hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """hf_xet's own auth error (a PermissionError), raised from inside the commit."""
    publisher = HubPublisher(_inputs(tmp_path), endpoint=hub.url, policy=FAST, sleep=lambda s: None)

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise hf_xet.XetAuthenticationError("token refresh refused")

    monkeypatch.setattr(publisher.api, "create_commit", refuse)
    with pytest.raises(StageFailed) as info:
        publisher.publish()
    assert str(info.value) == REFUSED


@pytest.mark.parametrize("status", [429, 503])
def test_a_failing_xet_token_route_is_retried_and_commits_once(
    hub: FakeHub, tmp_path: Path, status: int
) -> None:
    # Two answers: hf_xet's own try and its one retry here; the publisher's next try passes.
    hub.fail(status, method="GET", path_contains="xet-write-token", times=2)
    sleeps: list[float] = []
    _publish(hub, _inputs(tmp_path), sleeps)
    assert len(sleeps) == 1
    assert hub.count("GET", "/commits/") == 1  # the marker scan ran before the retry
    assert hub.count("POST", "/commit/") == 1
    _assert_published_once_through_xet(hub, tmp_path)


def test_a_cas_5xx_on_the_xorb_upload_is_retried(hub: FakeHub, tmp_path: Path) -> None:
    hub.cas.fail(503, method="POST", path_contains="/v1/xorbs/", times=2)
    sleeps: list[float] = []
    _publish(hub, _inputs(tmp_path), sleeps)
    assert len(sleeps) == 1
    assert hub.count("POST", "/commit/") == 1
    _assert_published_once_through_xet(hub, tmp_path)


def test_a_dropped_shard_upload_is_retried_and_commits_once(hub: FakeHub, tmp_path: Path) -> None:
    hub.cas.drop(method="POST", path_contains="/v1/shards", times=2)
    sleeps: list[float] = []
    _publish(hub, _inputs(tmp_path), sleeps)
    assert len(sleeps) == 1
    assert hub.count("GET", "/commits/") == 1
    _assert_published_once_through_xet(hub, tmp_path)


def test_a_commit_answer_lost_after_the_xet_upload_makes_no_duplicate(
    hub: FakeHub, tmp_path: Path
) -> None:
    hub.drop(method="POST", path_contains="/commit/")
    sleeps: list[float] = []
    details = _publish(hub, _inputs(tmp_path), sleeps)
    assert details["committed_now"] is False  # found by its marker after the lost answer
    assert hub.count("POST", "/commit/") == 1
    _assert_published_once_through_xet(hub, tmp_path)


def test_a_cas_that_keeps_failing_fails_after_the_policys_tries(
    hub: FakeHub, tmp_path: Path
) -> None:
    hub.cas.fail(503, method="POST", path_contains="/v1/xorbs/", times=100)
    sleeps: list[float] = []
    with pytest.raises(StageFailed, match=r"^Hugging Face commit failed: ConnectionError: "):
        _publish(hub, _inputs(tmp_path), sleeps)
    assert len(sleeps) == FAST.attempts - 1
    assert hub.count("POST", "/commit/") == 0
    assert CANARY["hf_output"] not in str(sleeps)
