"""Publish to Hugging Face: the real huggingface_hub client against the loopback fake Hub."""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml  # type: ignore[import-untyped]
from huggingface_hub import CommitOperationAdd, HfApi

from orchestrator.response import complete_event_data, response_from_results
from stages.errors import StageFailed
from stages.publish.common import PublishInputs, RetryPolicy
from stages.publish.hub import MARKER_PREFIX, REFUSED, HubPublisher
from stages.publish.stage import PublishOptions, publish
from tests.support.fakehub import FakeHub
from tests.support.publish_job import (
    CANARY,
    JOB_ID,
    assert_no_canary,
    is_published_lora,
    lora_bytes,
    make_job,
)

REPO = "alice/qwen-style"
FAST = RetryPolicy(attempts=4, base_s=0.01, cap_s=0.05)


@pytest.fixture
def hub() -> Iterator[FakeHub]:
    with FakeHub() as fake:
        fake.users[CANARY["hf_output"]] = "alice"
        yield fake


def hf_output(repo_id: str | None = REPO, private: bool | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"token": CANARY["hf_output"]}
    if repo_id:
        spec["repo_id"] = repo_id
    if private is not None:
        spec["private"] = private
    return {"method": "huggingface", "huggingface": spec}


def run(hub: FakeHub, inputs: PublishInputs, sleeps: list[float]) -> HubPublisher:
    publisher = HubPublisher(
        inputs, endpoint=hub.url, policy=FAST, sleep=sleeps.append, rng=random.Random(1)
    )
    publisher.publish()
    return publisher


def ours(hub: FakeHub, repo: str = REPO) -> list[dict[str, str]]:
    return [c for c in hub.commits(repo) if MARKER_PREFIX in c["message"]]


def test_publish_one_commit_with_everything(hub: FakeHub, tmp_path: Path) -> None:
    inputs = make_job(tmp_path, hf_output())
    result = publish(inputs, PublishOptions(hub_endpoint=hub.url, hf_policy=FAST))
    files = hub.files(REPO)
    assert sorted(files) == [
        "README.md",
        "adapter_config.json",
        "adapter_model.safetensors",
        "comfyui/qwen-style-epoch2.safetensors",  # the repo's name (it names the model), the save
        "config/dataset.toml",
        "config/qwen.toml",
    ]
    assert is_published_lora(files["adapter_model.safetensors"], 2)
    assert files["comfyui/qwen-style-epoch2.safetensors"] == files["adapter_model.safetensors"]
    assert len(ours(hub)) == 1
    assert hub.count("POST", "/commit/") == 1
    assert JOB_ID in ours(hub)[0]["message"]
    url = f"{hub.url}/{REPO}/resolve/main/adapter_model.safetensors?download=true"
    out = result["output"]
    assert out["download_url"] == out["safetensors_url"] == url
    assert out["repo_url"] == f"{hub.url}/{REPO}"
    assert out["download_method"] == "huggingface"
    assert out["expires_in_days"] is None
    # The repo is private (the default): the URL serves the file itself, to the token only.
    assert result["details"]["private"] is True
    assert httpx.get(url).status_code == 401
    bearer = {"Authorization": f"Bearer {CANARY['hf_output']}"}
    assert is_published_lora(httpx.get(url, headers=bearer, follow_redirects=True).content, 2)
    assert "Authorization: Bearer" in out["note"]
    assert "Authorization: Bearer" in complete_event_data(result)["instructions"]
    # A second delivery finds its marker and commits nothing.
    again = publish(inputs, PublishOptions(hub_endpoint=hub.url, hf_policy=FAST))
    assert again["details"]["committed_now"] is False
    assert hub.count("POST", "/commit/") == 1


def test_repo_id_from_whoami(hub: FakeHub, tmp_path: Path) -> None:
    inputs = make_job(tmp_path, hf_output(repo_id=None, private=False))
    result = publish(inputs, PublishOptions(hub_endpoint=hub.url, hf_policy=FAST))
    repo = f"alice/qwen-lora-{JOB_ID}"  # the whole id: two jobs never share a repo
    assert result["details"]["repo_id"] == repo
    assert result["details"]["private"] is False
    assert "adapter_model.safetensors" in hub.files(repo)
    assert hub.count("GET", "/api/whoami-v2") == 1


