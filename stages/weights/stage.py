"""The weights stage: make a model's files ready under `<root>/models/`, once per volume.

A model is one or more sources (Hub downloads, or a model built on the worker for `tiny`), each
going to a folder `dest` under the models root. Per folder:

1. A valid completion manifest (`<dest>/.complete.json`: the sources' fingerprint and every file
   with its size, checked against the disk) means the files are ready: nothing is fetched.
2. Otherwise a per-folder lock (`models/.locks/<dest>/`, `events.lease.FileLease`: records
   created with link(2), owner + expiry, renewed while held, so a dead holder's lock is taken
   over; fcntl locks are not reliable on network volumes) makes one worker fetch while the
   others wait and then find the manifest.
3. The holder takes files from RunPod's cached-model folder when it has them (symlinks, no
   request), else downloads them with `huggingface_hub` into a staging folder and moves them
   into place; files already in `dest` with the right size are kept. The manifest goes last.

`start_model_download` runs this in a thread from STARTING so it overlaps the dataset stages;
the `Weights` stage (MODEL_DOWNLOAD) waits for it and turns its byte counts into PROGRESS facts.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
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

from events.atomic import write_atomic
from events.errors import LeaseHeld
from events.facts import ModelReady
from events.lease import FileLease
from events.vocabulary import Status
from orchestrator.settings import Settings
from stages.contract import Stage, StageContext
from stages.errors import StageFailed

MANIFEST = ".complete.json"
HUB_PAGE = "https://huggingface.co"


@dataclass(frozen=True)
class HubFiles:
    """One Hub download into `<models root>/<dest>`.

    `files` names repo files to fetch (all must exist); otherwise the whole repo at `revision`,
    filtered by `allow_patterns` / `ignore_patterns` (fnmatch, as `snapshot_download`). With
    `flatten`, each file lands as `<dest>/<basename>` (Z-Image's `split_files/...`). `gated`
    marks a licence-gated repo, so a missing token is reported before any request.
    """

    repo_id: str
    dest: str
    allow_patterns: tuple[str, ...] | None = None
    files: tuple[str, ...] | None = None
    flatten: bool = False
    revision: str = "main"
    gated: bool = False
    ignore_patterns: tuple[str, ...] | None = None

    @classmethod
    def from_download(cls, spec: Any) -> HubFiles:
        """Adapter from the catalogue's `Download` (empty tuples there mean "not set")."""
        return cls(
            repo_id=spec.repo_id,
            dest=spec.dest,
            allow_patterns=tuple(spec.allow_patterns) or None,
            files=tuple(spec.files) or None,
            flatten=bool(spec.flatten),
            revision=getattr(spec, "revision", "main"),
            gated=bool(spec.gated),
            ignore_patterns=tuple(getattr(spec, "ignore_patterns", ())) or None,
        )


@dataclass(frozen=True)
class Built:
    """A model made on the worker (the tiny CPU model): `build(folder)` writes its files."""

    dest: str
    build: Callable[[Path], object]
    name: str  # part of the manifest fingerprint: a new builder version rebuilds


Source = HubFiles | Built


@dataclass(frozen=True)
class ModelResult:
    model_type: str
    path: str  # the model's first folder, absolute
    files: tuple[str, ...]  # absolute paths of every file, for the runner's verify
    bytes: int
    source: str  # "reused" | "cache" | "downloaded" | "built" (the "newest" across folders)

    def as_result(self) -> dict[str, Any]:
        return {
            "model_type": self.model_type,
            "path": self.path,
            "files": list(self.files),
            "bytes": self.bytes,
            "source": self.source,
        }


class Tracker:
    """Bytes done / total and a status line, shared between the download thread and the stage."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.done = 0
        self.total = 0
        self.message = ""

    def add(self, n: int) -> None:
        with self._lock:
            self.done += n

    def expect(self, n: int) -> None:
        with self._lock:
            self.total += n

    def say(self, message: str) -> None:
        with self._lock:
            self.message = message

    def snapshot(self) -> tuple[int, int, str]:
        with self._lock:
            return self.done, self.total, self.message


# -- sources per model type ---------------------------------------------------------------------
def _build_tiny(folder: Path) -> object:
    try:
        from minipipe.model import build_tiny_model  # noqa: PLC0415  (optional, heavy: torch)
    except ImportError as exc:
        raise StageFailed(
            "model_type 'tiny' needs the minipipe package (pip install '.[local]'), "
            f"which could not be imported: {exc}"
        ) from exc
    return build_tiny_model(folder)


def sources_for(model_type: str) -> tuple[Source, ...]:
    """The catalogue's downloads for `model_type`, as this module's source types."""
    from orchestrator.catalogue import get_model  # noqa: PLC0415  (the catalogue is data-heavy)

    entry = get_model(model_type)
    if entry.built_by is not None:
        return (Built(entry.weights_dir or model_type, _build_tiny, str(entry.built_by)),)
    return tuple(HubFiles.from_download(d) for d in entry.downloads)


# -- manifests ----------------------------------------------------------------------------------
def _fingerprint(sources: Iterable[Source]) -> list[str]:
    return [
        f"built:{s.name}" if isinstance(s, Built) else json.dumps(_spec_dict(s), sort_keys=True)
        for s in sources
    ]


def _spec_dict(spec: HubFiles) -> dict[str, Any]:
    return {
        "repo_id": spec.repo_id,
        "revision": spec.revision,
        "files": spec.files,
        "allow": spec.allow_patterns,
        "ignore": spec.ignore_patterns,
        "flatten": spec.flatten,
    }


def read_manifest(dest: Path, sources: Sequence[Source]) -> dict[str, int] | None:
    """The manifest's {file: size} if it matches `sources` and every file is on disk at that
    size; else None (absent, torn, for other sources, or a file missing or damaged)."""
    try:
        raw = json.loads((dest / MANIFEST).read_text(encoding="utf-8"))
        files = {str(k): int(v) for k, v in raw["files"].items()}
        if raw["sources"] != _fingerprint(sources):
            return None
        for name, size in files.items():
            if (dest / name).stat().st_size != size:
                return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return files


def _write_manifest(dest: Path, sources: Sequence[Source], names: Iterable[str], how: str) -> None:
    files = {n: (dest / n).stat().st_size for n in sorted(set(names))}
    payload = {"sources": _fingerprint(sources), "files": files, "source": how, "at": time.time()}
    write_atomic(dest / MANIFEST, json.dumps(payload, indent=1))


# -- the work -----------------------------------------------------------------------------------
_RANK = {"reused": 0, "cache": 1, "built": 2, "downloaded": 3}


def ensure_model(
    model_type: str,
    sources: Sequence[Source],
    *,
    settings: Settings,
    token: str | None = None,
    tracker: Tracker | None = None,
) -> ModelResult:
    """Make every source's files ready (see the module doc); raise StageFailed with a message
    for the user when that is impossible."""
    if not sources:
        raise StageFailed(f"model_type {model_type!r} has nothing to download or build")
    tracker = tracker or Tracker()
    groups: dict[str, list[Source]] = {}
    for source in sources:
        groups.setdefault(source.dest, []).append(source)
    files: list[str] = []
    total, how = 0, "reused"
    for dest_name, group in groups.items():
        dest = settings.models_root / dest_name
        got, group_how = _ensure_folder(dest, group, settings, token, tracker)
        files += [str(dest / n) for n in sorted(got)]
        total += sum(got.values())
        how = max(how, group_how, key=_RANK.__getitem__)
    first = settings.models_root / next(iter(groups))
    tracker.say(f"{model_type} ready")
    return ModelResult(model_type, str(first), tuple(files), total, how)


def _ensure_folder(
    dest: Path, group: Sequence[Source], settings: Settings, token: str | None, tracker: Tracker
) -> tuple[dict[str, int], str]:
    ready = read_manifest(dest, group)
    if ready is not None:
        return ready, "reused"
    lock = FileLease(
        settings.models_root / ".locks" / dest.relative_to(settings.models_root).as_posix(),
        ttl_s=settings.model_lock_ttl_s,
    )
    _acquire(lock, dest.name, settings, tracker)
    try:
        ready = read_manifest(dest, group)  # the worker we waited for may have finished it
        if ready is not None:
            return ready, "reused"
        (dest / MANIFEST).unlink(missing_ok=True)  # a crash from here on leaves no manifest
        staging = settings.models_root / ".staging" / dest.relative_to(settings.models_root)
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        names: list[str] = []
        hows: list[str] = []
        try:
            for source in group:
                if isinstance(source, Built):
                    names += _build(source, staging, dest, tracker)
                    hows.append("built")
                else:
                    got, src_how = _fetch_with_retries(
                        source,
                        staging=staging,
                        dest=dest,
                        settings=settings,
                        token=token,
                        tracker=tracker,
                    )
                    names += got
                    hows.append(src_how)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        _write_manifest(dest, group, names, max(hows, key=_RANK.__getitem__))
        result = read_manifest(dest, group)
        assert result is not None, f"manifest of {dest} does not verify right after writing it"
        return result, max(hows, key=_RANK.__getitem__)
    finally:
        lock.release()


def _acquire(lock: FileLease, what: str, settings: Settings, tracker: Tracker) -> None:
    """Take the folder's lock, waiting (bounded, with a status line) while another holds it."""
    deadline = time.monotonic() + settings.model_wait_s
    while True:
        try:
            lock.acquire()
        except LeaseHeld as held:
            if time.monotonic() > deadline:
                raise StageFailed(
                    f"gave up waiting for worker {held.owner!r}, which has been preparing the "
                    f"model folder {what!r} for over {settings.model_wait_s:.0f}s; retry the job"
                ) from None
            tracker.say(f"waiting for worker {held.owner} to finish downloading {what}")
            time.sleep(min(1.0, settings.model_lock_ttl_s / 4))
            continue
        lock.start_renewing()  # a long download keeps its lock; a dead process loses it
        return


def _place(staging: Path, dest: Path, moves: Iterable[tuple[str, str]]) -> None:
    """Move staged files (staging-relative) to their dest-relative names; rename is atomic."""
    for staged, target in moves:
        final = dest / target
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging / staged, final)


