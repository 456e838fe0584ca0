"""`dpserve watch REPO_ID`: follow a job's UPDATES/ with a live progress bar.

Exit codes: 0 on COMPLETE (prints the download URL), 1 on ERROR (prints the error), 2 on
CANCELLED or when `--timeout` passes without a final update (an INTERRUPTED job, say).
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from orchestrator.watch import LiveView, WatchTimeout, download_url, watch_updates


def watch(  # noqa: PLR0917 - typer maps each parameter to an argument or option
    repo_id: Annotated[str, typer.Argument(help="The Hub repo the job writes UPDATES/ to.")],
    token: Annotated[
        str | None,
        typer.Option("--token", "-t", envvar="HF_TOKEN", help="Hub token (private repos)."),
    ] = None,
    endpoint: Annotated[
        str | None, typer.Option("--endpoint", help="Hub endpoint (default huggingface.co).")
    ] = None,
    interval: Annotated[float, typer.Option("--interval", help="Seconds between polls.")] = 30.0,
    timeout: Annotated[
        float | None, typer.Option("--timeout", help="Give up after this many seconds.")
    ] = None,
    repo_type: Annotated[str, typer.Option("--repo-type")] = "model",
) -> None:
    """Follow a training job's progress in its Hub repo until it finishes."""
    console = Console(highlight=False)
    try:
        with LiveView(console) as view:
            final = watch_updates(
                repo_id,
                token,
                endpoint,
                view,
                interval=interval,
                timeout=timeout,
                repo_type=repo_type,
            )
    except WatchTimeout as exc:
        console.print(str(exc), markup=False)
        raise typer.Exit(2) from None
    data = final.get("data") or {}
    status = final.get("status")
    if status == "COMPLETE":
        url = download_url(final)
        console.print(f"Download your LoRA: {url}", markup=False, soft_wrap=True)
        raise typer.Exit(0)
    if status == "ERROR":
        error = data.get("error") or data.get("message") or "Training failed"
        console.print(f"Training failed: {error}", markup=False, soft_wrap=True)
        raise typer.Exit(1)
    console.print(f"Job {status}: {data.get('message', '')}", markup=False, soft_wrap=True)
    raise typer.Exit(2)
