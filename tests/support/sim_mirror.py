"""A HubMirror against the fake Hub, driven by a simulated clock (no background thread), and
the UPDATES files it left there: what the mirror, budget and watch tests share."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.mirror_bench import SimClock
from events.projections.hub import HubMirror
from tests.support.fakehub import FakeHub


def sim_mirror(
    hub: FakeHub,
    repo: str,
    job_dir: Path,
    clock: SimClock,
    *,
    token: str,
    job_id: str = "job-1",
    **kw: Any,
) -> HubMirror:
    return HubMirror(
        repo_id=repo,
        job_id=job_id,
        job_dir=job_dir,
        endpoint=hub.url,
        token=token,
        clock=clock,
        sleep=clock.sleep,
        background=False,
        **kw,
    )


def updates_on_hub(hub: FakeHub, repo: str) -> dict[str, dict[str, Any]]:
    """The repo's UPDATES files, parsed, by path."""
    return {
        path: json.loads(data)
        for path, data in hub.files(repo).items()
        if path.startswith("UPDATES/")
    }