def _build(source: Built, staging: Path, dest: Path, tracker: Tracker) -> list[str]:
    tracker.say(f"building {source.dest}")
    source.build(staging)
    names = sorted(
        p.relative_to(staging).as_posix()
        for p in staging.rglob("*")
        if p.is_file() and ".cache" not in p.relative_to(staging).parts
    )
    _place(staging, dest, ((n, n) for n in names))
    return names


def _target(spec: HubFiles, path: str) -> str:
    return PurePosixPath(path).name if spec.flatten else path


def _targets(spec: HubFiles, paths: Sequence[str]) -> dict[str, str]:
    """repo path -> dest-relative name; flattening must not merge two files into one."""
    out: dict[str, str] = {}
    for path in paths:
        name = _target(spec, path)
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
    spec: HubFiles, paths: list[str], settings: Settings, staging: Path, dest: Path
) -> list[str]:
    repo_dir = settings.hf_cache_dir / f"models--{spec.repo_id.replace('/', '--')}"
    ref = repo_dir / "refs" / spec.revision
    sha = ref.read_text().strip() if ref.is_file() else spec.revision
    targets = _targets(spec, paths)
    for path, name in targets.items():
        link = staging / "linked" / name
        link.parent.mkdir(parents=True, exist_ok=True)
        # Link to the blob itself: snapshot entries are relative symlinks into ../../blobs.
        link.symlink_to(os.path.realpath(repo_dir / "snapshots" / sha / path))
    _place(staging / "linked", dest, ((n, n) for n in targets.values()))
    return list(targets.values())


