"""Every model type through the worker on the GPU code path, with stand-ins only where a GPU or
a 20 GB model is needed: the loopback Hub serves placeholder weights in each catalogue repo's
layout, a stand-in `deepspeed` runs a trainer that makes diffusion-pipe's startup checks (model
paths, dataset folders, clip mode) and saves the LoRA under the model's real file name.

What this catches that the tiny CPU model cannot: a rendered config pointing at a folder that
does not exist, weights laid out where the `[model]` table does not look, the wrong LoRA name.
"""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
import sys
import time
import tomllib
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from events.lease import FileLease
from events.store import EventStore
from orchestrator.catalogue import ModelEntry, get_model
from orchestrator.settings import Settings
from orchestrator.worker import WorkerOptions, handle
from stages.captions.joycaption import JoyCaptionSettings, load_captioner
from stages.captions.stage import Captions
from stages.training import command as trainer
from stages.training.command import TrainerCommand
from stages.weights.manifest import MANIFEST
from tests.support.canary import CANARIES, scan
from tests.support.dataserver import DataServer
from tests.support.fake_trainer import install_deepspeed
from tests.support.fakehub import SDXL_BASE_CONFIG_FILES, FakeHub, sdxl_base_files
from tests.support.family_loras import base_files
from tests.support.media import fade_video
from tests.support.tiny_llava import tiny_llava_dir

HF_TOKEN = CANARIES["api_keys.huggingface_token"]  # the gated repo's key; must never show
# The repo diffusers' from_single_file infers for an SDXL checkpoint (single_file_utils.py,
# DIFFUSERS_DEFAULT_PIPELINE_PATHS["xl_base"]) and the patterns it fetches of it
# (loaders/single_file.py, _download_diffusers_model_config_from_hub), diffusers 0.42.1.
SDXL_BASE_REPO = "stabilityai/stable-diffusion-xl-base-1.0"
SINGLE_FILE_CONFIG_PATTERNS = ["**/*.json", "*.json", "*.txt", "**/*.txt", "**/*.model"]


def images_zip(n: int = 4, *, captions: bool = True) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for i in range(n):
            img = io.BytesIO()
            Image.new("RGB", (64, 48), (i * 50, 90, 200)).save(img, "PNG")
            zf.writestr(f"set/{i}.png", img.getvalue())
            if captions:
                zf.writestr(f"set/{i}.txt", f"a square, shade {i}")
    return buf.getvalue()


