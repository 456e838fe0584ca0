"""`serve`: run a local RunPod-compatible endpoint (localpod) in the foreground.

A development tool: the real `runpod` worker loop runs the handler in subprocesses, and the
endpoint answers /run, /runsync, /status, /cancel, /retry and /health as RunPod does.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from localpod import LocalPod


def serve(  # noqa: PLR0917 - typer maps each parameter to an option
    handler: Annotated[Path, typer.Option(help="The worker's handler file")] = Path("handler.py"),
    host: Annotated[str, typer.Option(help="Interface to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on")] = 8000,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes to keep running")] = 1,
    key: Annotated[
        str | None, typer.Option(help="Accept only this API key (default: any non-empty key)")
    ] = None,
    log_dir: Annotated[
        Path | None, typer.Option(help="Where worker logs go (default: a temp folder)")
    ] = None,
) -> None:
    """Run a local RunPod-compatible endpoint until Ctrl-C (for development, not production)."""
    console = Console()
    if not handler.is_file():
        console.print(f"[red]error:[/] {handler}: no such handler file")
        raise typer.Exit(2)
    pod = LocalPod(handler, host=host, port=port, workers=workers, api_key=key, log_dir=log_dir)
    pod.start()
    try:
        shown_key = key or "ANY_KEY"
        console.print(f"[bold]localpod[/] endpoint at [cyan]{pod.url}[/]", highlight=False)
        console.print(f"worker logs: {pod.log_dir}", highlight=False)
        console.print(
            f"SDK clients: runpod.endpoint_url_base = {pod.base_url!r}; "
            f"runpod.Endpoint({pod.endpoint_id!r})",
            highlight=False,
            soft_wrap=True,
        )
        console.print("example:", highlight=False)
        console.print(
            f"  curl -X POST {pod.url}/run -H 'Content-Type: application/json' "
            f"-H 'Authorization: Bearer {shown_key}' -d '{{\"input\": {{}}}}'\n"
            f"  curl {pod.url}/status/JOB_ID -H 'Authorization: Bearer {shown_key}'",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )
        console.print("Ctrl-C stops the endpoint and its workers.")
        while True:
            time.sleep(1)
    except KeyboardInterrupt:
        console.print("stopping...")
    finally:
        pod.stop()
