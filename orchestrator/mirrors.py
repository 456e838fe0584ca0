"""Where a job's `UPDATES/` go: the output repo for Hub output, the job folder for local output.

The mirror never fails or delays a job: making one touches no network. An auto-named repo
(no `repo_id`) is named by `whoami` in the mirror's own thread, retried there like its other
Hub calls; a token the Hub refuses stops the mirror, and publishing says what is wrong.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from orchestrator.plan import JobPlan
from orchestrator.settings import Settings

if TYPE_CHECKING:  # huggingface_hub: loaded per job, only when the mirror is made
    from events.projections.base import MirrorSettings
    from events.projections.hub import HubMirror
    from events.projections.local import LocalMirror


def _namer(plan: JobPlan, settings: Settings, token: str) -> Callable[[], str]:
    """The call that names an auto-named repo (`<user>/<model>-lora-<id>`), made later."""

    def name() -> str:
        from huggingface_hub import HfApi  # noqa: PLC0415 - only Hub output needs it

        from stages.publish.hub import default_repo_id  # noqa: PLC0415

        user = HfApi(endpoint=settings.hub_endpoint, token=token).whoami()
        return default_repo_id(str(user["name"]), plan.entry.model_type, plan.job_id)

    return name


def make_mirror(
    plan: JobPlan, settings: Settings, mirror_settings: MirrorSettings | None = None
) -> HubMirror | LocalMirror | None:
    """UPDATES/ in the output repo for Hub output, in the job folder for local output."""
    from events.projections.hub import HubMirror  # noqa: PLC0415
    from events.projections.local import LocalMirror  # noqa: PLC0415

    destination = plan.publish.destination
    if destination.method == "local":
        return LocalMirror(plan.job_dir, job_id=plan.job_id)
    hub = destination.huggingface
    if destination.method != "huggingface" or hub is None:
        return None
    token = hub.token.get_secret_value()
    return HubMirror(
        repo_id=hub.repo_id or None,
        name_repo=None if hub.repo_id else _namer(plan, settings, token),
        job_id=plan.job_id,
        job_dir=plan.job_dir,
        token=token,
        endpoint=settings.hub_endpoint,
        settings=mirror_settings or settings.mirror,
        private=hub.private,
    )