def test_model_card(hub: FakeHub, tmp_path: Path) -> None:
    inputs = make_job(tmp_path, hf_output())
    publish(inputs, PublishOptions(hub_endpoint=hub.url, hf_policy=FAST))
    card = hub.files(REPO)["README.md"].decode()
    assert card.startswith("---\n")
    front, body = card[4:].split("\n---\n", 1)
    meta = yaml.safe_load(front)
    assert meta["base_model"] == "Qwen/Qwen-Image"
    assert {"lora", "qwen_image", "diffusion-pipe"} <= set(meta["tags"])
    assert meta["instance_prompt"] == "ohwx person"
    assert meta["license"]  # per base model: tests/stages/publish/test_card.py
    assert "| `learning_rate` |" in body
    assert "| `lora_rank` | 32 |" in body
    assert "- images: 12" in body
    assert f'load_lora_weights("{REPO}", weight_name="adapter_model.safetensors")' in body
    assert "ComfyUI/models/loras/" in body
    assert_no_canary(card)


def test_upload_epochs_all(hub: FakeHub, tmp_path: Path) -> None:
    inputs = make_job(tmp_path, hf_output(), epochs=3, upload_epochs="all")
    result = publish(inputs, PublishOptions(hub_endpoint=hub.url, hf_policy=FAST))
    files = hub.files(REPO)
    for n in (1, 2, 3):
        assert files[f"epochs/epoch{n}/adapter_model.safetensors"] == lora_bytes(n)
        assert f"epochs/epoch{n}/adapter_config.json" in files
    assert is_published_lora(files["adapter_model.safetensors"], 3)
    assert hub.count("POST", "/commit/") == 1
    assert "epochs/epoch1/adapter_model.safetensors" in result["files"]


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        (
            {"RateLimit": '"api";r=0;t=7', "RateLimit-Policy": '"fixed window";"api";q=128;w=3600'},
            8,
        ),
        ({"Retry-After": "3"}, 3),
    ],
)
def test_429_waits_what_the_server_says(
    hub: FakeHub, tmp_path: Path, headers: dict[str, str], expected: float
) -> None:
    inputs = make_job(tmp_path, hf_output())
    hub.add_repo(REPO)
    hub.fail(429, method="POST", path_contains="/commit/", headers=headers)
    sleeps: list[float] = []
    run(hub, inputs, sleeps)
    assert len(sleeps) == 1
    assert expected - 0.5 <= sleeps[0] <= expected + FAST.base_s
    assert hub.count("POST", "/commit/") == 2
    assert len(ours(hub)) == 1


def test_409_lock_then_success(hub: FakeHub, tmp_path: Path) -> None:
    inputs = make_job(tmp_path, hf_output())
    hub.fail(409, method="POST", path_contains="/commit/", times=2)
    sleeps: list[float] = []
    run(hub, inputs, sleeps)
    assert len(sleeps) == 2
    assert all(0 <= s <= FAST.cap_s for s in sleeps)
    assert hub.count("POST", "/commit/") == 3
    assert len(ours(hub)) == 1


def test_dropped_response_makes_no_duplicate(hub: FakeHub, tmp_path: Path) -> None:
    inputs = make_job(tmp_path, hf_output())
    hub.drop(method="POST", path_contains="/commit/")
    sleeps: list[float] = []
    publisher = run(hub, inputs, sleeps)
    assert hub.count("POST", "/commit/") == 1  # landed once, never sent again
    assert len(ours(hub)) == 1
    assert len(sleeps) == 1
    # Listed only after the lost answer: before the job's first try nothing of it can be there.
    assert hub.count("GET", "/commits/") == 1
    assert publisher.waits == sleeps


def test_5xx_after_commit_is_checked_before_retry(hub: FakeHub, tmp_path: Path) -> None:
    inputs = make_job(tmp_path, hf_output())
    hub.fail(503, method="POST", path_contains="/commit/")
    run(hub, inputs, [])
    assert hub.count("POST", "/commit/") == 2
    assert len(ours(hub)) == 1


def test_refused_token_message_has_no_token(
    hub: FakeHub,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.INFO)
    inputs = make_job(tmp_path, hf_output())
    hub.fail(403, method="POST", path_contains="/commit/", times=10)
    with pytest.raises(StageFailed) as err:
        publish(inputs, PublishOptions(hub_endpoint=hub.url, hf_policy=FAST))
    assert str(err.value) == REFUSED
    assert hub.count("POST", "/commit/") == 1  # not retried
    out = capsys.readouterr()
    assert_no_canary(str(err.value), caplog.text, out.out, out.err)


