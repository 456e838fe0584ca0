"""The access stage through the runner: every check at once against loopback servers, one error
naming every field to fix, warnings for destinations that do not answer, a bounded wait, and a
check on every delivery."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from events.store import EventStore
from events.vocabulary import Status
from orchestrator.catalogue import get_model
from orchestrator.runner import run_job
from stages.access.inputs import AccessInputs, Bounds, DatasetTarget, HubTarget
from stages.access.stage import Access
from stages.contract import Stage, StageContext
from stages.dataset.folder import write_marker
from stages.dataset.inputs import DatasetSource
from stages.errors import JobInterrupted
from tests.support.dataserver import DataServer
from tests.support.fakehub import FakeHub, Token
from tests.support.flash_attn_stub import hide_flash_attn

TOKEN = "hf_stage_check_secret_0002"
FAST = Bounds(waits_s=(0.0,))


class After(Stage):
    """The stage after access: records each run; `interrupt` stops the first delivery there."""

    name = "after"
    status = Status.DOWNLOADING

    def __init__(self, interrupt: bool = False) -> None:
        self.runs = 0
        self.interrupt = interrupt

    def run(self, ctx: StageContext) -> dict[str, Any]:
        self.runs += 1
        if self.interrupt and self.runs == 1:
            raise JobInterrupted("stopped for the test")
        return {"ok": True}


class Step(Stage):
    """A stage that only walks the job on to COMPLETE (MODEL_DOWNLOAD, TRAINING, UPLOADING)."""

    def __init__(self, status: Status) -> None:
        self.name, self.status = status.value.lower(), status

    def run(self, ctx: StageContext) -> dict[str, Any]:
        return {}


TAIL = (Status.MODEL_DOWNLOAD, Status.TRAINING, Status.UPLOADING)


@pytest.fixture
def servers() -> Iterator[tuple[FakeHub, DataServer]]:
    with FakeHub() as hub, DataServer() as data:
        data.files["/d.zip"] = b"PK\x05\x06" + bytes(18)
        yield hub, data


def _inputs(hub_url: str, dataset_url: str, **kw: Any) -> AccessInputs:
    source = DatasetSource("images_url", dataset_url)
    base: dict[str, Any] = {
        "hub": HubTarget(SecretStr(TOKEN), "me/lora", True, "tiny", "j1", hub_url),
        "dataset": DatasetTarget((source,)),
        "secrets": (TOKEN,),
        "bounds": FAST,
    }
    return AccessInputs(**{**base, **kw})


def _run(root: Path, inputs: AccessInputs, after: After, job_id: str = "j1") -> Any:
    access = Access(inputs, sleep=lambda _s: None)
    stages = [access, after, *(Step(status) for status in TAIL)]
    return run_job(root=root, job_id=job_id, stages=stages, secrets=[TOKEN])


def _result(root: Path, job_id: str = "j1") -> dict[str, Any]:
    events = EventStore.on_disk(root).read(job_id)
    done = [e for e in events if e.type == "STAGE_DONE" and e.data["stage"] == "access"]
    return dict(done[-1].data["result"])


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_every_refusal_is_named_in_one_error_before_the_next_stage(
    tmp_path: Path, servers: tuple[FakeHub, DataServer]
) -> None:
    hub, data = servers
    hub.refused_tokens.add(TOKEN)
    after = After()
    started = time.monotonic()
    out = _run(tmp_path, _inputs(hub.url, data.url + "/missing.zip"), after)
    assert time.monotonic() - started < 10  # seconds, not a training run
    assert out.status is Status.ERROR
    assert out.error.startswith("output.huggingface.token: the Hub refused this token")
    assert "; dataset.images_url: not found at" in out.error
    assert TOKEN not in out.error
    assert after.runs == 0
    events = EventStore.on_disk(tmp_path).read("j1")
    assert events[-1].data["stage"] == "access"


def test_a_destination_that_does_not_answer_is_a_warning_and_the_job_goes_on(
    tmp_path: Path, servers: tuple[FakeHub, DataServer]
) -> None:
    hub, data = servers
    hub.fail(503, path_contains="whoami", times=100)
    after = After()
    out = _run(tmp_path, _inputs(hub.url, data.url + "/d.zip"), after)
    assert out.status is Status.COMPLETE, out.error
    assert after.runs == 1
    result = _result(tmp_path)
    (warning,) = result["warnings"]
    assert warning.startswith("output.huggingface: not confirmed (whoami: HTTP 503")
    assert "publishing will try again" in warning
    assert result["dataset.images_url"]["status"] == 206
    assert TOKEN not in str(result)


def test_a_dataset_that_does_not_answer_fails_the_job(
    tmp_path: Path, servers: tuple[FakeHub, DataServer]
) -> None:
    hub, _ = servers
    after = After()
    out = _run(tmp_path, _inputs(hub.url, f"http://127.0.0.1:{_closed_port()}/d.zip"), after)
    assert out.status is Status.ERROR
    assert out.error.startswith("dataset.images_url: 127.0.0.1:")
    assert "did not answer (ConnectError), after 3 tries" in out.error
    assert "nothing can train without the dataset" in out.error
    assert after.runs == 0


def test_a_destination_that_hangs_is_given_up_at_the_deadline(
    tmp_path: Path, servers: tuple[FakeHub, DataServer]
) -> None:
    """The Hub client has no timeout: a server that takes the connection and never answers
    must not hold the job past the stage's deadline."""
    _, data = servers
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # connections complete in the backlog; nothing ever answers
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        inputs = _inputs(url, data.url + "/d.zip", bounds=Bounds(waits_s=(0.0,), deadline_s=1.0))
        started = time.monotonic()
        out = _run(tmp_path, inputs, After())
        elapsed = time.monotonic() - started
    assert out.status is Status.COMPLETE, out.error
    assert elapsed < 10
    assert _result(tmp_path)["warnings"] == [
        "output.huggingface: not confirmed (no answer within 1 s); publishing will try again"
    ]


