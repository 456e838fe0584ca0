"""The weights stage against the loopback fake Hub, with the real huggingface_hub client."""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from events.lease import FileLease
from orchestrator.catalogue import get_model
from orchestrator.settings import Settings
from stages.contract import StageContext, StopRequest
from stages.errors import DownloadCancelled, JobCancelled, StageFailed
from stages.throttle import Throttle
from stages.weights.ensure import ensure_model
from stages.weights.inputs import WeightsOptions
from stages.weights.manifest import MANIFEST, read_manifest
from stages.weights.progress import ByteProgress, Tracker
from stages.weights.sources import Built, HubFiles
from stages.weights.stage import ModelDownload, Weights, start_model_download
from tests.support.fakehub import FakeHub
from tests.support.helpers import Recorded, stage_context
from tests.support.weights_settings import weights_settings

WEIGHTS = bytes(range(256)) * 40  # 10 KiB
REPO = "org/model"
FILES = {
    "transformer/a.safetensors": WEIGHTS,
    "transformer/config.json": b'{"dim": 8}',
    "README.md": b"# model",
    "samples/x.png": b"png",
}


@pytest.fixture
def hub() -> Iterator[FakeHub]:
    with FakeHub() as running:
        running.add_repo(REPO, FILES)
        yield running


@pytest.fixture
def settings(tmp_path: Path, hub: FakeHub) -> Settings:
    return weights_settings(tmp_path, hub.url)


PATTERNS = HubFiles(REPO, "m", allow_patterns=("transformer/*",))


def test_download_with_allow_patterns(hub: FakeHub, settings: Settings) -> None:
    tracker = Tracker()
    result = ensure_model("m", [PATTERNS], options=settings.weights, tracker=tracker)
    dest = settings.models_root / "m"
    assert (dest / "transformer/a.safetensors").read_bytes() == WEIGHTS
    assert not (dest / "README.md").exists()
    assert not (dest / "samples").exists()
    assert result.source == "downloaded"
    assert result.bytes == len(WEIGHTS) + len(FILES["transformer/config.json"])
    assert sorted(result.files) == sorted(
        str(dest / p) for p in ("transformer/a.safetensors", "transformer/config.json")
    )
    manifest = json.loads((dest / MANIFEST).read_text())
    assert manifest["files"] == {
        "transformer/a.safetensors": len(WEIGHTS),
        "transformer/config.json": len(FILES["transformer/config.json"]),
    }
    assert tracker.snapshot()[:2] == (result.bytes, result.bytes)  # bytes counted as they came
    assert hub.downloads() == 2
    assert not (settings.models_root / ".staging" / "m").exists()


def test_flatten_puts_files_side_by_side(hub: FakeHub, settings: Settings) -> None:
    hub.add_repo(
        "comfy/z",
        {
            "split_files/diffusion_models/z.safetensors": b"dm" * 100,
            "split_files/vae/ae.safetensors": b"vae",
            "split_files/unused.bin": b"no",
        },
    )
    hub.add_repo("ostris/adapter", {"adapter_v2.safetensors": b"lora"})
    sources = [
        HubFiles(
            "comfy/z",
            "z",
            files=("split_files/diffusion_models/z.safetensors", "split_files/vae/ae.safetensors"),
            flatten=True,
        ),
        HubFiles("ostris/adapter", "z", files=("adapter_v2.safetensors",)),
    ]
    ensure_model("z_image_turbo", sources, options=settings.weights)
    dest = settings.models_root / "z"
    names = sorted(p.name for p in dest.iterdir())
    assert names == [MANIFEST, "adapter_v2.safetensors", "ae.safetensors", "z.safetensors"]
    assert (dest / "z.safetensors").read_bytes() == b"dm" * 100
    assert read_manifest(dest, sources) is not None


def test_second_run_reuses_without_touching_the_hub(hub: FakeHub, settings: Settings) -> None:
    ensure_model("m", [PATTERNS], options=settings.weights)
    before = len(hub.requests)
    again = ensure_model("m", [PATTERNS], options=settings.weights)
    assert again.source == "reused"
    assert len(hub.requests) == before
    # A different spec for the same folder does not trust the old manifest.
    wider = HubFiles(REPO, "m", allow_patterns=("transformer/*", "*.md"))
    assert ensure_model("m", [wider], options=settings.weights).source == "downloaded"
    assert hub.downloads() == 3  # README only: the two right-sized files were kept


