"""The Hub output check: the real huggingface_hub client against the loopback Hub, which answers
tokens as the Hub does (401 for a bad one, a read token's role in whoami and 403 on creation)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from huggingface_hub import CommitOperationAdd, HfApi
from pydantic import SecretStr

from stages.access.hub import check_hub
from stages.access.inputs import Bounds, HubTarget
from stages.access.retry import Checked, Transient
from stages.errors import StageFailed
from stages.publish.hub import marker
from tests.support.fakehub import FakeHub, Scope, Token

TOKEN = "hf_access_check_secret_0001"
FAST = Bounds(waits_s=(0.0,), retry_s=5.0)


@pytest.fixture
def hub() -> Iterator[FakeHub]:
    with FakeHub() as running:
        yield running


def _target(hub: FakeHub, repo_id: str | None = "alice/my-lora", **kw: object) -> HubTarget:
    base: dict[str, object] = {
        "token": SecretStr(TOKEN),
        "repo_id": repo_id,
        "private": True,
        "model_type": "qwen",
        "job_id": "a1b2c3d4-e5f6",
        "endpoint": hub.url,
    }
    return HubTarget(**{**base, **kw})  # type: ignore[arg-type]


def _check(hub: FakeHub, target: HubTarget, sleeps: list[float] | None = None) -> Checked:
    sleep = (sleeps if sleeps is not None else []).append
    return check_hub(target, FAST, sleep=sleep, clock=lambda: 0.0)


def test_a_write_token_creates_the_default_repo_private(hub: FakeHub) -> None:
    hub.tokens[TOKEN] = Token(user="alice")
    got = _check(hub, _target(hub, repo_id=None))
    assert got.facts == {
        "repo_id": "alice/qwen-lora-a1b2c3d4-e5f6",
        "token_role": "write",
        "private": True,
    }
    assert got.warnings == []
    assert hub.repos[("model", "alice/qwen-lora-a1b2c3d4-e5f6")].private is True
    assert hub.count("GET", "/api/whoami-v2") == 1


def test_a_token_the_hub_refuses_fails_at_once_naming_the_field(hub: FakeHub) -> None:
    hub.refused_tokens.add(TOKEN)
    sleeps: list[float] = []
    with pytest.raises(StageFailed) as info:
        _check(hub, _target(hub), sleeps)
    message = str(info.value)
    assert message.startswith("output.huggingface.token: the Hub refused this token (HTTP 401)")
    assert TOKEN not in message
    assert sleeps == []  # a definite refusal is not retried
    assert hub.count("POST", "/api/repos/create") == 0


def test_a_read_token_fails_before_any_repo_is_created(hub: FakeHub) -> None:
    hub.tokens[TOKEN] = Token(user="alice", role="read")
    with pytest.raises(
        StageFailed, match=r"^output\.huggingface\.token: this is a read-only token"
    ):
        _check(hub, _target(hub))
    assert hub.count("POST", "/api/repos/create") == 0
    assert ("model", "alice/my-lora") not in hub.repos


def test_under_auto_the_message_says_what_would_have_happened(hub: FakeHub) -> None:
    hub.tokens[TOKEN] = Token(user="alice", role="read")
    with pytest.raises(StageFailed, match="would fall back to a temporary file host"):
        _check(hub, _target(hub, auto=True))


def test_a_fine_grained_token_needs_repo_write_on_the_namespace(hub: FakeHub) -> None:
    hub.tokens[TOKEN] = Token(
        user="alice",
        role="fineGrained",
        scoped=(Scope("alice", ("repo.content.read",)), Scope("some-org", type="org")),
    )
    with pytest.raises(StageFailed, match='no write access to repos under "alice"'):
        _check(hub, _target(hub))
    hub.tokens[TOKEN] = Token(user="alice", role="fineGrained", scoped=(Scope("alice"),))
    got = _check(hub, _target(hub))
    assert got.facts["token_role"] == "fineGrained"
    assert ("model", "alice/my-lora") in hub.repos


def test_a_403_on_creation_names_the_token_and_the_repo(hub: FakeHub) -> None:
    hub.fail(403, method="POST", path_contains="/api/repos/create")
    with pytest.raises(StageFailed) as info:
        _check(hub, _target(hub, repo_id="other-org/x"))
    message = str(info.value)
    assert message.startswith(
        "output.huggingface.token: the token cannot create or write other-org/x"
    )
    assert "output.huggingface.repo_id" in message


def test_an_existing_public_repo_is_a_warning_not_a_failure(hub: FakeHub) -> None:
    hub.tokens[TOKEN] = Token(user="alice")  # the owner: the Hub shows a private repo to it
    hub.add_repo("alice/my-lora", private=False)
    got = _check(hub, _target(hub))
    assert got.facts["private"] is False
    (warning,) = got.warnings
    assert warning.startswith(
        "output.huggingface.private: alice/my-lora already exists and is public"
    )
    hub.add_repo("alice/secret", private=True)
    assert _check(hub, _target(hub, repo_id="alice/secret")).warnings == []


def test_transient_answers_are_tried_again_within_the_bound(hub: FakeHub) -> None:
    hub.fail(503, method="GET", path_contains="whoami", times=2)
    sleeps: list[float] = []
    got = _check(hub, _target(hub), sleeps)
    assert got.facts["repo_id"] == "alice/my-lora"
    assert hub.count("GET", "/api/whoami-v2") == 3
    assert len(sleeps) == 2


def test_a_hub_that_keeps_failing_is_transient_after_the_bound(hub: FakeHub) -> None:
    hub.fail(429, method="GET", path_contains="whoami", times=10)
    with pytest.raises(Transient, match="whoami: HTTP 429"):
        _check(hub, _target(hub))
    assert hub.count("GET", "/api/whoami-v2") == FAST.attempts


AUTO_REPO = "alice/qwen-lora-a1b2c3d4-e5f6"  # the default name for _target's job id


def test_an_auto_named_repo_holding_another_jobs_files_is_refused(hub: FakeHub) -> None:
    hub.tokens[TOKEN] = Token(user="alice")
    hub.add_repo(AUTO_REPO, {"adapter_model.safetensors": b"\0" * 64, "README.md": b"theirs"})
    before = hub.files(AUTO_REPO)
    with pytest.raises(StageFailed) as info:
        _check(hub, _target(hub, repo_id=None))
    message = str(info.value)
    assert message.startswith(f"output.huggingface.repo_id: {AUTO_REPO}, the name this job")
    assert f'set output.huggingface.repo_id to "{AUTO_REPO}"' in message
    assert hub.files(AUTO_REPO) == before
    # Naming it is the user's choice: then it is written.
    assert _check(hub, _target(hub, repo_id=AUTO_REPO)).facts["repo_id"] == AUTO_REPO


def test_an_auto_named_repo_with_this_jobs_trace_or_nothing_in_it_is_fine(hub: FakeHub) -> None:
    hub.tokens[TOKEN] = Token(user="alice")
    hub.add_repo(AUTO_REPO)  # empty
    assert _check(hub, _target(hub, repo_id=None)).facts["repo_id"] == AUTO_REPO
    # A publish of this job landed there (an earlier delivery): its marker names the job.
    HfApi(endpoint=hub.url, token=TOKEN).create_commit(
        AUTO_REPO,
        [CommitOperationAdd("adapter_model.safetensors", b"\1" * 64)],
        commit_message="Upload",
        commit_description=marker("a1b2c3d4-e5f6", "d1g357"),
    )
    assert _check(hub, _target(hub, repo_id=None)).facts["repo_id"] == AUTO_REPO
    # Another job whose id starts the same is not this one.
    other = _target(hub, repo_id=None, job_id="a1b2c3d4-e5f6-7")
    hub.add_repo("alice/qwen-lora-a1b2c3d4-e5f6-7", {"x.bin": b"\0"})
    with pytest.raises(StageFailed, match="already exists and holds files"):
        _check(hub, other)


def test_an_auto_named_repo_holding_only_this_jobs_updates_is_fine(hub: FakeHub) -> None:
    """The job's mirror may commit its first UPDATES before this check runs."""
    hub.tokens[TOKEN] = Token(user="alice")
    first = json.dumps({"status": "INITIALIZED", "job_id": "a1b2c3d4-e5f6"}).encode()
    hub.add_repo(AUTO_REPO, {"UPDATES/000001_INITIALIZED.json": first})
    assert _check(hub, _target(hub, repo_id=None)).facts["repo_id"] == AUTO_REPO
    theirs = json.dumps({"status": "INITIALIZED", "job_id": "someone-else"}).encode()
    hub.add_repo(AUTO_REPO, {"UPDATES/000001_INITIALIZED.json": theirs})
    with pytest.raises(StageFailed, match="already exists and holds files"):
        _check(hub, _target(hub, repo_id=None))
