"""`serve`: run a local RunPod-compatible endpoint (localpod) in the foreground.

A development tool: the real `runpod` worker loop runs the handler in subprocesses, and the
endpoint answers /run, /runsync, /status, /cancel, /retry and /health as RunPod does.
Ctrl-C, SIGTERM (a supervisor, `timeout`, a container stop) and SIGHUP stop it and its workers.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer
from rich.console import Console

from localpod import LocalPod

_Handler = Callable[[int, FrameType | None], object] | int | None


@contextmanager
def _stop_on_signals() -> Iterator[threading.Event]:
    """An event set by SIGINT, SIGTERM or SIGHUP, for the main thread to wait on.

    The handlers only set it: an exception raised wherever a signal lands (KeyboardInterrupt)
    could cut start() or stop() short and leave workers behind. The workers run in sessions of
    their own, so a signal to this process reaches them only through stop().
    """
    stop = threading.Event()
    previous: dict[signal.Signals, _Handler] = {}
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        if sig == signal.SIGHUP and signal.getsignal(sig) == signal.SIG_IGN:
            continue  # nohup asked to outlive the terminal
        previous[sig] = signal.signal(sig, lambda _signum, _frame: stop.set())
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


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
    with _stop_on_signals() as stop:
        pod.start()
        try:
            _announce(console, pod, key)
            while not stop.wait(1):
                pass
            console.print("stopping...")
        finally:
            pod.stop()


def _announce(console: Console, pod: LocalPod, key: str | None) -> None:
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
    console.print("Ctrl-C or SIGTERM stops the endpoint and its workers.")
