"""Making a model's folders ready under the models root, once per volume.

Per folder: a valid completion manifest means the files are ready and nothing is fetched.
Otherwise a per-folder lock (`models/.locks/<dest>/`, an `events.lease.FileLease`: records created
with link(2), owner + expiry, renewed while held, so a dead holder's lock is taken over; fcntl
locks are not reliable on network volumes) makes one worker fetch while the others wait and then
find the manifest. The holder builds or fetches (`hub`) into a staging folder and writes the
manifest last.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from events.errors import LeaseHeld
from events.lease import FileLease
from stages.errors import StageFailed
from stages.weights.hub import fetch, place
from stages.weights.inputs import WeightsOptions
from stages.weights.manifest import MANIFEST, read_manifest, write_manifest
from stages.weights.progress import Tracker
from stages.weights.sources import Built, Source


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


_RANK = {"reused": 0, "cache": 1, "built": 2, "downloaded": 3}


def ensure_model(
    model_type: str,
    sources: Sequence[Source],
    *,
    options: WeightsOptions,
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
        dest = options.models_root / dest_name
        got, group_how = _ensure_folder(dest, group, options, token, tracker)
        files += [str(dest / n) for n in sorted(got)]
        total += sum(got.values())
        how = max(how, group_how, key=_RANK.__getitem__)
    first = options.models_root / next(iter(groups))
    tracker.say(f"{model_type} ready")
    return ModelResult(model_type, str(first), tuple(files), total, how)


def _ensure_folder(
    dest: Path,
    group: Sequence[Source],
    options: WeightsOptions,
    token: str | None,
    tracker: Tracker,
) -> tuple[dict[str, int], str]:
    ready = read_manifest(dest, group)
    if ready is not None:
        return ready, "reused"
    lock = FileLease(
        options.models_root / ".locks" / dest.relative_to(options.models_root).as_posix(),
        worker=options.worker_name,
        ttl_s=options.model_lock_ttl_s,
    )
    _acquire(lock, dest.name, options, tracker)
    try:
        ready = read_manifest(dest, group)  # the worker we waited for may have finished it
        if ready is not None:
            return ready, "reused"
        (dest / MANIFEST).unlink(missing_ok=True)  # a crash from here on leaves no manifest
        staging = options.models_root / ".staging" / dest.relative_to(options.models_root)
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        names: list[str] = []
        hows: list[str] = []
        try:
            for source in group:
                tracker.check()
                if isinstance(source, Built):
                    names += _build(source, staging, dest, tracker)
                    hows.append("built")
                else:
                    got, src_how = fetch(
                        source,
                        staging=staging,
                        dest=dest,
                        options=options,
                        token=token,
                        tracker=tracker,
                    )
                    names += got
                    hows.append(src_how)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        write_manifest(dest, group, names, max(hows, key=_RANK.__getitem__))
        result = read_manifest(dest, group)
        assert result is not None, f"manifest of {dest} does not verify right after writing it"
        return result, max(hows, key=_RANK.__getitem__)
    finally:
        lock.release()


def _acquire(lock: FileLease, what: str, options: WeightsOptions, tracker: Tracker) -> None:
    """Take the folder's lock, waiting (bounded, with a status line) while another holds it."""
    deadline = time.monotonic() + options.model_wait_s
    while True:
        tracker.check()
        try:
            lock.acquire()
        except LeaseHeld as held:
            if time.monotonic() > deadline:
                raise StageFailed(
                    f"gave up waiting for worker {held.owner!r}, which has been preparing the "
                    f"model folder {what!r} for over {options.model_wait_s:.0f}s; retry the job"
                ) from None
            tracker.say(f"waiting for worker {held.owner} to finish downloading {what}")
            tracker.pause(min(1.0, options.model_lock_ttl_s / 4))
            continue
        lock.start_renewing()  # a long download keeps its lock; a dead process loses it
        return


def _build(source: Built, staging: Path, dest: Path, tracker: Tracker) -> list[str]:
    tracker.say(f"building {source.dest}")
    source.build(staging)
    names = sorted(
        p.relative_to(staging).as_posix()
        for p in staging.rglob("*")
        if p.is_file() and ".cache" not in p.relative_to(staging).parts
    )
    place(staging, dest, ((n, n) for n in names))
    return names