def test_every_delivery_checks_again(tmp_path: Path, servers: tuple[FakeHub, DataServer]) -> None:
    hub, data = servers
    after = After(interrupt=True)
    inputs = _inputs(hub.url, data.url + "/d.zip")
    first = _run(tmp_path, inputs, after)
    assert first.status is Status.INTERRUPTED
    hub.tokens[TOKEN] = Token(role="read")  # the token lost its write access meanwhile
    again = _run(tmp_path, inputs, after)
    assert again.status is Status.ERROR
    assert again.error.startswith("output.huggingface.token: this is a read-only token")
    assert hub.count("GET", "/api/whoami-v2") == 2
    assert after.runs == 1


def test_an_extracted_dataset_is_not_probed_again(
    tmp_path: Path, servers: tuple[FakeHub, DataServer]
) -> None:
    hub, data = servers
    dataset = tmp_path / "jobs" / "j1" / "dataset"
    (dataset / "images").mkdir(parents=True)
    (dataset / "images" / "a.png").write_bytes(b"png")
    write_marker(dataset)
    out = _run(tmp_path, _inputs(hub.url, data.url + "/gone.zip"), After())
    assert out.status is Status.COMPLETE, out.error
    assert data.requests == []
    assert _result(tmp_path)["checked"] == ["hub"]


def test_a_worker_that_cannot_train_the_model_refuses_before_any_request(
    tmp_path: Path, servers: tuple[FakeHub, DataServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    hub, data = servers
    hide_flash_attn(monkeypatch)
    inputs = _inputs(hub.url, data.url + "/d.zip", model=get_model("wan13").info)
    out = _run(tmp_path, inputs, After())
    assert out.status is Status.ERROR
    assert "Wan 1.3B needs flash-attn" in out.error
    assert hub.requests == []
    assert data.requests == []
