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

from stages.errors import StageFailed
from stages.publish.common import PublishInputs, RetryPolicy
from stages.publish.hub import MARKER_PREFIX, REFUSED, HubPublisher
from stages.publish.stage import PublishOptions, publish
from tests.support.fakehub import FakeHub
from tests.support.publish_job import CANARY, JOB_ID, assert_no_canary, lora_bytes, make_job

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
        "config/dataset.toml",
        "config/qwen.toml",
    ]
    assert files["adapter_model.safetensors"] == lora_bytes(2)
    assert len(ours(hub)) == 1
    assert hub.count("POST", "/commit/") == 1
    assert JOB_ID in ours(hub)[0]["message"]
    url = f"{hub.url}/{REPO}/resolve/main/adapter_model.safetensors?download=true"
    out = result["output"]
    assert out["download_url"] == out["safetensors_url"] == url
    assert out["repo_url"] == f"{hub.url}/{REPO}"
    assert out["download_method"] == "huggingface"
    assert out["expires_in_days"] is None
    assert httpx.get(url).content == lora_bytes(2)  # the URL serves the file itself
    assert result["details"]["private"] is True
    # A second delivery finds its marker and commits nothing.
    again = publish(inputs, PublishOptions(hub_endpoint=hub.url, hf_policy=FAST))
    assert again["details"]["committed_now"] is False
    assert hub.count("POST", "/commit/") == 1


def test_repo_id_from_whoami(hub: FakeHub, tmp_path: Path) -> None:
    inputs = make_job(tmp_path, hf_output(repo_id=None, private=False))
    result = publish(inputs, PublishOptions(hub_endpoint=hub.url, hf_policy=FAST))
    repo = "alice/qwen-lora-a1b2c3d4"
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
    assert meta["license"] == "other"
    assert meta["license_link"] == "https://huggingface.co/Qwen/Qwen-Image"
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
    assert files["adapter_model.safetensors"] == lora_bytes(3)
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
    assert expected <= sleeps[0] <= expected + FAST.base_s
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
    # Listed before the first try and again after the lost answer.
    assert hub.count("GET", "/commits/") == 2
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
