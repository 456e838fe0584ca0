"""`output.method: local`: copy the results to a folder (the demo's default destination), or,
without `output.local.path`, leave them in the job's folder (`keep_in_job`).

The files land in `<folder>/<job_id>/` all at once: they are copied into a hidden sibling
folder, fsynced, and renamed into place, so a reader never sees half a LoRA. A second delivery
replaces the earlier copy the same way. URLs are `file://` URIs.

`target_problem` is the rule for where results may go, checked when the request is validated
and again here: never inside (or above) the service's working folder, only under the folders an
operator allows, and somewhere the worker can write. And whatever the folder, a copy that would
replace a folder holding a job's event log is refused: publishing never deletes a job.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import structlog

from events.store import EVENTS_FILE
from stages.publish.common import Published, PublishInputs, collect_artifacts, fail

log = structlog.get_logger(__name__)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def target_problem(
    folder: Path, job_id: str, *, root: Path, allowed: Sequence[Path] = ()
) -> str | None:
    """Why the results of `job_id` may not be copied to `<folder>/<job_id>`, or None."""
    try:
        return _target_problem(folder, job_id, root=root, allowed=allowed)
    except (OSError, RuntimeError, ValueError) as exc:  # NUL, ~nobody, a loop, a long name
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        return f"{_shown(folder)} is not a usable folder path ({why}); choose another folder"


def _shown(folder: Path) -> str:
    """The path as the request spelt it, safe to show: control characters escaped, cut short."""
    text = str(folder).encode("unicode_escape").decode("ascii")
    return text if len(text) <= 120 else text[:117] + "..."


def _target_problem(
    folder: Path, job_id: str, *, root: Path, allowed: Sequence[Path]
) -> str | None:
    shown = _shown(folder)
    resolved = folder.expanduser().resolve()  # `..` and symlinks, as the copy would follow them
    target, service = resolved / job_id, root.resolve()
    if target == service or service in target.parents or target in service.parents:
        return (
            f"{shown} is inside the service's working folder ({root}), where the jobs live; "
            "choose a folder outside it"
        )
    roots = [a.expanduser().resolve() for a in allowed]
    if roots and not any(target.is_relative_to(r) for r in roots):
        listed = ", ".join(str(r) for r in roots)
        return f"{shown} is outside the folders this worker publishes to ({listed})"
    existing = resolved
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return f"{shown} is not a folder"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{shown} cannot be written by the worker"
    return None


def _holds_a_job(folder: Path) -> bool:
    return folder.is_dir() and any(folder.rglob(EVENTS_FILE))


def keep_in_job(inputs: PublishInputs) -> Published:
    """`output.local` without a path: nothing is copied; the LoRA stays where training saved it,
    in the job's folder (on the volume when one is mounted). Works on any machine, which is
    what RunPod's local test mode (`test_input.json`) needs."""
    lora = inputs.lora_path
    if not lora.is_file():
        raise fail(inputs, f"the trained LoRA {lora} is missing; nothing to publish")
    folder = lora.parent
    files = sorted(p.name for p in folder.iterdir() if p.is_file())
    log.info("results kept in the job's folder", folder=str(folder), files=len(files))
    return Published(
        method="local",
        download_url=lora.as_uri(),
        safetensors_url=lora.as_uri(),
        repo_url=folder.as_uri(),
        files=files,
        note=f"Your LoRA is in the job's folder: {lora}",
        details={"folder": str(folder), "in_place": True},
    )


def publish_local(
    inputs: PublishInputs, folder: Path, *, allowed: Sequence[Path] = ()
) -> Published:
    root = inputs.job_dir.parents[1]  # <root>/jobs/<job_id>
    problem = target_problem(folder, inputs.job_id, root=root, allowed=allowed)
    if problem is not None:
        raise fail(inputs, f"output.local.path: {problem}")
    folder = folder.expanduser().resolve()
    target = folder / inputs.job_id
    if _holds_a_job(target):  # whatever the rule said: never replace a job's own folder
        raise fail(inputs, f"output.local.path: {target} holds a job's event log; not replaced")
    artifacts = collect_artifacts(inputs)
    staging: Path | None = None
    try:
        folder.mkdir(parents=True, exist_ok=True)
        # A worker killed mid-copy leaves its hidden staging (or old) folder; this job's lease
        # makes us its only writer, so what is there now is ours to clear.
        ours = re.compile(rf"\.{re.escape(inputs.job_id)}\.(?:old\.)?[a-z0-9_]{{8}}")
        for leftover in folder.iterdir():
            if ours.fullmatch(leftover.name) and leftover.is_dir():
                shutil.rmtree(leftover, ignore_errors=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{inputs.job_id}.", dir=folder))
        for art in artifacts:
            dest = staging / art.name
            dest.parent.mkdir(parents=True, exist_ok=True)
            if art.data is not None:
                dest.write_bytes(art.data)
            else:
                assert art.source is not None
                shutil.copyfile(art.source, dest)  # copy_file_range/sendfile where available
            _fsync(dest)
        staging.chmod(0o755)  # mkdtemp makes it 0700
        old: Path | None = None
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{inputs.job_id}.old.", dir=folder))
            os.replace(target, old / "previous")
        os.replace(staging, target)
        _fsync(folder)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except OSError as err:
        if staging is not None and staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
        raise fail(inputs, f"copying the results to {target} failed: {err}") from None
    lora = target / inputs.lora_name
    log.info("published to a local folder", folder=str(target), files=len(artifacts))
    return Published(
        method="local",
        download_url=lora.as_uri(),
        safetensors_url=lora.as_uri(),
        repo_url=target.as_uri(),
        files=[a.name for a in artifacts],
        note=f"Your LoRA was copied to {target}",
        details={"folder": str(target)},
    )
