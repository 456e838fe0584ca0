"""Worker settings: one frozen object, the one reader of the `DPS_*` environment variables a job
uses (logging's `DPS_LOG_LEVEL` and `DPS_DEBUG_LOGGERS` are read by `orchestrator.logs` once, as
the worker starts, before any job).

Read once (`Settings.from_env`, in the handler) and passed explicitly to the code that needs it,
never read at import time, so tests build their own with a loopback Hub endpoint and a temporary
root. The stages get their part as plain options (`weights`, `download_limits`, ...).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from events.projections.base import MirrorSettings
from stages.addresses import AddressPolicy
from stages.dataset.limits import DownloadLimits, ExtractLimits, GiB
from stages.training.checkpoints import DEFAULT_KEEP
from stages.weights.inputs import HF_ENDPOINT, WeightsOptions

VOLUME = Path("/runpod-volume")
RUNPOD_MODEL_CACHE = VOLUME / "huggingface-cache" / "hub"
DIFFUSION_PIPE_DIR = Path("/opt/diffusion-pipe")  # the pinned checkout (Dockerfile)
T = TypeVar("T")


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
    diffusion_pipe_dir: Path = DIFFUSION_PIPE_DIR
    # A job's writer lease: a dead worker's job is taken over this long after its last renewal.
    lease_ttl_s: float = 60.0
    worker_name: str = field(default_factory=socket.gethostname)  # RUNPOD_POD_ID on RunPod
    # Where `output.method: local` may copy results (empty: anywhere outside the root).
    local_output_roots: tuple[Path, ...] = ()
    # Which hosts the URLs a request controls may reach: dataset URLs, the S3 endpoint.
    addresses: AddressPolicy = field(default_factory=AddressPolicy)
    mirror: MirrorSettings = field(default_factory=MirrorSettings)
    download_limits: DownloadLimits = field(default_factory=DownloadLimits)
    extract_limits: ExtractLimits = field(default_factory=ExtractLimits)
    # Complete checkpoints kept per run folder (a request's training.keep_checkpoints wins).
    keep_checkpoints: int = DEFAULT_KEEP

    @property
    def models_root(self) -> Path:
        return self.root / "models"

    @property
    def weights(self) -> WeightsOptions:
        return WeightsOptions(
            models_root=self.models_root,
            hub_endpoint=self.hub_endpoint,
            hf_cache_dir=self.hf_cache_dir,
            model_lock_ttl_s=self.model_lock_ttl_s,
            model_wait_s=self.model_wait_s,
            download_attempts=self.download_attempts,
            retry_wait_s=self.retry_wait_s,
            worker_name=self.worker_name,
        )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        read = _Reader(env)
        return cls(
            root=Path(env["DPS_ROOT"]) if env.get("DPS_ROOT") else _default_root(),
            hub_endpoint=read.text("DPS_HUB_ENDPOINT", HF_ENDPOINT).rstrip("/"),
            hf_cache_dir=Path(read.text("DPS_HF_CACHE", str(RUNPOD_MODEL_CACHE))),
            model_lock_ttl_s=read.num("DPS_MODEL_LOCK_TTL_S", 60.0),
            model_wait_s=read.num("DPS_MODEL_WAIT_S", 3 * 3600.0),
            download_attempts=read.integer("DPS_DOWNLOAD_ATTEMPTS", 3),
            retry_wait_s=read.num("DPS_RETRY_WAIT_S", 5.0),
            diffusion_pipe_dir=Path(read.text("DPS_DIFFUSION_PIPE_DIR", str(DIFFUSION_PIPE_DIR))),
            lease_ttl_s=read.num("DPS_LEASE_TTL_S", 60.0),
            worker_name=read.text("RUNPOD_POD_ID", socket.gethostname()),
            local_output_roots=tuple(
                Path(p) for p in read.text("DPS_LOCAL_OUTPUT_ROOTS", "").split(":") if p.strip()
            ),
            addresses=address_policy(env),
            mirror=mirror_settings(env),
            download_limits=download_limits(env),
            extract_limits=extract_limits(env),
            keep_checkpoints=read.integer("DPS_KEEP_CHECKPOINTS", DEFAULT_KEEP, minimum=1),
        )


class _Reader:
    """Reads one variable at a time: empty or unset means the default."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env

    def text(self, name: str, default: str) -> str:
        return self.env.get(name) or default

    def num(self, name: str, default: float) -> float:
        return self._typed(name, default, float)

    def integer(self, name: str, default: int, *, minimum: int | None = None) -> int:
        value = self._typed(name, default, int)
        if minimum is not None and value < minimum:
            raise ValueError(f"{name} must be at least {minimum}, got {value}")
        return value

    def _typed(self, name: str, default: T, kind: Callable[[str], T]) -> T:
        raw = self.env.get(name)
        return kind(raw) if raw else default


