"""A Wan job on a worker that cannot import flash-attn is refused at STARTING, before the model
or the dataset is fetched, with the build argument to fix; other models are not affected.

diffusion-pipe's Wan code would otherwise fail only after the weights download (tens of GB) and
latent caching, on a bare `assert FLASH_ATTN_2_AVAILABLE`. The worker runs through `handle()`
with the loopback Hub holding the model's weights and a loopback dataset server: a refused job
must leave both without a single request.
"""

from __future__ import annotations

import asyncio
import io
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from events.store import EventStore
from orchestrator.catalogue import MODEL_TYPES, get_model
from orchestrator.settings import Settings
from orchestrator.worker import WorkerOptions, handle
from tests.support.dataserver import DataServer
from tests.support.fakehub import FakeHub
from tests.support.flash_attn_stub import hide_flash_attn

WAN = ("wan13", "wan14b_t2v", "wan14b_i2v")


def _zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("a.txt", "never read: the job stops before its dataset")
    return buf.getvalue()


@pytest.fixture
def hub() -> Iterator[FakeHub]:
    with FakeHub() as running:
        yield running


@pytest.fixture
def data() -> Iterator[DataServer]:
    with DataServer() as srv:
        srv.files["/media.zip"] = _zip()
        yield srv


def _body(model_type: str, url: str, out: Path) -> dict[str, Any]:
    field = "images_url" if get_model(model_type).trains_images else "videos_url"
    return {
        "model_type": model_type,
        "dataset": {"type": "precaptioned", field: url},
        "training": {"epochs": 1},
        "output": {"method": "local", "local": {"path": str(out)}},
    }


def _options(root: Path, hub: FakeHub) -> WorkerOptions:
    for download in get_model("wan13").downloads + get_model("wan14b_i2v").downloads:
        hub.add_repo(download.repo_id, {"config.json": b"{}"})
    settings = Settings(root=root, hub_endpoint=hub.url, diffusion_pipe_dir=root.parent)
    return WorkerOptions(settings=settings, progress_every_s=0)


def test_the_catalogue_marks_exactly_the_wan_models() -> None:
    assert tuple(m for m in MODEL_TYPES if get_model(m).needs_flash_attn) == WAN
    assert all(get_model(m).info.needs_flash_attn for m in WAN)  # what the stages are told


@pytest.mark.parametrize("model_type", WAN)
def test_a_wan_job_is_refused_at_starting_before_any_download(
    model_type: str,
    tmp_path: Path,
    hub: FakeHub,
    data: DataServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    hide_flash_attn(monkeypatch)
    root = tmp_path / "root"
    body = _body(model_type, data.url + "/media.zip", tmp_path / "out")

    response = asyncio.run(handle({"id": "no-fa", "input": body}, _options(root, hub)))

    assert response["status"] == "failed"
    error = response["error"]
    assert f"{get_model(model_type).display_name} needs flash-attn" in error
    assert "No module named 'flash_attn'" in error
    assert "FLASH_ATTN_WHEEL" in error
    assert hub.requests == []  # no weights listed or fetched
    assert data.requests == []  # no dataset fetched
    events = EventStore.on_disk(root).read("no-fa")
    assert [e.status for e in events] == ["INITIALIZED", "STARTING", "ERROR"]
    assert events[-1].data["stage"] == "access"  # refused before any check reaches out
    assert events[-1].data["error"] == error
    assert not [p for p in (root / "models").rglob("*") if p.is_file()]


def test_a_resumed_wan_job_is_refused_again_on_a_worker_without_it(
    tmp_path: Path, hub: FakeHub, data: DataServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first delivery passed STARTING (flash-attn there) and failed on its dataset; the
    resume lands on a worker without flash-attn: refused at STARTING again, fetching nothing."""
    root = tmp_path / "root"
    missing = _body("wan13", data.url + "/missing.zip", tmp_path / "out")
    first = asyncio.run(handle({"id": "moved", "input": missing}, _options(root, hub)))
    assert "dataset.images_url" in first["error"]  # got past STARTING

    hide_flash_attn(monkeypatch)
    with FakeHub() as hub2, DataServer() as data2:  # fresh servers: only this delivery's calls
        data2.files["/media.zip"] = _zip()
        body = _body("wan13", data2.url + "/media.zip", tmp_path / "out")
        again = asyncio.run(handle({"id": "moved", "input": body}, _options(root, hub2)))
        assert hub2.requests == []
        assert data2.requests == []

    assert again["status"] == "failed"
    assert "Wan 1.3B needs flash-attn" in again["error"]
    events = EventStore.on_disk(root).read("moved")
    assert [e.status for e in events][-3:] == ["RESUMED", "STARTING", "ERROR"]


def test_other_models_do_not_need_it(
    tmp_path: Path, hub: FakeHub, data: DataServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without flash-attn an image model still passes STARTING (and fails later, here on a
    dataset that is not media, which shows it got that far)."""
    hide_flash_attn(monkeypatch)
    root = tmp_path / "root"
    body = _body("qwen", data.url + "/media.zip", tmp_path / "out")
    response = asyncio.run(handle({"id": "image-model", "input": body}, _options(root, hub)))
    assert response["status"] == "failed"
    assert "flash-attn" not in response["error"]
    assert data.gets("/media.zip")  # the dataset stage ran