def test_damaged_file_is_downloaded_again(hub: FakeHub, settings: Settings) -> None:
    ensure_model("m", [PATTERNS], options=settings.weights)
    damaged = settings.models_root / "m" / "transformer/a.safetensors"
    damaged.write_bytes(WEIGHTS[:100])  # a torn copy: right name, wrong size
    assert read_manifest(settings.models_root / "m", [PATTERNS]) is None
    again = ensure_model("m", [PATTERNS], options=settings.weights)
    assert again.source == "downloaded"
    assert damaged.read_bytes() == WEIGHTS
    assert hub.downloads() == 3  # the damaged file only


def test_gated_repo_without_token_is_explained(hub: FakeHub, settings: Settings) -> None:
    hub.add_repo("bfl/flux", {"w.bin": b"w"}, gated_tokens={"hf_accepted"})
    marked = HubFiles("bfl/flux", "flux", gated=True)
    with pytest.raises(StageFailed) as exc:
        ensure_model("flux", [marked], options=settings.weights)
    assert "no Hugging Face token" in str(exc.value)
    assert "https://huggingface.co/bfl/flux" in str(exc.value)
    assert hub.requests == []  # known gated: refused before any request
    # Not marked gated in the catalogue: the Hub's 401 GatedRepo gives the same advice.
    with pytest.raises(StageFailed) as unmarked:
        ensure_model("flux", [HubFiles("bfl/flux", "flux")], options=settings.weights)
    assert "no Hugging Face token" in str(unmarked.value)


def test_gated_repo_with_a_token_not_allowed(hub: FakeHub, settings: Settings) -> None:
    hub.add_repo("bfl/flux", {"w.bin": b"w"}, gated_tokens={"hf_accepted"})
    spec = HubFiles("bfl/flux", "flux", gated=True)
    with pytest.raises(StageFailed) as exc:
        ensure_model("flux", [spec], options=settings.weights, token="hf_secret_other")
    message = str(exc.value)
    assert "bfl/flux" in message
    assert "https://huggingface.co/bfl/flux" in message
    assert "account that accepted" in message
    assert "hf_secret_other" not in message
    assert hub.downloads() == 0
    ok = ensure_model("flux", [spec], options=settings.weights, token="hf_accepted")
    assert ok.source == "downloaded"


def test_missing_file_names_repo_and_file(hub: FakeHub, settings: Settings) -> None:
    spec = HubFiles(REPO, "m", files=("transformer/a.safetensors", "vae/missing.bin"))
    with pytest.raises(StageFailed) as exc:
        ensure_model("m", [spec], options=settings.weights)
    assert REPO in str(exc.value)
    assert "vae/missing.bin" in str(exc.value)
    assert hub.downloads() == 0  # checked against the listing before any download
    with pytest.raises(StageFailed, match="nothing/here was not found"):
        ensure_model("m", [HubFiles("nothing/here", "m")], options=settings.weights)


def test_network_failure_names_the_repo(tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port with nobody listening
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}"
    with pytest.raises(StageFailed) as exc:
        ensure_model("m", [PATTERNS], options=weights_settings(tmp_path, dead).weights)
    assert f"could not download {REPO}" in str(exc.value)
    assert "after 2 attempts" in str(exc.value)


def test_a_failing_xet_download_is_retried_and_a_refused_one_says_so(
    hub: FakeHub, settings: Settings
) -> None:
    """Weights stored by Xet come through hf_xet, which raises RuntimeError, not the Hub
    client's errors: a CAS 5xx is retried like any transient failure, a 403 is the token."""
    assert hub.xet_paths(REPO)  # the safetensors file is a Xet file
    hub.cas.fail(503, method="GET", path_contains="/v1/reconstructions/", times=1)
    ensure_model("m", [PATTERNS], options=settings.weights)
    assert hub.cas.count("GET", "/v1/reconstructions/") == 2

    other = HubFiles(REPO, "m2", allow_patterns=("transformer/*",))
    hub.cas.fail(403, method="GET", path_contains="/v1/reconstructions/", times=10)
    with pytest.raises(StageFailed, match="the Hub refused access; check the token"):
        ensure_model("m2", [other], options=settings.weights)