class _Retryable(Exception):
    pass


def _fetch_with_retries(
    spec: HubFiles,
    *,
    staging: Path,
    dest: Path,
    settings: Settings,
    token: str | None,
    tracker: Tracker,
) -> tuple[list[str], str]:
    cached = _from_cache(spec, settings.hf_cache_dir)
    if cached is not None:
        tracker.say(f"using RunPod's cached copy of {spec.repo_id}")
        return _link_from_cache(spec, cached, settings, staging, dest), "cache"
    if spec.gated and not token:
        raise StageFailed(_no_token(spec.repo_id))
    wait = settings.retry_wait_s
    for attempt in range(1, settings.download_attempts + 1):
        try:
            got = _download(
                spec, staging=staging, dest=dest, settings=settings, token=token, tracker=tracker
            )
            return got, "downloaded"
        except _Retryable as exc:
            if attempt == settings.download_attempts:
                raise StageFailed(
                    f"could not download {spec.repo_id} from {settings.hub_endpoint} after "
                    f"{attempt} attempts: {exc}"
                ) from exc
            tracker.say(f"download of {spec.repo_id} failed ({exc}); retrying")
            time.sleep(wait)
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


def _download(
    spec: HubFiles,
    *,
    staging: Path,
    dest: Path,
    settings: Settings,
    token: str | None,
    tracker: Tracker,
) -> list[str]:
    api = HfApi(endpoint=settings.hub_endpoint, token=token or False)
    try:
        tracker.say(f"listing {spec.repo_id}")
        sha = api.model_info(spec.repo_id, revision=spec.revision).sha or spec.revision
        listing = {
            e.path: e.size
            for e in api.list_repo_tree(spec.repo_id, revision=sha, recursive=True)
            if isinstance(e, RepoFile)
        }
        wanted = _select(spec, listing)
        targets = _targets(spec, wanted)
        todo = [p for p in wanted if not _same_size(dest / targets[p], listing[p])]
        tracker.expect(sum(listing[p] for p in todo))
        tracker.add(0)
        bar = _bar_class(tracker)
        for path in todo:
            tracker.say(f"downloading {spec.repo_id}/{path}")
            hf_hub_download(
                spec.repo_id,
                path,
                revision=sha,
                local_dir=staging,
                token=token or False,
                endpoint=settings.hub_endpoint,
                tqdm_class=bar,
            )
            _place(staging, dest, [(path, targets[path])])
        return [targets[p] for p in wanted]
    except GatedRepoError as exc:
        raise StageFailed(_gated(spec.repo_id, token)) from exc
    except RemoteEntryNotFoundError as exc:
        raise StageFailed(f"{spec.repo_id}: a file vanished from the repo: {exc}") from exc
    except RevisionNotFoundError as exc:
        raise StageFailed(f"{spec.repo_id} has no revision {spec.revision!r}") from exc
    except RepositoryNotFoundError as exc:
        raise StageFailed(
            f"{spec.repo_id} was not found on {settings.hub_endpoint} (or it is private and "
            "the token cannot read it)"
        ) from exc
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else 0
        if status in (401, 403):
            raise StageFailed(
                f"{spec.repo_id}: the Hub refused access ({status}); check the token"
            ) from exc
        raise _Retryable(f"HTTP {status}") from exc
    except (LocalEntryNotFoundError, HTTPError, OSError) as exc:
        raise _Retryable(f"{type(exc).__name__}: {exc}") from exc


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


