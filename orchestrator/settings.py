"""Worker settings: one frozen object read from `DPS_*` environment variables once.

Passed explicitly to the code that needs it (never read at import time), so tests build their
own with a loopback Hub endpoint and a temporary root.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from events.projections.base import MirrorSettings

VOLUME = Path("/runpod-volume")
HF_ENDPOINT = "https://huggingface.co"
RUNPOD_MODEL_CACHE = VOLUME / "huggingface-cache" / "hub"


def _default_root() -> Path:
    if VOLUME.is_dir():  # a network volume is mounted: jobs and models survive the worker
        return VOLUME / "diffusion_pipe_working_folder"
    return Path("dps-root").absolute()


@dataclass(frozen=True)
class Settings:
    root: Path
    hub_endpoint: str = HF_ENDPOINT
    # RunPod's "cached models" (endpoint setting): an HF cache, models--owner--name/snapshots/...
    hf_cache_dir: Path = RUNPOD_MODEL_CACHE
    # A dead downloader's model lock is taken over after this (the job lease's default too).
    model_lock_ttl_s: float = 60.0
    model_wait_s: float = 3 * 3600.0  # how long a job waits for another worker's download
    download_attempts: int = 3  # tries per repo on network errors and 5xx
    retry_wait_s: float = 5.0  # first pause between tries, doubled each time
    diffusion_pipe_dir: Path = Path("/opt/diffusion-pipe")  # the pinned checkout (Dockerfile)
    # A job's writer lease: a dead worker's job is taken over this long after its last renewal.
    lease_ttl_s: float = 60.0
    mirror: MirrorSettings = field(default_factory=MirrorSettings)

    @property
    def models_root(self) -> Path:
        return self.root / "models"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        return cls(
            root=Path(env["DPS_ROOT"]) if env.get("DPS_ROOT") else _default_root(),
            hub_endpoint=(env.get("DPS_HUB_ENDPOINT") or HF_ENDPOINT).rstrip("/"),
            hf_cache_dir=Path(env.get("DPS_HF_CACHE") or RUNPOD_MODEL_CACHE),
            model_lock_ttl_s=float(env.get("DPS_MODEL_LOCK_TTL_S") or 60.0),
            model_wait_s=float(env.get("DPS_MODEL_WAIT_S") or 3 * 3600.0),
            download_attempts=int(env.get("DPS_DOWNLOAD_ATTEMPTS") or 3),
            retry_wait_s=float(env.get("DPS_RETRY_WAIT_S") or 5.0),
            diffusion_pipe_dir=Path(env.get("DPS_DIFFUSION_PIPE_DIR") or "/opt/diffusion-pipe"),
            lease_ttl_s=float(env.get("DPS_LEASE_TTL_S") or 60.0),
            mirror=_mirror(env),
        )


def _mirror(env: Mapping[str, str]) -> MirrorSettings:
    base = MirrorSettings()

    def num(name: str, default: float) -> float:
        raw = env.get(f"DPS_MIRROR_{name}")
        return float(raw) if raw else default

    return MirrorSettings(
        commit_interval_s=num("COMMIT_INTERVAL_S", base.commit_interval_s),
        progress_interval_s=num("PROGRESS_INTERVAL_S", base.progress_interval_s),
        progress_epoch_min_s=num("PROGRESS_EPOCH_MIN_S", base.progress_epoch_min_s),
        queue_max=int(num("QUEUE_MAX", base.queue_max)),
        start_timeout_s=num("START_TIMEOUT_S", base.start_timeout_s),
        close_timeout_s=num("CLOSE_TIMEOUT_S", base.close_timeout_s),
    )