def test_bad_request_is_not_retried(hub: FakeHub, tmp_path: Path) -> None:
    inputs = make_job(tmp_path, hf_output())
    hub.fail(400, method="POST", path_contains="/commit/", times=10)
    with pytest.raises(StageFailed, match="Hugging Face commit failed"):
        publish(inputs, PublishOptions(hub_endpoint=hub.url, hf_policy=FAST))
    assert hub.count("POST", "/commit/") == 1


def test_no_canary_anywhere(
    hub: FakeHub,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    inputs = make_job(tmp_path, hf_output(), upload_epochs="all")
    hub.fail(429, method="POST", path_contains="/commit/", headers={"Retry-After": "0"})
    result = publish(
        inputs, PublishOptions(hub_endpoint=hub.url, hf_policy=FAST, sleep=lambda s: None)
    )
    out = capsys.readouterr()
    uploaded = b"".join(hub.files(REPO).values())
    commits = json.dumps(hub.commits(REPO))
    assert_no_canary(json.dumps(result), caplog.text, out.out, out.err, uploaded, commits)


def test_an_existing_public_repo_is_reported_public_everywhere(
    hub: FakeHub, tmp_path: Path
) -> None:
    """The request asks for private (the default), but the Hub keeps an existing repo's
    visibility: the result, the response, the card and the COMPLETE data say public."""
    hub.add_repo(REPO, private=False)
    inputs = make_job(tmp_path, hf_output())
    assert inputs.destination.huggingface is not None
    assert inputs.destination.huggingface.private is True
    result = publish(inputs, PublishOptions(hub_endpoint=hub.url, hf_policy=FAST))
    assert result["details"]["private"] is False
    assert result["details"]["private_requested"] is True
    url = result["output"]["download_url"]
    assert is_published_lora(httpx.get(url, follow_redirects=True).content, 2)  # anyone can
    response = response_from_results(
        JOB_ID, "qwen", {"training": dict(inputs.training), "publish": result}
    )
    assert response["private"] is False
    data = complete_event_data(result)
    assert "Authorization" not in data["instructions"]
    assert "Authorization" not in result["output"]["note"]
    assert "This repository is public." in hub.files(REPO)["README.md"].decode()


def test_the_marker_scan_reads_only_commits_since_the_first_attempt(
    hub: FakeHub, tmp_path: Path
) -> None:
    """A repo with pages of older history (a long-lived shared repo): a retry after a lost
    answer reads one page, not the whole history."""
    hub.add_repo(REPO)
    api = HfApi(endpoint=hub.url, token=CANARY["hf_output"])
    for n in range(250):
        api.create_commit(
            REPO, [CommitOperationAdd(f"old/{n}.txt", b"%d" % n)], commit_message=f"old {n}"
        )
    repo = hub.repos[("model", REPO)]
    for sha in list(repo.meta):  # that history is a day old
        repo.meta[sha]["date"] = "2026-01-01T00:00:00.000Z"
    inputs = make_job(tmp_path, hf_output())
    hub.drop(method="POST", path_contains="/commit/")
    posts, pages = hub.count("POST", "/commit/"), hub.count("GET", "/commits/")
    run(hub, inputs, [])
    assert len(ours(hub)) == 1
    assert hub.count("POST", "/commit/") - posts == 1
    assert len(hub.commits(REPO)) > 5 * hub.commits_page_size  # pages of history
    assert hub.count("GET", "/commits/") - pages == 1  # one page read, not the history


def test_only_the_readme_check_is_reported_as_refusing_the_card(
    hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    inputs = make_job(tmp_path, hf_output())
    hub.fail(400, method="POST", path_contains="/api/validate-yaml")
    with pytest.raises(
        StageFailed, match=r"^Hugging Face refused the model card: Invalid metadata"
    ):
        publish(inputs, PublishOptions(hub_endpoint=hub.url, hf_policy=FAST))
    publisher = HubPublisher(inputs, endpoint=hub.url, policy=FAST, sleep=lambda s: None)

    def lfs_refusal(*args: Any, **kwargs: Any) -> Any:
        raise ValueError("LFS batch API returned errors: Object size exceeds the limit")

    monkeypatch.setattr(publisher.api, "create_commit", lfs_refusal)
    with pytest.raises(StageFailed) as info:
        publisher.publish()
    assert str(info.value) == (
        "Hugging Face commit failed: ValueError: LFS batch API returned errors: Object size "
        "exceeds the limit"
    )
