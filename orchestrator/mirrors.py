"""Where a job's `UPDATES/` go: the output repo for Hub output, the job folder for local output.

The mirror never fails a job: when the repo cannot be named (a token that cannot `whoami`),
the job runs without one and publishing says what is wrong.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import structlog

from orchestrator.plan import JobPlan
from orchestrator.settings import Settings

if TYPE_CHECKING:  # huggingface_hub: loaded per job, only when the mirror is made
    from events.projections.base import MirrorSettings
    from events.projections.hub import HubMirror
    from events.projections.local import LocalMirror

log = structlog.get_logger(__name__)


def _hub_repo_id(plan: JobPlan, settings: Settings) -> str | None:
    hub = plan.publish.destination.huggingface
    if plan.publish.destination.method != "huggingface" or hub is None:
        return None
    if hub.repo_id:
        return hub.repo_id
    from huggingface_hub import HfApi  # noqa: PLC0415 - only Hub output needs it

    from stages.publish.hub import default_repo_id  # noqa: PLC0415

    user = HfApi(endpoint=settings.hub_endpoint, token=hub.token.get_secret_value()).whoami()
    return default_repo_id(str(user["name"]), plan.entry.model_type, plan.job_id)


def make_mirror(
    plan: JobPlan, settings: Settings, mirror_settings: MirrorSettings | None = None
) -> HubMirror | LocalMirror | None:
    """UPDATES/ in the output repo for Hub output, in the job folder for local output."""
    from events.projections.hub import HubMirror  # noqa: PLC0415
    from events.projections.local import LocalMirror  # noqa: PLC0415

    job_dir = plan.job_dir
    if plan.publish.destination.method == "local":
        return LocalMirror(job_dir, job_id=plan.job_id)
    try:
        repo_id = _hub_repo_id(plan, settings)
    except Exception as exc:  # the mirror never fails a job; publishing will say what is wrong
        log.warning("no UPDATES mirror", job_id=plan.job_id, error=type(exc).__name__)
        return None
    hub = plan.publish.destination.huggingface
    if repo_id is None or hub is None:
        return None
    return HubMirror(
        repo_id=repo_id,
        job_id=plan.job_id,
        job_dir=job_dir,
        token=hub.token.get_secret_value(),
        endpoint=settings.hub_endpoint,
        settings=mirror_settings or settings.mirror,
        private=hub.private,
    )
