"""Fetching a `HubFiles` source: from RunPod's cached-model folder when it has the files
(symlinks, no request), else from the Hub with `huggingface_hub` into a staging folder: large
files one after another, small ones several at once beside them, each moved into place as it
lands; files already in `dest` with the right size are kept.
Network errors and 5xx are retried; a refusal (gated, not found, 401/403) says what to do.
An `hf_cache` source lands as a Hugging Face cache entry (plain files under
`snapshots/<commit>/`, the layout huggingface_hub itself writes where symlinks are unsupported,
then `refs/<revision>`), so the trainer resolves it by repo id with the Hub offline.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from httpx2 import HTTPError
from huggingface_hub import HfApi, hf_hub_download
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.hf_api import RepoFile
from huggingface_hub.utils._paths import filter_repo_objects
from huggingface_hub.utils.tqdm import tqdm

from stages.errors import DownloadCancelled, StageFailed
from stages.weights import space
from stages.weights.inputs import WeightsOptions
from stages.weights.progress import Tracker
from stages.weights.sources import HubFiles
from stages.xet_errors import xet_refused

HUB_PAGE = "https://huggingface.co"


def place(staging: Path, dest: Path, moves: Iterable[tuple[str, str]]) -> None:
    """Move staged files (staging-relative) to their dest-relative names; rename is atomic."""
    for staged, target in moves:
        final = dest / target
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging / staged, final)


def _targets(spec: HubFiles, paths: Sequence[str], commit: str) -> dict[str, str]:
    """repo path -> dest-relative name; flattening must not merge two files into one."""
    out: dict[str, str] = {}
    for path in paths:
        name = spec.target(path, commit)
        if name in out.values():
            raise StageFailed(f"{spec.repo_id}: flattening gives two files the name {name!r}")
        out[path] = name
    return out


def _from_cache(spec: HubFiles, cache_dir: Path) -> list[str] | None:
    """The repo files this spec wants from an HF cache snapshot (RunPod's cached models), or
    None when the cache does not hold them all. Patterns cannot be checked against the remote
    listing offline, so one matching file counts: RunPod caches whole snapshots."""
    repo_dir = cache_dir / f"models--{spec.repo_id.replace('/', '--')}"
    ref = repo_dir / "refs" / spec.revision
    try:
        sha = ref.read_text().strip() if ref.is_file() else spec.revision
    except OSError:
        return None
    snapshot = repo_dir / "snapshots" / sha
    if not snapshot.is_dir():
        return None
    if spec.files is not None:
        ok = all((snapshot / f).is_file() for f in spec.files)
        return list(spec.files) if ok else None
    present = sorted(p.relative_to(snapshot).as_posix() for p in snapshot.rglob("*") if p.is_file())
    wanted = list(
        filter_repo_objects(
            present,
            allow_patterns=list(spec.allow_patterns) if spec.allow_patterns else None,
            ignore_patterns=list(spec.ignore_patterns) if spec.ignore_patterns else None,
        )
    )
    return wanted or None


def _link_from_cache(
    spec: HubFiles, paths: list[str], options: WeightsOptions, staging: Path, dest: Path
) -> list[str]:
    repo_dir = options.hf_cache_dir / f"models--{spec.repo_id.replace('/', '--')}"
    ref = repo_dir / "refs" / spec.revision
    sha = ref.read_text().strip() if ref.is_file() else spec.revision
    targets = _targets(spec, paths, sha)
    for path, name in targets.items():
        link = staging / "linked" / name
        link.parent.mkdir(parents=True, exist_ok=True)
        # Link to the blob itself: snapshot entries are relative symlinks into ../../blobs.
        link.symlink_to(os.path.realpath(repo_dir / "snapshots" / sha / path))
    place(staging / "linked", dest, ((n, n) for n in targets.values()))
    return list(targets.values()) + _write_ref(spec, sha, staging, dest)


def _write_ref(spec: HubFiles, sha: str, staging: Path, dest: Path) -> list[str]:
    """For a Hugging Face cache download, `refs/<revision>` naming the commit (as
    huggingface_hub writes it, no newline), placed last; returns its name, or nothing."""
    if not spec.hf_cache:
        return []
    staged = staging / ".ref" / spec.revision
    staged.parent.mkdir(parents=True, exist_ok=True)
    staged.write_text(sha, encoding="ascii")
    place(staging, dest, [(staged.relative_to(staging).as_posix(), spec.ref)])
    return [spec.ref]


class _Retryable(Exception):
    """A transient failure: try again (network errors, 5xx)."""


def fetch(
    spec: HubFiles,
    *,
    staging: Path,
    dest: Path,
    options: WeightsOptions,
    token: str | None,
    tracker: Tracker,
) -> tuple[list[str], str]:
    """Put `spec`'s files in `dest`; returns their dest-relative names and how they came
    ("cache" or "downloaded")."""
    cached = _from_cache(spec, options.hf_cache_dir)
    if cached is not None:
        tracker.say(f"using RunPod's cached copy of {spec.repo_id}")
        return _link_from_cache(spec, cached, options, staging, dest), "cache"
    if spec.gated and not token:
        raise StageFailed(_no_token(spec.repo_id))
    wait = options.retry_wait_s
    for attempt in range(1, options.download_attempts + 1):
        try:
            got = _download(
                spec, staging=staging, dest=dest, options=options, token=token, tracker=tracker
            )
            return got, "downloaded"
        except _Retryable as exc:
            if attempt == options.download_attempts:
                raise StageFailed(
                    f"could not download {spec.repo_id} from {options.hub_endpoint} after "
                    f"{attempt} attempts: {exc}"
                ) from exc
            tracker.say(f"download of {spec.repo_id} failed ({exc}); retrying")
            tracker.pause(wait)
            wait *= 2
    raise AssertionError("unreachable")


def _no_token(repo_id: str) -> str:
    return (
        f"{repo_id} is a gated model and no Hugging Face token was given: set "
        "api_keys.huggingface_token to a token from an account that accepted the licence at "
        f"{HUB_PAGE}/{repo_id}"
    )


def _gated(repo_id: str, token: str | None) -> str:
    if not token:
        return _no_token(repo_id)
    return (
        f"access to the gated model {repo_id} was refused for the given Hugging Face token: "
        f"accept its licence at {HUB_PAGE}/{repo_id} while logged in, and use a token that "
        "belongs to the account that accepted it"
    )


@contextlib.contextmanager
def _hub_errors(spec: HubFiles, options: WeightsOptions, token: str | None) -> Iterator[None]:
    """The Hub's refusals as messages for the user; transient failures as `_Retryable`."""
    try:
        yield
    except GatedRepoError as exc:
        raise StageFailed(_gated(spec.repo_id, token)) from exc
    except RemoteEntryNotFoundError as exc:
        raise StageFailed(f"{spec.repo_id}: a file vanished from the repo: {exc}") from exc
    except RevisionNotFoundError as exc:
        raise StageFailed(f"{spec.repo_id} has no revision {spec.revision!r}") from exc
    except RepositoryNotFoundError as exc:
        raise StageFailed(
            f"{spec.repo_id} was not found on {options.hub_endpoint} (or it is private and "
            "the token cannot read it)"
        ) from exc
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else 0
        if status in (401, 403):
            raise StageFailed(
                f"{spec.repo_id}: the Hub refused access ({status}); check the token"
            ) from exc
        raise _Retryable(f"HTTP {status}") from exc
    except (
        LocalEntryNotFoundError,
        HTTPError,
        OSError,
        RuntimeError,
    ) as exc:  # RuntimeError: hf_xet
        if xet_refused(exc):  # hf_xet: the Hub's CAS refused the token
            raise StageFailed(f"{spec.repo_id}: the Hub refused access; check the token") from exc
        raise _Retryable(f"{type(exc).__name__}: {exc}") from exc


def _listing(api: HfApi, spec: HubFiles) -> tuple[str, dict[str, int]]:
    """The revision's commit and every file in it with its size."""
    sha = api.model_info(spec.repo_id, revision=spec.revision).sha or spec.revision
    listing = {
        e.path: e.size
        for e in api.list_repo_tree(spec.repo_id, revision=sha, recursive=True)
        if isinstance(e, RepoFile)
    }
    return sha, listing


def _download(
    spec: HubFiles,
    *,
    staging: Path,
    dest: Path,
    options: WeightsOptions,
    token: str | None,
    tracker: Tracker,
) -> list[str]:
    api = HfApi(endpoint=options.hub_endpoint, token=token or False)
    with _hub_errors(spec, options, token):
        tracker.say(f"listing {spec.repo_id}")
        sha, listing = _listing(api, spec)
        wanted = _select(spec, listing)
        targets = _targets(spec, wanted, sha)
        todo = [p for p in wanted if not _same_size(dest / targets[p], listing[p])]
        need = sum(listing[p] for p in todo)
        start = tracker.snapshot()[0]
        tracker.expect(need)
        tracker.add(0)
        with space.reserve(
            options.models_root, spec.repo_id, need, lambda: tracker.snapshot()[0] - start
        ):
            where = _Where(spec, sha, targets, staging, dest)
            _fetch_files(where, todo, listing, options=options, token=token, tracker=tracker)
        return [targets[p] for p in wanted] + _write_ref(spec, sha, staging, dest)


@dataclass(frozen=True)
class _Where:
    """A revision's files and where they land: staged, then moved to their target names."""

    spec: HubFiles
    sha: str
    targets: Mapping[str, str]  # repo path -> dest-relative name
    staging: Path
    dest: Path


def _fetch_files(
    where: _Where,
    todo: Sequence[str],
    listing: Mapping[str, int],
    *,
    options: WeightsOptions,
    token: str | None,
    tracker: Tracker,
) -> None:
    """Fetch `todo` into `dest`: large files one after another, small ones several at once."""
    spec, staging = where.spec, where.staging
    stop = threading.Event()  # set when one file fails: the others stop at their next bytes
    bar = _bar_class(tracker, stop)

    def one(path: str) -> None:
        if stop.is_set():
            raise DownloadCancelled("another file of this download failed")
        tracker.check()
        hf_hub_download(
            spec.repo_id,
            path,
            revision=where.sha,
            local_dir=staging,
            token=token or False,
            endpoint=options.hub_endpoint,
            tqdm_class=bar,
        )
        place(staging, where.dest, [(path, where.targets[path])])

    def lane(paths: Sequence[str]) -> None:
        for path in paths:
            one(path)

    # Large files one at a time, largest first: hf_xet already fetches a large file's xorb
    # ranges in parallel, and it ignores an exception raised in its progress callback, so
    # a cancel stops a Xet download only between files (at most one large file goes on).
    # Small files, one range each, go several at once beside them (as `snapshot_download`
    # does): a far Hub's round trips overlap instead of adding up.
    order = sorted(todo, key=lambda p: -listing[p])
    large = [p for p in order if listing[p] >= options.one_at_a_time_bytes]
    small = [p for p in order if listing[p] < options.one_at_a_time_bytes]
    workers = max(1, min(options.download_workers, len(small) + bool(large)))
    if order:
        tracker.say(_fetching(spec.repo_id, order, workers))
    with ThreadPoolExecutor(workers, thread_name_prefix="weights") as pool:
        futures = [pool.submit(lane, large)] if large else []
        futures += [pool.submit(one, path) for path in small]
        try:
            for future in as_completed(futures):
                future.result()
        finally:
            stop.set()  # after an error, the files still in flight give up
            for future in futures:
                future.cancel()
    tracker.check()  # a cancel during the last files, which a Xet download ignored


def _fetching(repo_id: str, order: Sequence[str], workers: int) -> str:
    if len(order) == 1:
        return f"downloading {repo_id}/{order[0]}"
    return f"downloading {len(order)} files of {repo_id}, {workers} at a time"


def _select(spec: HubFiles, listing: Mapping[str, int]) -> list[str]:
    if spec.files is not None:
        missing = [f for f in spec.files if f not in listing]
        if missing:
            raise StageFailed(
                f"{spec.repo_id} (revision {spec.revision}) has no file {missing[0]!r}"
                + (f" (and {len(missing) - 1} more missing)" if len(missing) > 1 else "")
            )
        return list(spec.files)
    wanted = list(
        filter_repo_objects(
            sorted(listing),
            allow_patterns=list(spec.allow_patterns) if spec.allow_patterns else None,
            ignore_patterns=list(spec.ignore_patterns) if spec.ignore_patterns else None,
        )
    )
    if not wanted:
        raise StageFailed(
            f"{spec.repo_id} (revision {spec.revision}) has no file matching "
            f"{list(spec.allow_patterns or ['*'])}"
        )
    return wanted


def _same_size(path: Path, size: int) -> bool:
    try:
        return path.stat().st_size == size
    except OSError:
        return False


def _bar_class(tracker: Tracker, stop: threading.Event) -> type[tqdm]:
    """A silent tqdm class that counts downloaded bytes into `tracker` (the client's hook), and
    stops its file's download once `stop` is set (another file failed).

    Only file bytes count. A Xet download reports network bytes too (compressed xorb ranges):
    a class with `update_transfer` gets those there, in one bar, instead of in a second bar
    whose `update` would count each byte twice."""

    class _Bar(tqdm):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)  # type: ignore[no-untyped-call]

        def update(self, n: float | None = 1) -> bool | None:
            if stop.is_set():
                raise DownloadCancelled("another file of this download failed")
            tracker.add(int(n or 0))
            return super().update(n)  # type: ignore[no-any-return]

        def update_transfer(self, n: float | None = 1) -> None:
            return None  # network bytes, not file bytes

        def set_transfer_postfix_str(self, s: str = "", refresh: bool = True) -> None:
            return None

    return _Bar
