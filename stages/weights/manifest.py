"""A model folder's completion manifest: `<dest>/.complete.json`, the sources' fingerprint and
every file with its size, checked against the disk. Written last, so a crash leaves none."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from events.atomic import write_atomic
from stages.weights.sources import Built, HubFiles, Source

MANIFEST = ".complete.json"


def _fingerprint(sources: Iterable[Source]) -> list[str]:
    return [
        f"built:{s.name}" if isinstance(s, Built) else json.dumps(_spec_dict(s), sort_keys=True)
        for s in sources
    ]


def _spec_dict(spec: HubFiles) -> dict[str, Any]:
    spec_dict: dict[str, Any] = {
        "repo_id": spec.repo_id,
        "revision": spec.revision,
        "files": spec.files,
        "allow": spec.allow_patterns,
        "ignore": spec.ignore_patterns,
        "flatten": spec.flatten,
    }
    if spec.hf_cache:  # only then: the folders already on volumes keep their fingerprint
        spec_dict["hf_cache"] = True
    return spec_dict


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


def write_manifest(dest: Path, sources: Sequence[Source], names: Iterable[str], how: str) -> None:
    files = {n: (dest / n).stat().st_size for n in sorted(set(names))}
    payload = {"sources": _fingerprint(sources), "files": files, "source": how, "at": time.time()}
    write_atomic(dest / MANIFEST, json.dumps(payload, indent=1))
