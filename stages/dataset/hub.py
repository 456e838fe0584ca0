"""`hf://datasets/owner/name[@rev]`: a dataset repo fetched from the Hub with huggingface_hub.

The revision is pinned to a commit and sized from the Hub's file listing before a byte is
fetched, so an over-cap repo is refused without touching the disk; a refused or failed download
is removed. The client's refusals are rewritten as messages naming the field."""

from __future__ import annotations

import errno
import hashlib
import re
import shutil
from pathlib import Path

from huggingface_hub import HfApi, snapshot_download
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.hf_api import RepoFile

from stages.dataset.limits import DownloadLimits, too_large
from stages.errors import DownloadFailed
from stages.xet_errors import xet_refused


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
        _snapshot(repo, rev, folder, field=field, endpoint=endpoint, token=token, limits=limits)
        files = [p for p in folder.rglob("*") if p.is_file() and ".cache" not in p.parts]
        size = sum(p.stat().st_size for p in files)
        if size > limits.max_bytes:  # more arrived than the listing said
            raise too_large(field, limits, size)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)  # a refused or failed download keeps no disk
        raise
    digest = hashlib.sha256()
    for p in sorted(files):
        digest.update(f"{p.relative_to(folder)}\0{p.stat().st_size}\n".encode())
    return folder, size, digest.hexdigest()


def _snapshot(
    repo: str,
    rev: str | None,
    folder: Path,
    *,
    field: str,
    endpoint: str,
    token: str | None,
    limits: DownloadLimits,
) -> None:
    """Size the repo from its listing, refuse it over the cap, then fetch that same commit."""
    api = HfApi(endpoint=endpoint, token=token or False)
    try:
        # One commit for the listing and the download: a push in between cannot grow it.
        commit = api.dataset_info(repo, revision=rev).sha or rev
        listing = api.list_repo_tree(repo, revision=commit, recursive=True, repo_type="dataset")
        size = sum(entry.size for entry in listing if isinstance(entry, RepoFile))
        if size > limits.max_bytes:
            raise too_large(field, limits, size)
        snapshot_download(
            repo,
            repo_type="dataset",
            revision=commit,
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
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DownloadFailed(
                f"{field}: the volume is full while downloading {repo} from the Hub; free "
                "space, or use a smaller dataset"
            ) from exc
        raise DownloadFailed(f"{field}: could not download {repo}: {exc}") from exc
    except RuntimeError as exc:  # hf_xet: a file stored by Xet did not download
        why = "the Hub refused the token" if xet_refused(exc) else str(exc).splitlines()[0]
        raise DownloadFailed(f"{field}: could not download {repo}: {why}") from exc
