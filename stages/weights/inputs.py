"""The weights stage's plain inputs: where models live and how hard to try for them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

HF_ENDPOINT = "https://huggingface.co"


@dataclass(frozen=True)
class WeightsOptions:
    models_root: Path  # <root>/models: one folder per model, shared by every job on the volume
    hub_endpoint: str = HF_ENDPOINT
    # RunPod's "cached models" (an endpoint setting): an HF cache, models--owner--name/snapshots/
    hf_cache_dir: Path = Path("/runpod-volume/huggingface-cache/hub")
    model_lock_ttl_s: float = 60.0  # a dead downloader's folder lock is taken over after this
    model_wait_s: float = 3 * 3600.0  # how long a job waits for another worker's download
    download_attempts: int = 3  # tries per repo on network errors and 5xx
    download_workers: int = 8  # files fetched at once (snapshot_download's default)
    # From this size a file is fetched alone, one after another (it spans several xorbs,
    # which hf_xet fetches in parallel itself; a cancel waits for at most one of them).
    one_at_a_time_bytes: int = 64 * 2**20
    retry_wait_s: float = 5.0  # first pause between tries, doubled each time
    worker_name: str | None = None  # who holds a folder's lock (default: this host's name)