def _bar_class(tracker: Tracker) -> type[tqdm]:
    """A silent tqdm class that counts downloaded bytes into `tracker` (the client's hook)."""

    class _Bar(tqdm):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)  # type: ignore[no-untyped-call]

        def update(self, n: float | None = 1) -> bool | None:
            tracker.add(int(n or 0))
            return super().update(n)  # type: ignore[no-any-return]

    return _Bar


# -- background start and the stage -------------------------------------------------------------
@dataclass
class ModelDownload:
    """A download running in a thread; `future` hands its result over."""

    model_type: str
    future: Future[ModelResult]
    tracker: Tracker = field(default_factory=Tracker)


def start_model_download(
    model_type: str,
    *,
    settings: Settings,
    token: str | None = None,
    sources: Sequence[Source] | None = None,
) -> ModelDownload:
    """Start making `model_type` ready in a daemon thread and return at once."""
    resolved = tuple(sources) if sources is not None else sources_for(model_type)
    download = ModelDownload(model_type, Future())
    download.future.set_running_or_notify_cancel()

    def work() -> None:
        try:
            result = ensure_model(
                model_type, resolved, settings=settings, token=token, tracker=download.tracker
            )
        except BaseException as exc:  # handed to whoever waits; the thread itself ends
            download.future.set_exception(exc)
        else:
            download.future.set_result(result)

    threading.Thread(target=work, name=f"model-{model_type}", daemon=True).start()
    return download