def videos_zip(tmp: Path, n: int = 2, frames: int = 120) -> bytes:
    """`n` 4-second clips at 30 fps: 64 frames at Wan's 16 fps, two clips of 33 each."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for i in range(n):
            path = tmp / f"v{i}.mp4"
            fade_video(path, frames, size=(48, 32), offset=i * 40)
            zf.write(path, f"clips/v{i}.mp4")
            zf.writestr(f"clips/v{i}.txt", f"a fade, take {i}")
    return buf.getvalue()


def placeholder_weights(entry: ModelEntry) -> dict[str, dict[str, bytes]]:
    """Per repo, files in the layout the catalogue downloads: placeholders, except the base
    checkpoint's header (or SDXL's configs), which the verify step reads
    (tests.support.family_loras)."""
    repos: dict[str, dict[str, bytes]] = {}
    base = base_files(entry.diffusion_pipe_type)
    for download in entry.downloads:
        files = repos.setdefault(download.repo_id, {})
        if download.repo_id == SDXL_BASE_REPO:  # fetched by pattern: the repo's real layout
            files.update(sdxl_base_files())
            continue
        for name in download.files or ("config.json", *base):
            files[name] = b"{}" if name.endswith(".json") else base.get(name, b"\0" * 16)
    return repos


@pytest.fixture
def hub() -> Iterator[FakeHub]:
    with FakeHub() as running:
        yield running


@pytest.fixture
def data(tmp_path: Path) -> Iterator[DataServer]:
    with DataServer() as srv:
        srv.files["/images.zip"] = images_zip()
        srv.files["/videos.zip"] = videos_zip(tmp_path)
        yield srv


CASES: dict[str, tuple[str, dict[str, Any]]] = {
    # case: (model type, training overrides)
    "flux": ("flux", {}),
    "sdxl": ("sdxl", {}),
    "qwen": ("qwen", {}),
    "z_image_turbo": ("z_image_turbo", {}),
    "wan13 images": ("wan13", {}),
    "wan13 videos, overlapping clips": ("wan13", {"video_clip_mode": "multiple_overlapping"}),
    "wan14b_t2v videos": ("wan14b_t2v", {}),
    "wan14b_i2v videos": ("wan14b_i2v", {}),
}


def gpu_worker(
    tmp_path: Path,
    hub: FakeHub,
    monkeypatch: pytest.MonkeyPatch,
    entry: ModelEntry,
    **options: Any,
) -> tuple[Path, WorkerOptions, Path]:
    """(root, worker options, deepspeed's argv file): the model's placeholder weights on the
    Hub, the stand-in deepspeed on PATH saving the model's LoRA file, an empty checkout."""
    gated = {HF_TOKEN} if any(d.gated for d in entry.downloads) else None
    for repo_id, files in placeholder_weights(entry).items():
        hub.add_repo(repo_id, files, gated_tokens=gated)
    argv_file = install_deepspeed(tmp_path / "bin", monkeypatch)
    monkeypatch.setenv("FAKE_LORA_FILE", entry.lora_file)
    root = tmp_path / "root"
    checkout = tmp_path / "diffusion-pipe"
    checkout.mkdir()
    settings = Settings(root=root, hub_endpoint=hub.url, diffusion_pipe_dir=checkout)
    return root, WorkerOptions(settings=settings, progress_every_s=0, **options), argv_file


@pytest.mark.parametrize("case", list(CASES))
def test_a_job_reaches_the_trainer_with_configs_it_accepts(
    case: str,
    tmp_path: Path,
    hub: FakeHub,
    data: DataServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model_type, training = CASES[case]
    entry = get_model(model_type)
    root, options, argv_file = gpu_worker(tmp_path, hub, monkeypatch, entry)
    videos = "videos" in case or not entry.trains_images
    dataset: dict[str, Any] = {"type": "precaptioned"}
    dataset["videos_url" if videos else "images_url"] = data.url + (
        "/videos.zip" if videos else "/images.zip"
    )
    body = {
        "model_type": model_type,
        "dataset": dataset,
        "training": {"epochs": 2, "gradient_accumulation_steps": 1, **training},
        "api_keys": {"huggingface_token": HF_TOKEN},
        "output": {"method": "local", "local": {"path": str(tmp_path / "out")}},
    }

    response = asyncio.run(handle({"id": "gpu-path", "input": body}, options))

    assert response.get("status") == "success", response
    assert scan([root, tmp_path / "out"], [response]) == []
    lora = Path(response["output"]["safetensors_url"].removeprefix("file://"))
    assert lora.name == entry.lora_file
    assert lora.is_file()
    # Which base model and task the LoRA is for, its ComfyUI copy, and that it was verified.
    described = response["lora"]
    assert entry.usage is not None
    assert described["base_model"] == entry.usage.base_model
    assert described["task"] == entry.usage.pipeline_tag
    assert described["diffusers_pipeline"] == entry.usage.pipeline_class
    assert (lora.parent / described["comfyui_file"]).read_bytes() == lora.read_bytes()
    assert [v["file"] for v in described["verified"]] == [entry.lora_file]
    events = EventStore.on_disk(root).read("gpu-path")
    assert [e.data["file"] for e in events if e.type == "LORA_VERIFIED"] == [entry.lora_file]
    argv = argv_file.read_text().split()
    # CUDA_VISIBLE_DEVICES=0 (the stand-in's one "GPU"): named, never --num_gpus, which
    # would make deepspeed drop the variable and pick GPUs 0..N-1 itself.
    assert argv[:4] == ["--include", "localhost:0", "train.py", "--deepspeed"]
    config_dir = root / "jobs" / "gpu-path" / "config"
    main = tomllib.loads((config_dir / f"{model_type}.toml").read_text())
    listed = tomllib.loads((config_dir / "dataset.toml").read_text())["directory"]
    folder = "clips" if "overlapping" in case else "videos" if videos else "images"
    assert [Path(d["path"]).name for d in listed] == [folder]
    if "overlapping" in case:
        assert main["video_clip_mode"] == "single_beginning"
        assert len(list(Path(listed[0]["path"]).glob("*.mp4"))) == 4  # 2 videos x 2 clips


def test_a_retry_after_a_trainer_failure_keeps_the_dataset_and_its_captions(
    tmp_path: Path,
    hub: FakeHub,
    data: DataServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The trainer dies after caching latents (diffusion-pipe writes `cache/` into the dataset
    folders, the captioner wrote `.txt` files): the retry must not download, extract or caption
    again, which on a GPU worker means minutes of JoyCaption and a new latent cache."""
    data.files["/uncaptioned.zip"] = images_zip(captions=False)
    root, options, _ = gpu_worker(
        tmp_path,
        hub,
        monkeypatch,
        get_model("qwen"),
        captions_factory=lambda inputs: Captions(
            inputs,
            load_image_captioner=lambda: load_captioner(tiny_llava_dir(), device="cpu"),
            joycaption=JoyCaptionSettings(do_sample=False, max_new_tokens=5, batch_size=2),
        ),
    )
    body: dict[str, Any] = {
        "model_type": "qwen",
        "dataset": {"type": "images", "images_url": data.url + "/uncaptioned.zip"},
        "training": {"epochs": 2, "gradient_accumulation_steps": 1},
        "output": {"method": "local", "local": {"path": str(tmp_path / "out")}},
    }
    monkeypatch.setenv("FAKE_MODE", "oom")
    first = asyncio.run(handle({"id": "retry", "input": body}, options))
    assert first["status"] == "failed"
    assert "gpu_oom" in first["error"]
    images = root / "jobs" / "retry" / "dataset" / "images"
    assert (images / "cache" / "qwen_image").is_dir()  # the trainer got as far as caching
    captions = {p.name: p.read_text() for p in images.glob("*.txt")}
    assert len(captions) == 4

    monkeypatch.delenv("FAKE_MODE")
    again = asyncio.run(handle({"id": "retry", "input": body}, options))  # POST /retry

    assert again["status"] == "success", again
    assert len(data.gets("/uncaptioned.zip")) == 1  # not downloaded again
    events = EventStore.on_disk(root).read("retry")
    assert [e.type for e in events].count("DATASET_REPORT") == 1  # not extracted again
    captioned = [e for e in events if e.type == "STAGE_DONE" and e.data["stage"] == "captions"]
    assert len(captioned) == 1  # not captioned again (a resume passes through CAPTIONING)
    assert {p.name: p.read_text() for p in images.glob("*.txt")} == captions
    assert (images / "cache" / "qwen_image" / "metadata.json").is_file()  # the cache kept


def test_a_job_that_fails_in_its_dataset_stage_stops_its_model_download(
    tmp_path: Path,
    hub: FakeHub,
    data: DataServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    entry = get_model("z_image_turbo")  # four files in two repos
    root, options, _ = gpu_worker(tmp_path, hub, monkeypatch, entry)
    hub.delay_s = 1.5  # each file is slow: the dataset fails while the model downloads
    # The URL answers (the access stage's probe passes) but serves a web page, not an archive.
    data.files["/page.zip"] = b"<html><body>a share page, not the file</body></html>"
    body = {
        "model_type": "z_image_turbo",
        "dataset": {"type": "precaptioned", "images_url": data.url + "/page.zip"},
        "output": {"method": "local", "local": {"path": str(tmp_path / "out")}},
    }

    response = asyncio.run(handle({"id": "fails-early", "input": body}, options))

    assert response["status"] == "failed"
    assert "dataset.images_url" in response["error"]
    time.sleep(2 * hub.delay_s)  # what was in flight when the job ended lands or stops
    fetched = hub.downloads()
    time.sleep(2 * hub.delay_s)
    assert hub.downloads() == fetched < 4  # no file asked for after the job ended
    locks = [p.parent for p in (root / "models" / ".locks").rglob("lease")]
    assert locks
    for folder in locks:  # each model folder's lock is free for the next job at once
        FileLease(folder, owner="next-job", ttl_s=5).acquire()
    assert not list((root / "models").rglob(MANIFEST))


# What diffusers' from_single_file runs to find the SDXL base configs (loaders/single_file.py,
# _download_diffusers_model_config_from_hub: snapshot_download with no cache_dir or revision),
# in the trainer's environment; then the same with an empty cache.
RESOLVE = """
import json, sys
from huggingface_hub import snapshot_download
from huggingface_hub.errors import LocalEntryNotFoundError
found = snapshot_download(sys.argv[1], allow_patterns=json.loads(sys.argv[2]))
print(found)
try:
    snapshot_download(sys.argv[1], cache_dir=sys.argv[3], allow_patterns=json.loads(sys.argv[2]))
except LocalEntryNotFoundError as exc:
    print("missing:", type(exc).__name__)
"""


def test_sdxl_trains_offline_on_base_configs_fetched_with_the_weights(
    tmp_path: Path,
    hub: FakeHub,
    data: DataServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    entry = get_model("sdxl")
    root, options, _ = gpu_worker(tmp_path, hub, monkeypatch, entry)
    hub.add_repo(SDXL_BASE_REPO, sdxl_base_files())  # on the Hub, as the real one is
    commands: list[TrainerCommand] = []
    real = trainer.trainer_command

    def recording(**kw: Any) -> TrainerCommand:
        commands.append(real(**kw))
        return commands[-1]

    monkeypatch.setattr(trainer, "trainer_command", recording)
    body = {
        "model_type": "sdxl",
        "dataset": {"type": "precaptioned", "images_url": data.url + "/images.zip"},
        "training": {"epochs": 1},
        "output": {"method": "local", "local": {"path": str(tmp_path / "out")}},
    }

    response = asyncio.run(handle({"id": "sdxl", "input": body}, options))

    assert response.get("status") == "success", response
    fetched = sorted(
        seen.path.split("/resolve/", 1)[1].split("/", 1)[1]
        for seen in hub.requests
        if seen.method == "GET" and seen.path.startswith(f"/{SDXL_BASE_REPO}/resolve/")
    )
    assert fetched == sorted(SDXL_BASE_CONFIG_FILES)  # every config, no weights
    base = root / "models" / "hub" / f"models--{SDXL_BASE_REPO.replace('/', '--')}"
    sha = (base / "refs" / "main").read_text()
    snapshot = base / "snapshots" / sha
    placed = sorted(p.relative_to(snapshot).as_posix() for p in snapshot.rglob("*") if p.is_file())
    assert placed == sorted(SDXL_BASE_CONFIG_FILES)
    assert json.loads((snapshot / "model_index.json").read_text())["_class_name"] == (
        "StableDiffusionXLPipeline"
    )
    (command,) = commands
    assert command.env["HF_HUB_OFFLINE"] == "1"
    assert command.env["HF_HUB_CACHE"] == str(root / "models" / "hub")

    requests_before = len(hub.requests)
    patterns = json.dumps(SINGLE_FILE_CONFIG_PATTERNS)
    empty = tmp_path / "empty-cache"
    resolved = subprocess.run(
        [sys.executable, "-c", RESOLVE, SDXL_BASE_REPO, patterns, str(empty)],
        env={**command.env, "HF_ENDPOINT": hub.url},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout.splitlines()

    assert resolved == [str(snapshot), "missing: LocalEntryNotFoundError"]
    assert len(hub.requests) == requests_before  # offline: the Hub was never asked


@pytest.mark.parametrize(
    ("mode", "model_type", "said"),
    [
        ("nan_lora", "wan13", "NaN or Inf values"),
        ("wrong_family", "flux", "keys without the format's prefix"),
        ("wrong_family", "qwen", "modules the base model does not have"),
    ],
)
def test_a_lora_that_does_not_fit_its_base_fails_the_job_before_it_is_published(
    mode: str,
    model_type: str,
    said: str,
    tmp_path: Path,
    hub: FakeHub,
    data: DataServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Training diverged (a NaN in the saved LoRA) or the LoRA is another family's: the job
    ends in ERROR naming the bad key, and no LoRA reaches the destination."""
    entry = get_model(model_type)
    root, options, _ = gpu_worker(tmp_path, hub, monkeypatch, entry)
    monkeypatch.setenv("FAKE_MODE", mode)
    body = {
        "model_type": model_type,
        "dataset": {"type": "precaptioned", "images_url": data.url + "/images.zip"},
        "training": {"epochs": 1, "gradient_accumulation_steps": 1},
        "api_keys": {"huggingface_token": HF_TOKEN},
        "output": {"method": "local", "local": {"path": str(tmp_path / "out")}},
    }

    response = asyncio.run(handle({"id": "misfit", "input": body}, options))

    assert response["status"] == "failed"
    error = response["error"]
    assert said in error, error
    assert "nothing was published" in error
    if mode == "nan_lora":
        assert "diffusion_model.blocks.0.self_attn.q.lora_B.weight has 1 of" in error
    else:
        assert "diffusion_model.double_blocks.0.img_attn.qkv" in error
    assert not list((tmp_path / "out").rglob("*.safetensors"))  # nothing published
    events = EventStore.on_disk(root).read("misfit")
    assert [e.type for e in events][-1] == "ERROR"
    assert "LORA_VERIFIED" not in [e.type for e in events]
    assert scan([root], [response]) == []
