"""Settings for a weights download against a loopback Hub: a quick lock takeover, a bounded
wait, two tries a short pause apart."""

from __future__ import annotations

from pathlib import Path

from orchestrator.settings import Settings


def weights_settings(root: Path, endpoint: str, *, model_wait_s: float = 20.0) -> Settings:
    return Settings(
        root=root / "root",
        hub_endpoint=endpoint,
        hf_cache_dir=root / "hf-cache",
        model_lock_ttl_s=1.0,
        model_wait_s=model_wait_s,
        download_attempts=2,
        retry_wait_s=0.01,
    )