class Throttle:
    """Says when to emit a PROGRESS fact: at most one a second, and only for 5 points of
    progress, a new status line, the end, or a 30 s heartbeat."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._at = -1e9
        self._pct = -100.0
        self._msg = ""

    def due(self, done: int, total: int, message: str, final: bool = False) -> bool:
        now = self._clock()
        pct = 100.0 * done / total if total else 0.0
        moved = pct - self._pct >= 5 or message != self._msg or now - self._at >= 30
        if final or (now - self._at >= 1 and moved):
            self._at, self._pct, self._msg = now, pct, message
            return True
        return False


class Weights(Stage):
    """MODEL_DOWNLOAD: wait for (or start) the model's download, report bytes, record
    MODEL_READY."""

    name = "weights"
    status = Status.MODEL_DOWNLOAD

    def __init__(
        self,
        model_type: str,
        *,
        settings: Settings,
        token: str | None = None,
        sources: Sequence[Source] | None = None,
        download: ModelDownload | None = None,
        poll_s: float = 0.5,
    ) -> None:
        self.model_type = model_type
        self.settings = settings
        self.token = token
        self.sources = tuple(sources) if sources is not None else None
        self.download = download
        self.poll_s = poll_s

    def _sources(self) -> tuple[Source, ...]:
        return self.sources if self.sources is not None else sources_for(self.model_type)

    def run(self, ctx: StageContext) -> dict[str, Any]:
        download = self.download or start_model_download(
            self.model_type, settings=self.settings, token=self.token, sources=self._sources()
        )
        throttle = Throttle()
        while True:
            try:
                result = download.future.result(timeout=self.poll_s)
                break
            except FutureTimeout:
                done, total, message = download.tracker.snapshot()
                if throttle.due(done, total, message):
                    ctx.progress(**_progress(self.model_type, done, total, message))
        done, total, _ = download.tracker.snapshot()
        if total:
            ctx.progress(**_progress(self.model_type, done, total, "model ready"))
        ctx.record(
            ModelReady(
                model_type=result.model_type,
                path=result.path,
                bytes=result.bytes,
                source=result.source,
            )
        )
        return result.as_result()

    def verify(self, ctx: StageContext, result: Mapping[str, Any]) -> bool:
        """Still usable when every folder's manifest matches the files on disk."""
        groups: dict[str, list[Source]] = {}
        for source in self._sources():
            groups.setdefault(source.dest, []).append(source)
        root = self.settings.models_root
        return all(read_manifest(root / d, g) is not None for d, g in groups.items()) and bool(
            result.get("files")
        )


def _progress(model_type: str, done: int, total: int, message: str) -> dict[str, Any]:
    data: dict[str, Any] = {"stage": "weights", "model_type": model_type, "message": message}
    data.update(bytes_done=done, bytes_total=total)
    if total:
        data["percent"] = round(100.0 * done / total, 1)
    return data
