"""`hf://datasets/owner/name[@rev]`: a dataset repo fetched from the Hub with huggingface_hub's
`snapshot_download`, its refusals rewritten as messages naming the field."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from huggingface_hub import snapshot_download
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from stages.dataset.limits import DownloadLimits, too_large
from stages.errors import DownloadFailed


def parse_hf(url: str, field: str) -> tuple[str, str | None]:
    rest = url.removeprefix("hf://datasets/").strip("/")
    repo, _, rev = rest.partition("@")
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", repo):
        raise DownloadFailed(f'{field}: expected "hf://datasets/owner/name[@revision]"')
    return repo, rev or None


def fetch_hub(
    url: str, folder: Path, *, field: str, endpoint: str, token: str | None, limits: DownloadLimits
) -> tuple[Path, int, str]:
    """The repo's snapshot in `folder`: (folder, total size, a digest of its listing)."""
    repo, rev = parse_hf(url, field)
    try:
        snapshot_download(
            repo,
            repo_type="dataset",
            revision=rev,
            endpoint=endpoint,
            token=token or False,
            local_dir=folder,
        )
    except GatedRepoError as exc:
        raise DownloadFailed(
            f"{field}: {repo} is gated; accept its terms and give a token"
        ) from exc
    except RevisionNotFoundError as exc:
        raise DownloadFailed(f"{field}: {repo} has no revision {rev!r}") from exc
    except RepositoryNotFoundError as exc:
        raise DownloadFailed(
            f"{field}: dataset {repo} was not found on the Hub (or it is private and the token "
            "cannot read it)"
        ) from exc
    except HfHubHTTPError as exc:
        raise DownloadFailed(f"{field}: the Hub refused the download of {repo}: {exc}") from exc
    except OSError as exc:
        raise DownloadFailed(f"{field}: could not download {repo}: {exc}") from exc
    files = [p for p in folder.rglob("*") if p.is_file() and ".cache" not in p.parts]
    size = sum(p.stat().st_size for p in files)
    if size > limits.max_bytes:
        raise too_large(field, limits, size)
    digest = hashlib.sha256()
    for p in sorted(files):
        digest.update(f"{p.relative_to(folder)}\0{p.stat().st_size}\n".encode())
    return folder, size, digest.hexdigest()