def _seed_cache(cache: Path, repo_id: str, files: dict[str, bytes]) -> None:
    """An HF cache as RunPod's cached models lay it out: refs, snapshots -> blobs symlinks."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    sha = "c" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(sha)
    for i, (path, data) in enumerate(files.items()):
        blob = repo / "blobs" / f"blob{i}"
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = repo / "snapshots" / sha / path
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))


def test_runpod_cache_is_used_without_requests(hub: FakeHub, settings: Settings) -> None:
    _seed_cache(settings.hf_cache_dir, REPO, FILES)
    result = ensure_model("m", [PATTERNS], options=settings.weights)
    assert result.source == "cache"
    assert hub.requests == []
    got = settings.models_root / "m" / "transformer/a.safetensors"
    assert got.is_symlink()
    assert got.read_bytes() == WEIGHTS
    flat = HubFiles(REPO, "flat", files=("transformer/config.json",), flatten=True)
    assert ensure_model("x", [flat], options=settings.weights).source == "cache"
    assert (settings.models_root / "flat" / "config.json").read_bytes() == b'{"dim": 8}'
    assert hub.requests == []


def test_two_threads_download_once(hub: FakeHub, settings: Settings) -> None:
    hub.delay_s = 0.3  # each file GET is slow, so the second job arrives mid-download
    results: list[str] = []

    def job() -> None:
        results.append(ensure_model("m", [PATTERNS], options=settings.weights).source)

    threads = [threading.Thread(target=job) for _ in range(2)]
    for thread in threads:
        thread.start()
        time.sleep(0.1)
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(results) == ["downloaded", "reused"]
    assert hub.downloads() == 2


def _process_job(root: str, endpoint: str, out: str) -> None:
    settings = weights_settings(Path(root), endpoint)
    source = ensure_model("m", [PATTERNS], options=settings.weights).source
    Path(out).write_text(source)


def test_two_processes_download_once(hub: FakeHub, tmp_path: Path) -> None:
    hub.delay_s = 0.3
    spawn = multiprocessing.get_context("spawn")
    procs = [
        spawn.Process(target=_process_job, args=(str(tmp_path), hub.url, str(tmp_path / f"{i}")))
        for i in range(2)
    ]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=60)
        assert proc.exitcode == 0
    assert sorted((tmp_path / f"{i}").read_text() for i in range(2)) == ["downloaded", "reused"]
    assert hub.downloads() == 2


def test_dead_holders_lock_is_taken_over(hub: FakeHub, settings: Settings) -> None:
    dead = FileLease(settings.models_root / ".locks" / "m", owner="dead-worker", ttl_s=1.5)
    dead.acquire()  # never renewed, never released: its process "died"
    tracker = Tracker()
    said: list[str] = []
    download = threading.Thread(
        target=ensure_model,
        args=("m", [PATTERNS]),
        kwargs={"options": settings.weights, "tracker": tracker},
    )
    download.start()
    while download.is_alive():  # what the job says while it waits
        said.append(tracker.snapshot()[2])
        time.sleep(0.02)
    download.join(timeout=10)
    assert any("dead-worker" in message for message in said)
    assert read_manifest(settings.models_root / "m", [PATTERNS]) is not None


def test_lock_wait_is_bounded(hub: FakeHub, tmp_path: Path) -> None:
    settings = weights_settings(tmp_path, hub.url)
    short = Settings(**{**settings.__dict__, "model_wait_s": 0.3, "model_lock_ttl_s": 60.0})
    FileLease(short.models_root / ".locks" / "m", owner="busy-worker", ttl_s=60).acquire()
    with pytest.raises(StageFailed, match="busy-worker"):
        ensure_model("m", [PATTERNS], options=short.weights)


def test_built_model_takes_the_same_path(hub: FakeHub, settings: Settings) -> None:
    calls: list[Path] = []

    def build(folder: Path) -> None:
        calls.append(folder)
        (folder / "weights.safetensors").write_bytes(b"tiny" * 10)
        (folder / "config.json").write_text("{}")

    source = Built("tiny", build, "test-builder-v1")
    first = ensure_model("tiny", [source], options=settings.weights)
    assert first.source == "built"
    assert ensure_model("tiny", [source], options=settings.weights).source == "reused"
    assert len(calls) == 1
    assert read_manifest(settings.models_root / "tiny", [source]) == {
        "config.json": 2,
        "weights.safetensors": 40,
    }
    assert hub.requests == []


def test_real_tiny_model_builds(settings: Settings) -> None:
    pytest.importorskip("minipipe.model")
    sources = get_model("tiny").sources()
    assert all(isinstance(s, Built) for s in sources)
    result = ensure_model("tiny", sources, options=settings.weights)
    assert result.source == "built"
    assert result.bytes > 0


def test_catalogue_downloads_adapt(settings: Settings) -> None:
    flux = get_model("flux").sources()
    assert isinstance(flux[0], HubFiles)
    assert flux[0].gated
    z_image = [s for s in get_model("z_image_turbo").sources() if isinstance(s, HubFiles)]
    assert any(s.flatten for s in z_image)


# -- the stage ------------------------------------------------------------------------------
def _context(tmp_path: Path) -> tuple[StageContext, list[tuple[str, dict[str, Any]]]]:
    seen = Recorded()
    return stage_context(tmp_path / "job", seen.record), seen


def test_stage_waits_for_background_download(
    hub: FakeHub, settings: Settings, tmp_path: Path
) -> None:
    hub.delay_s = 0.4
    download: ModelDownload = start_model_download("m", [PATTERNS], options=settings.weights)
    stage = Weights(download, poll_s=0.05)
    ctx, seen = _context(tmp_path)
    result = stage.run(ctx)
    kinds = [k for k, _ in seen]
    assert kinds[-1] == "MODEL_READY"
    assert seen[-1][1]["source"] == "downloaded"
    assert seen[-1][1]["bytes"] == result["bytes"]
    progress = [d for k, d in seen if k == "PROGRESS"]
    assert 2 <= len(progress) <= 10  # throttled: one a second at most, plus the final one
    assert progress[-1]["bytes_done"] == progress[-1]["bytes_total"] == result["bytes"]
    assert stage.verify(ctx, result)
    Path(result["files"][0]).write_bytes(b"torn")
    assert not stage.verify(ctx, result)


def test_stage_starts_the_download_itself(hub: FakeHub, settings: Settings, tmp_path: Path) -> None:
    stage = Weights(ModelDownload("m", (PATTERNS,), settings.weights), poll_s=0.05)
    ctx, _ = _context(tmp_path)
    assert stage.run(ctx)["source"] == "downloaded"
    failing = Weights(
        ModelDownload("m", (HubFiles("no/repo", "n"),), settings.weights), poll_s=0.05
    )
    with pytest.raises(StageFailed, match="no/repo"):
        failing.run(ctx)


def test_throttle() -> None:
    now = [0.0]
    throttle = ByteProgress(Throttle(1.0, heartbeat_s=30.0, clock=lambda: now[0]))
    emitted = 0
    for step in range(1, 1001):  # 1000 samples over 10 s, 0.1 % each
        now[0] = step / 100
        emitted += throttle.due(step, 1000, "downloading")
    assert 10 <= emitted <= 21
    assert throttle.due(1000, 1000, "downloading", final=True)


# -- a job that ends stops its download ------------------------------------------------------
MANY = {f"transformer/part-{i}.safetensors": WEIGHTS for i in range(6)}


def _gets(hub: FakeHub) -> int:
    return hub.downloads()  # resolve GETs, or CAS reconstructions for Xet files


def _until(check: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def _one_at_a_time(settings: Settings) -> WeightsOptions:
    """Every file counts as large: fetched alone, one after another (a real model's shards)."""
    return dataclasses.replace(settings.weights, one_at_a_time_bytes=1)


def test_a_cancelled_download_stops_and_frees_its_folder(hub: FakeHub, settings: Settings) -> None:
    """Large files go one at a time: hf_xet ignores the cancel raised in its progress callback,
    so the file in flight finishes, and no other is asked for."""
    hub.add_repo("org/big", MANY)
    hub.delay_s = 0.5  # each file is slow: the cancel lands mid-download
    spec = HubFiles("org/big", "big", allow_patterns=("transformer/*",))
    download = start_model_download("big", [spec], options=_one_at_a_time(settings))
    _until(lambda: _gets(hub) >= 1)
    download.cancel()
    with pytest.raises(DownloadCancelled, match="its job has ended"):
        download.future.result(timeout=10)
    fetched = _gets(hub)
    time.sleep(1.0)
    assert _gets(hub) == fetched < len(MANY)  # nothing more was asked for
    lock = FileLease(settings.models_root / ".locks" / "big", owner="next-job", ttl_s=5)
    lock.acquire()  # released at once, not after its TTL
    lock.release()
    assert not (settings.models_root / "big" / MANIFEST).exists()
    assert not any((settings.models_root / ".staging").rglob("*.safetensors"))
    placed = list((settings.models_root / "big").rglob("*.safetensors"))
    hub.delay_s = 0.0
    again = ensure_model("big", [spec], options=settings.weights)
    assert again.source == "downloaded"
    assert _gets(hub) == fetched + len(MANY) - len(placed)  # what had landed was kept


def test_small_files_come_several_at_once_and_large_ones_one_after_another(
    tmp_path: Path,
) -> None:
    """A far Hub's round trips overlap for small files; large ones never overlap each other.
    Without Xet, so each slowed request names its file."""
    small = {f"tokenizer/f{i}.json": b"{}" * 8 for i in range(5)}
    large = {f"transformer/part-{i}.safetensors": WEIGHTS for i in range(3)}
    with FakeHub(xet=False) as hub:
        hub.add_repo("org/mixed", {**small, **large})
        hub.delay_s = 0.3
        options = dataclasses.replace(
            weights_settings(tmp_path, hub.url).weights,
            one_at_a_time_bytes=len(WEIGHTS),
            download_workers=4,
        )
        tracker = Tracker()
        spec = HubFiles("org/mixed", "mixed")
        got = ensure_model("mixed", [spec], options=options, tracker=tracker)
        together = hub.in_flight.together
    assert len(got.files) == len(small) + len(large)
    names = [{p.rsplit("/", 1)[-1] for p in group} for group in together]
    assert 2 <= max(len(group) for group in names) <= 4  # overlapped, within download_workers
    assert all(sum(n.startswith("part-") for n in group) <= 1 for group in names)
    assert max(sum(n.startswith("f") for n in group) for group in names) >= 2


def test_a_cancelled_download_stops_waiting_for_another_workers_lock(
    hub: FakeHub, settings: Settings
) -> None:
    FileLease(settings.models_root / ".locks" / "m", owner="busy-worker", ttl_s=60).acquire()
    download = start_model_download("m", [PATTERNS], options=settings.weights)
    _until(lambda: "busy-worker" in download.tracker.snapshot()[2])
    started = time.monotonic()
    download.cancel()
    with pytest.raises(DownloadCancelled):
        download.future.result(timeout=10)
    assert time.monotonic() - started < 5  # not the 20 s model_wait_s
    assert hub.requests == []


def test_a_stop_ends_the_wait_for_the_model_and_the_download(
    hub: FakeHub, settings: Settings, tmp_path: Path
) -> None:
    hub.add_repo("org/big", MANY)
    hub.delay_s = 0.5
    spec = HubFiles("org/big", "big", allow_patterns=("transformer/*",))
    stop = StopRequest()
    options = _one_at_a_time(settings)
    stage = Weights(ModelDownload("big", (spec,), options), stop=stop, poll_s=0.05)
    ctx, seen = _context(tmp_path)
    threading.Timer(0.8, stop.set, args=("cancel", "cancelled by the client")).start()
    with pytest.raises(JobCancelled, match="cancelled by the client; stopped while the model"):
        stage.run(ctx)
    with pytest.raises(DownloadCancelled):
        stage.download.future.result(timeout=10)
    assert "MODEL_READY" not in [kind for kind, _ in seen]
    assert _gets(hub) < len(MANY)
