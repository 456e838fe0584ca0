"""A bad destination costs no GPU time, end to end: localpod runs the real SDK worker loop over
handler.py, the loopback Hub (DPS_HUB_ENDPOINT, so nothing reaches the internet) answers tokens
as the Hub does, and the job fails at STARTING, within seconds, naming the field, before the
dataset or the base model is fetched."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from events.store import EventStore
from localpod import LocalPod
from tests.support.dataserver import DataServer
from tests.support.fakehub import FakeHub, Token
from tests.support.media import shades_zip
from tests.support.paths import REPO

pytestmark = pytest.mark.slow
HANDLER = REPO / "handler.py"
TOKEN = "hf_BAD_DESTINATION_CANARY_77"
FAILS_WITHIN_S = 20.0  # the checks' own bounds are seconds; before them it took ~105 s


@pytest.fixture
def hub() -> Iterator[FakeHub]:
    with FakeHub() as running:
        yield running


def _pod(tmp_path: Path, hub: FakeHub) -> LocalPod:
    return LocalPod(
        HANDLER,
        env={"DPS_ROOT": str(tmp_path / "root"), "DPS_HUB_ENDPOINT": hub.url},
        log_dir=tmp_path / "logs",
        ping_timeout_s=None,
    )


def _run(pod: LocalPod, body: dict[str, Any]) -> str:
    answer = httpx.post(f"{pod.url}/run", json=body, headers={"Authorization": "Bearer k"})
    answer.raise_for_status()
    return str(answer.json()["id"])


def _closed_port() -> int:
    with socket.socket() as sock:  # bound then closed: nothing listens there
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _files(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*")) if folder.exists() else []


def test_the_quick_start_with_a_refused_token_and_a_dead_dataset_host_fails_in_seconds(
    tmp_path: Path, hub: FakeHub
) -> None:
    """The seed README's Qwen quick-start body, with a token the Hub refuses and a dataset URL on
    a host that does not answer."""
    hub.refused_tokens.add(TOKEN)
    body = {
        "input": {
            "model_type": "qwen",
            "dataset": {
                "type": "precaptioned",
                "images_url": f"http://127.0.0.1:{_closed_port()}/my_dataset.zip",
            },
            "training": {"epochs": 100, "lora_rank": 32, "save_every_n_epochs": 20},
            "output": {
                "method": "huggingface",
                "huggingface": {
                    "token": TOKEN,
                    "repo_id": "your-username/my-lora",
                    "private": True,
                },
            },
        }
    }
    root = tmp_path / "root"
    with _pod(tmp_path, hub) as pod:
        pod.wait_ready(60)
        started = time.monotonic()
        job_id = _run(pod, body)
        final = pod.wait_for(job_id, timeout=180)
        elapsed = time.monotonic() - started
    assert final["status"] == "FAILED", final
    error = str(final.get("error"))
    assert "output.huggingface.token: the Hub refused this token" in error, final
    assert "dataset.images_url:" in error
    assert TOKEN not in str(final)
    assert elapsed < FAILS_WITHIN_S, f"FAILED only after {elapsed:.0f} s"
    assert _files(root / "models") == []  # the base model's download never started
    assert _files(root / "jobs" / job_id / "downloads") == []  # nor the dataset's
    assert hub.downloads() == 0  # not a weights file asked for


def test_a_read_only_token_fails_before_training(tmp_path: Path, hub: FakeHub) -> None:
    hub.tokens[TOKEN] = Token(user="alice", role="read")
    with DataServer() as data:
        data.files["/d.zip"] = shades_zip(6)
        body = {
            "input": {
                "model_type": "tiny",
                "dataset": {"type": "precaptioned", "images_url": data.url + "/d.zip"},
                "training": {"epochs": 2, "resolution": 32},
                "output": {
                    "method": "huggingface",
                    "huggingface": {"token": TOKEN, "repo_id": "alice/tiny-lora"},
                },
            }
        }
        with _pod(tmp_path, hub) as pod:
            job_id = _run(pod, body)
            final = pod.wait_for(job_id, timeout=180)
        downloads = data.gets("/d.zip")
    statuses = [e.status for e in EventStore.on_disk(tmp_path / "root").read(job_id)]
    assert "TRAINING" not in statuses, statuses
    assert statuses[-1] == "ERROR"
    assert final["status"] == "FAILED", final
    assert str(final.get("error")).startswith("output.huggingface.token: this is a read-only token")
    assert downloads == []  # the dataset was not downloaded either
    assert ("model", "alice/tiny-lora") not in hub.repos
