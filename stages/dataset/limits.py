"""The bounds of a dataset: how big a download may be and how long it may take, how much the
archives may unpack to, and what a user is told when one is passed."""

from __future__ import annotations

from dataclasses import dataclass, field

from stages.addresses import AddressPolicy
from stages.errors import DownloadFailed

GiB = 1 << 30


@dataclass(frozen=True)
class DownloadLimits:
    """Bounds for one dataset download (the worker's settings fill them from `DPS_DATASET_*`)."""

    max_bytes: int = 20 * GiB
    connect_timeout_s: float = 15.0
    read_timeout_s: float = 60.0
    attempts: int = 4  # failures in a row that made no progress before giving up
    retry_wait_s: float = 2.0  # first pause between tries, doubled each time (capped at 60 s)
    # A trickle must not hold a GPU worker: the whole download (every try) has a deadline, an
    # average rate it must keep once `rate_grace_s` passed, and a cap on tries even while
    # bytes come in.
    deadline_s: float = 6 * 3600.0
    min_rate: float = 64 * 1024.0  # bytes per second, averaged over the whole download
    rate_grace_s: float = 120.0
    max_tries: int = 20
    # A dataset given inline, as a data: URL in the request (stages.dataset.inline): the
    # archive's size. 4 MiB is about 5.3 MiB of base64, within RunPod's 10 MB `/run` body.
    max_inline_bytes: int = 4 << 20
    # Which hosts a dataset URL may reach (stages.addresses): the worker's one policy.
    addresses: AddressPolicy = field(default_factory=AddressPolicy)


@dataclass(frozen=True)
class ExtractLimits:
    """Bounds for unpacking the archives (`DPS_DATASET_MAX_UNPACKED_BYTES`, ...)."""

    max_total_bytes: int = 40 * GiB  # uncompressed, all archives together
    max_ratio: float = 200.0  # unpacked / packed: per entry over 1 MiB, and for the whole archive
    max_files: int = 100_000
    # A tar's PAX extended header or GNU long name is read whole into memory: cap it.
    max_header_bytes: int = 1 << 20


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"  # pragma: no cover


def too_large(field: str, limits: DownloadLimits, total: int | None) -> DownloadFailed:
    size = f" ({human(total)})" if total is not None else ""
    return DownloadFailed(
        f"{field}: the dataset is larger than the {human(limits.max_bytes)} limit{size}; "
        "split it or reduce it"
    )
