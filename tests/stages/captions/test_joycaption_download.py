"""JoyCaption's weights come through the weights machinery: the catalogue's pinned revision,
fetched from the loopback Hub (Xet) by the real client under the folder lock with the
completion manifest, started at STARTING beside the base model, shown as progress while the
captions stage waits, never fetched twice (not after a kill either), and refused before the
first byte when the volume has no room for it."""

from __future__ import annotations

import dataclasses
import multiprocessing
import re
import time
from collections import namedtuple
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from huggingface_hub import HfApi

from events.store import EventStore
from events.vocabulary import Status
from orchestrator.catalogue import JOYCAPTION
from orchestrator.pipeline import Delivery, build_stages
from orchestrator.plan import caption_inputs, plan_job
from orchestrator.request import parse_request
from orchestrator.runner import run_job
from orchestrator.settings import Settings
from stages.captions.joycaption import MODEL_ID, JoyCaptionSettings
from stages.captions.stage import Captions
from stages.errors import StageFailed
from stages.training.prepare import Prepare
from stages.weights import space
from stages.weights.ensure import ensure_model
from stages.weights.manifest import MANIFEST
from stages.weights.sources import HubFiles
from stages.weights.stage import ModelDownload
from tests.stages.captions.test_stage import WriteMedia
from tests.support.fakehub import FakeHub
from tests.support.rehearsal import Publish, Train, Weights
from tests.support.tiny_llava import tiny_llava_dir
from tests.support.weights_settings import weights_settings

GREEDY = JoyCaptionSettings(do_sample=False, max_new_tokens=5, batch_size=2)


def _settings(tmp_path: Path, endpoint: str) -> Settings:
    return weights_settings(tmp_path, endpoint, model_wait_s=30.0)


@pytest.fixture
def hub() -> Iterator[FakeHub]:
    """The tiny LLaVA as JoyCaption's repo on the loopback Hub."""
    files = {p.name: p.read_bytes() for p in sorted(tiny_llava_dir().iterdir()) if p.is_file()}
    with FakeHub() as running:
        running.add_repo(MODEL_ID, files)
        yield running


def _spec(hub: FakeHub) -> HubFiles:
    """The catalogue's JoyCaption source at the fake repo's commit (the pin names Hugging
    Face's)."""
    sha = HfApi(endpoint=hub.url, token=False).model_info(MODEL_ID).sha
    [spec] = JOYCAPTION
    assert isinstance(spec, HubFiles)
    return dataclasses.replace(spec, revision=str(sha))


def _captions_job(tmp_path: Path, download: ModelDownload) -> list[Any]:
    request = parse_request(
        {
            "model_type": "wan13",
            "dataset": {"type": "images", "images_url": "http://example.invalid/i.zip"},
            "output": {"method": "local", "local": {"path": str(tmp_path / "out")}},
        }
    )
    inputs = caption_inputs(request)
    assert inputs is not None
    captions = Captions(inputs, model=download, joycaption=GREEDY)
    return [WriteMedia(), captions, Weights(), Train(epochs=1), Publish(tmp_path / "pub")]


def test_the_catalogue_pins_a_commit_of_joycaption() -> None:
    [spec] = JOYCAPTION
    assert isinstance(spec, HubFiles)
    assert spec.repo_id == "fancyfeast/llama-joycaption-beta-one-hf-llava"
    assert re.fullmatch(r"[0-9a-f]{40}", spec.revision)
    assert spec.allow_patterns is not None
    assert "*.safetensors" in spec.allow_patterns


def test_the_captions_stage_waits_for_the_download_with_progress_and_reuses_it(
    tmp_path: Path, hub: FakeHub
) -> None:
    settings = _settings(tmp_path, hub.url)
    spec = _spec(hub)
    download = ModelDownload("joycaption", (spec,), settings.weights)
    out = run_job(root=settings.root, job_id="j1", stages=_captions_job(tmp_path, download))
    assert out.status is Status.COMPLETE, out.error
    fetched = hub.downloads()
    assert fetched == len(list(tiny_llava_dir().iterdir()))
    assert hub.cas.count("GET", "/v1/reconstructions/") >= 1  # the weights came through Xet
    assert (settings.models_root / "joycaption" / MANIFEST).is_file()
    events = EventStore.on_disk(settings.root).read("j1")
    shown = [e.data for e in events if e.data.get("model_type") == "joycaption"]
    assert shown, "no progress while JoyCaption downloaded"
    assert all(d["stage"] == "captions" for d in shown)
    assert shown[-1]["message"] == "model ready"
    assert shown[-1]["bytes_done"] == shown[-1]["bytes_total"] > 0
    captions = sorted((settings.root / "jobs" / "j1" / "dataset" / "images").glob("*.txt"))
    assert len(captions) == 2

    again = ModelDownload("joycaption", (spec,), settings.weights)
    second = run_job(root=settings.root, job_id="j2", stages=_captions_job(tmp_path, again))
    assert second.status is Status.COMPLETE, second.error
    assert hub.downloads() == fetched  # the volume's copy, not a second download
    assert again.future.result().source == "reused"