def mirror_settings(env: Mapping[str, str]) -> MirrorSettings:
    """`DPS_MIRROR_*`: the UPDATES mirror's commit interval, thinning and queue, and the most
    a job waits for the Hub at its start and its end (`_START_TIMEOUT_S`, `_CLOSE_TIMEOUT_S`:
    5 s each; what is not pushed by then stays in the job's log for the next commit)."""
    read, base = _Reader(env), MirrorSettings()
    return MirrorSettings(
        commit_interval_s=read.num("DPS_MIRROR_COMMIT_INTERVAL_S", base.commit_interval_s),
        progress_interval_s=read.num("DPS_MIRROR_PROGRESS_INTERVAL_S", base.progress_interval_s),
        progress_epoch_min_s=read.num("DPS_MIRROR_PROGRESS_EPOCH_MIN_S", base.progress_epoch_min_s),
        queue_max=int(read.num("DPS_MIRROR_QUEUE_MAX", base.queue_max)),
        start_timeout_s=read.num("DPS_MIRROR_START_TIMEOUT_S", base.start_timeout_s),
        close_timeout_s=read.num("DPS_MIRROR_CLOSE_TIMEOUT_S", base.close_timeout_s),
    )


def download_limits(env: Mapping[str, str]) -> DownloadLimits:
    """`DPS_DATASET_*`: the bounds of one dataset download (its hosts: `address_policy`)."""
    read = _Reader(env)
    return DownloadLimits(
        max_bytes=read.integer("DPS_DATASET_MAX_BYTES", 20 * GiB),
        connect_timeout_s=read.num("DPS_DATASET_CONNECT_TIMEOUT_S", 15.0),
        read_timeout_s=read.num("DPS_DATASET_READ_TIMEOUT_S", 60.0),
        attempts=read.integer("DPS_DATASET_DOWNLOAD_ATTEMPTS", 4),
        retry_wait_s=read.num("DPS_DATASET_RETRY_WAIT_S", 2.0),
        deadline_s=read.num("DPS_DATASET_DEADLINE_S", 6 * 3600.0),
        min_rate=read.num("DPS_DATASET_MIN_RATE", 64 * 1024.0),
        rate_grace_s=read.num("DPS_DATASET_RATE_GRACE_S", 120.0),
        max_tries=read.integer("DPS_DATASET_MAX_TRIES", 20),
        max_inline_bytes=read.integer("DPS_DATASET_MAX_INLINE_BYTES", 4 << 20, minimum=0),
    )


def address_policy(env: Mapping[str, str]) -> AddressPolicy:
    """`DPS_ALLOW_HOSTS` (private hosts a request's URLs may reach, comma-separated) and
    `DPS_ALLOW_LOOPBACK` (1; the worker image sets 0). The `DPS_DATASET_` names of both are
    read too, as before they applied to every URL."""
    read = _Reader(env)
    hosts = read.text("DPS_ALLOW_HOSTS", read.text("DPS_DATASET_ALLOW_HOSTS", ""))
    loopback = read.text("DPS_ALLOW_LOOPBACK", read.text("DPS_DATASET_ALLOW_LOOPBACK", "1"))
    return AddressPolicy(
        allow_hosts=frozenset(h.strip().lower() for h in hosts.split(",") if h.strip()),
        allow_loopback=loopback.strip().lower() not in {"0", "false", "no"},
    )


def extract_limits(env: Mapping[str, str]) -> ExtractLimits:
    """`DPS_DATASET_MAX_UNPACKED_BYTES`, `_MAX_RATIO`, `_MAX_FILES`: the archive bounds."""
    read = _Reader(env)
    return ExtractLimits(
        max_total_bytes=read.integer("DPS_DATASET_MAX_UNPACKED_BYTES", 40 * GiB),
        max_ratio=read.num("DPS_DATASET_MAX_RATIO", 200.0),
        max_files=read.integer("DPS_DATASET_MAX_FILES", 100_000),
        max_header_bytes=read.integer("DPS_DATASET_MAX_HEADER_BYTES", 1 << 20),
    )
