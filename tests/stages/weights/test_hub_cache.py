"""A source fetched into the trainer's Hugging Face cache (`hub_cache_files`): the layout that
`huggingface_hub` resolves by repo id with the Hub offline, as diffusers' from_single_file asks
for SDXL's base configs at training time."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from huggingface_hub import snapshot_download, try_to_load_from_cache

from orchestrator.settings import Settings
from stages.weights.ensure import ensure_model
from stages.weights.manifest import read_manifest
from stages.weights.sources import HUB_CACHE, HubFiles, hub_cache_files
from tests.support.fakehub import SDXL_BASE_CONFIG_FILES, FakeHub, sdxl_base_files

REPO = "stabilityai/stable-diffusion-xl-base-1.0"
PATTERNS = ("**/*.json", "*.json", "*.txt", "**/*.txt", "**/*.model")  # diffusers' own
SOURCE = hub_cache_files(REPO, PATTERNS)


@pytest.fixture
def hub() -> Iterator[FakeHub]:
    with FakeHub() as running:
        running.add_repo(REPO, sdxl_base_files())
        yield running


@pytest.fixture
def settings(tmp_path: Path, hub: FakeHub) -> Settings:
    return Settings(
        root=tmp_path / "root",
        hub_endpoint=hub.url,
        hf_cache_dir=tmp_path / "runpod-cache",
        download_attempts=1,
    )


def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """huggingface_hub reads HF_HUB_OFFLINE at import: patch its constant as the env would."""
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)


def test_lands_where_huggingface_hub_resolves_it_offline(
    hub: FakeHub, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = ensure_model("sdxl", [SOURCE], options=settings.weights)
    cache = settings.models_root / HUB_CACHE
    sha = hub.repos[("model", REPO)].branches["main"]
    folder = cache / "models--stabilityai--stable-diffusion-xl-base-1.0"
    assert (folder / "refs" / "main").read_text() == sha
    assert result.source == "downloaded"
    assert hub.downloads() == len(SDXL_BASE_CONFIG_FILES)  # configs only, not the weights

    _offline(monkeypatch)
    requests = len(hub.requests)
    found = snapshot_download(REPO, cache_dir=cache, allow_patterns=list(PATTERNS))
    assert Path(found) == folder / "snapshots" / sha
    for name in SDXL_BASE_CONFIG_FILES:  # what the component loaders then read from it
        assert try_to_load_from_cache(REPO, name, cache_dir=cache) == str(Path(found) / name)
    model_index = json.loads((Path(found) / "model_index.json").read_text())
    assert model_index["_class_name"] == "StableDiffusionXLPipeline"
    assert len(hub.requests) == requests


def test_second_job_reuses_it_without_a_request(hub: FakeHub, settings: Settings) -> None:
    first = ensure_model("sdxl", [SOURCE], options=settings.weights)
    before = len(hub.requests)
    again = ensure_model("sdxl", [SOURCE], options=settings.weights)
    assert again.source == "reused"
    assert sorted(again.files) == sorted(first.files)
    assert len(hub.requests) == before


def test_a_lost_ref_makes_the_folder_incomplete(hub: FakeHub, settings: Settings) -> None:
    """Without refs/main huggingface_hub cannot find the snapshot offline: fetch again."""
    ensure_model("sdxl", [SOURCE], options=settings.weights)
    folder = settings.models_root / SOURCE.dest
    (folder / "refs" / "main").unlink()
    assert read_manifest(folder, [SOURCE]) is None
    assert ensure_model("sdxl", [SOURCE], options=settings.weights).source == "downloaded"
    assert (folder / "refs" / "main").is_file()


def test_runpods_cached_copy_is_linked_into_the_same_layout(
    hub: FakeHub, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    sha = "d" * 40
    repo = settings.hf_cache_dir / "models--stabilityai--stable-diffusion-xl-base-1.0"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(sha)
    for i, (path, data) in enumerate(sdxl_base_files().items()):
        blob = repo / "blobs" / f"b{i}"
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = repo / "snapshots" / sha / path
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))

    assert ensure_model("sdxl", [SOURCE], options=settings.weights).source == "cache"
    assert hub.requests == []
    _offline(monkeypatch)
    cache = settings.models_root / HUB_CACHE
    found = Path(snapshot_download(REPO, cache_dir=cache, allow_patterns=list(PATTERNS)))
    assert found.name == sha
    assert (found / "unet" / "config.json").read_bytes() == sdxl_base_files()["unet/config.json"]
    assert not (found / "unet" / "diffusion_pytorch_model.safetensors").exists()


def test_folders_of_plain_downloads_keep_their_manifest_fingerprint(settings: Settings) -> None:
    """The hf_cache flag joins the fingerprint only when set: model folders already on a volume
    are not fetched again because of it."""
    plain = HubFiles("o/r", "d", files=("a.bin",))
    folder = settings.models_root / "d"
    folder.mkdir(parents=True)
    (folder / "a.bin").write_bytes(b"x")
    before = {
        "repo_id": "o/r",
        "revision": "main",
        "files": ["a.bin"],
        "allow": None,
        "ignore": None,
        "flatten": False,
    }
    manifest = {"sources": [json.dumps(before, sort_keys=True)], "files": {"a.bin": 1}}
    (folder / ".complete.json").write_text(json.dumps(manifest))
    assert read_manifest(folder, [plain]) == {"a.bin": 1}