def _download_until_killed(root: str, endpoint: str, spec: HubFiles) -> None:
    settings = _settings(Path(root), endpoint)
    options = dataclasses.replace(settings.weights, download_workers=1)
    ensure_model("joycaption", [spec], options=options)


def test_a_download_killed_midway_resumes_without_fetching_a_file_twice(
    tmp_path: Path, hub: FakeHub
) -> None:
    spec = _spec(hub)
    settings = _settings(tmp_path, hub.url)
    hub.delay_s = 0.4  # one file at a time, each slow: the kill lands between files
    proc = multiprocessing.get_context("spawn").Process(
        target=_download_until_killed, args=(str(tmp_path), hub.url, spec)
    )
    proc.start()
    folder = settings.models_root / "joycaption"
    deadline = time.monotonic() + 60
    while not (folder.is_dir() and any(folder.iterdir())):
        assert time.monotonic() < deadline, "nothing was placed"
        time.sleep(0.02)
    proc.kill()
    proc.join(timeout=10)
    placed = {p.name for p in folder.iterdir()}
    before = hub.downloads()
    total = len(list(tiny_llava_dir().iterdir()))
    assert 0 < len(placed) < total
    assert not (folder / MANIFEST).exists()
    hub.delay_s = 0.0
    download = ModelDownload("joycaption", (spec,), settings.weights)
    out = run_job(root=settings.root, job_id="k1", stages=_captions_job(tmp_path, download))
    assert out.status is Status.COMPLETE, out.error
    again = hub.downloads() - before
    assert again == total - len(placed)  # what had landed was kept
    assert (folder / MANIFEST).is_file()


def test_prepare_starts_joycaption_beside_the_base_model(tmp_path: Path) -> None:
    settings = _settings(tmp_path, "http://127.0.0.1:9")  # never reached: nothing runs
    body = {
        "model_type": "wan13",
        "dataset": {"type": "images", "images_url": "http://example.invalid/i.zip"},
        "output": {"method": "local", "local": {"path": str(tmp_path / "out")}},
    }
    plan = plan_job(parse_request(body), settings, "p1")
    delivery = Delivery(plan=plan, settings=settings)
    stages = build_stages(delivery)
    [prepare] = [s for s in stages if isinstance(s, Prepare)]
    [captions] = [s for s in stages if isinstance(s, Captions)]
    joycaption = delivery.captioner_download()
    assert joycaption is not None
    assert prepare.also == (joycaption,)
    assert captions.model is joycaption
    assert joycaption.sources == JOYCAPTION
    plain = {**body, "dataset": {"type": "precaptioned", "images_url": "http://x.invalid/i.zip"}}
    other = Delivery(plan=plan_job(parse_request(plain), settings, "p2"), settings=settings)
    assert other.captioner_download() is None


Usage = namedtuple("Usage", "total used free")


def test_a_volume_without_room_for_joycaption_is_refused_before_the_first_byte(
    tmp_path: Path, hub: FakeHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = _spec(hub)
    settings = _settings(tmp_path, hub.url)
    size = sum(p.stat().st_size for p in tiny_llava_dir().iterdir())
    monkeypatch.setattr(space, "disk_usage", lambda _p: Usage(10 * size, 9 * size, size - 1))
    with pytest.raises(StageFailed) as refused:
        ensure_model("joycaption", [spec], options=settings.weights)
    message = str(refused.value)
    assert f"not enough room on the volume for {MODEL_ID}" in message
    assert "free" in message
    assert hub.downloads() == 0
    # With room for it alone, a download already under way that still needs it all wins.
    monkeypatch.setattr(space, "disk_usage", lambda _p: Usage(10 * size, 0, size + 10))
    with (
        space.reserve(tmp_path, "black-forest-labs/FLUX.1-dev", size, lambda: 0),
        pytest.raises(StageFailed, match=r"FLUX\.1-dev still needs"),
    ):
        ensure_model("joycaption", [spec], options=settings.weights)
    assert hub.downloads() == 0
    assert ensure_model("joycaption", [spec], options=settings.weights).source == "downloaded"
