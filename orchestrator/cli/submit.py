"""`submit`: send a request to a RunPod endpoint (or a local one) and optionally follow it.

Three kinds of endpoint: RunPod (`--endpoint ID`), localpod (`dpserve serve`, the default URL)
and the SDK's own dev server (`python handler.py --rp_serve_api`, `--base-url
http://127.0.0.1:8000`: no `/v2/<id>` prefix). The dev server serves `/status` by POST only and
runs the job inside that call (`runpod/serverless/modules/rp_fastapi.py`): a GET answered 405
switches the poll to one POST that waits for the result, without a read timeout.

Standard library HTTP on purpose: the CLI must not pull a client library into the base install.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from orchestrator.errors import SubmitError

LOCAL_URL = "http://127.0.0.1:8000/v2/local"
RUNPOD_URL = "https://api.runpod.ai/v2"
# RunPod's own terminal job statuses (its API's vocabulary, not the job log's).
FINAL = frozenset({"COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"})
CALL_TIMEOUT_S = 30.0


class EndpointHTTPError(SubmitError):
    """The endpoint answered an HTTP error; `code` is its status."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def call_endpoint(
    method: str, url: str, key: str, body: Any = None, *, hold: bool = False
) -> dict[str, Any]:
    """One JSON call, CALL_TIMEOUT_S at most; with `hold`, as long as the answer takes (the dev
    server's POST /status holds the connection for the whole job)."""
    timeout = None if hold else CALL_TIMEOUT_S
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(  # noqa: S310 - the user's endpoint URL, on purpose
        url,
        data=data,
        method=method,
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            answer = json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")[:500]
        raise EndpointHTTPError(f"{method} {url}: HTTP {exc.code} {detail}", exc.code) from None
    except (urllib.error.URLError, OSError, json.JSONDecodeError) as exc:
        raise SubmitError(f"{method} {url}: {exc}") from None
    if not isinstance(answer, dict):
        raise SubmitError(f"{method} {url}: unexpected answer {answer!r}")
    return answer


def _describe(progress: Any) -> tuple[float | None, str]:
    """(percent, one-line text) from a progress payload; tolerant of any shape."""
    if not isinstance(progress, dict):
        return None, "" if progress is None else str(progress)[:80]
    percent = progress.get("percent")
    parts = [str(progress[k]) for k in ("status", "stage") if progress.get(k)]
    if progress.get("step") is not None:
        total = progress.get("total_steps")
        parts.append(f"step {progress['step']}" + (f"/{total}" if total else ""))
    if progress.get("epoch") is not None:
        parts.append(f"epoch {progress['epoch']}")
    if isinstance(progress.get("loss"), int | float):
        parts.append(f"loss {progress['loss']:.4g}")
    if isinstance(progress.get("eta_seconds"), int | float):
        parts.append(f"eta {int(progress['eta_seconds'])}s")
    if progress.get("message"):
        parts.append(str(progress["message"]))
    return (float(percent) if isinstance(percent, int | float) else None), " · ".join(parts)


def follow_job(
    base: str, key: str, job_id: str, interval: float, console: Console
) -> dict[str, Any]:
    columns = (
        TextColumn("{task.fields[status]:<11}"),
        BarColumn(),
        TextColumn("{task.percentage:>5.1f}%"),
        TimeElapsedColumn(),
        TextColumn("{task.description}"),
    )
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task("", total=100, status="IN_QUEUE")
        url = f"{base}/status/{job_id}"
        method = "GET"
        while True:
            try:
                view = call_endpoint(method, url, key, hold=method == "POST")
            except EndpointHTTPError as exc:
                if exc.code != 405 or method != "GET":
                    raise
                # The SDK's dev server: POST only, and the job runs inside that call.
                method = "POST"
                note = "SDK dev server: the job runs inside POST /status, no progress until it ends"
                bar.update(task, status="IN_PROGRESS", description=note)
                continue
            status = str(view.get("status"))
            if status in FINAL:
                bar.update(task, status=status, completed=100 if status == "COMPLETED" else None)
                return view
            percent, text = _describe(view.get("output") if status == "IN_PROGRESS" else None)
            bar.update(task, status=status, description=text, completed=percent)
            time.sleep(interval)


def submit(  # noqa: PLR0917 - typer maps each parameter to an argument or option
    request_file: Annotated[Path, typer.Argument(help="A request JSON: {'input': {...}} or bare")],
    endpoint: Annotated[
        str | None,
        typer.Option(help="RunPod endpoint id (https://api.runpod.ai/v2/ID); default: local"),
    ] = None,
    key: Annotated[
        str | None, typer.Option(envvar="RUNPOD_API_KEY", help="API key (env RUNPOD_API_KEY)")
    ] = None,
    wait: Annotated[
        bool, typer.Option(help="Follow the job to its end with a progress bar")
    ] = False,
    base_url: Annotated[
        str | None,
        typer.Option(
            help=f"Full endpoint URL (default {LOCAL_URL}); for the SDK's dev server "
            "(python handler.py --rp_serve_api) its root, e.g. http://127.0.0.1:8000"
        ),
    ] = None,
    interval: Annotated[float, typer.Option(help="Seconds between status polls")] = 2.0,
) -> None:
    """Submit a request with /run; with --wait, poll /status until it ends and print the result.

    Works with RunPod (--endpoint), localpod (dpserve serve, the default) and the SDK's dev
    server (--base-url http://127.0.0.1:8000), which answers /status only by POST and runs the
    job inside it: --wait then waits in that one call, without progress.
    Exit code 0 when the job COMPLETED (or was queued, without --wait), 1 otherwise.
    """
    err = Console(stderr=True)
    try:
        raw = json.loads(request_file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        err.print(f"[red]error:[/] {request_file}: {exc}")
        raise typer.Exit(2) from None
    body = raw if isinstance(raw, dict) and "input" in raw else {"input": raw}
    if base_url:
        base = base_url.rstrip("/")
    elif endpoint:
        base = f"{RUNPOD_URL}/{endpoint}"
    else:
        base = LOCAL_URL
    if not key:
        if endpoint and not base_url:
            err.print("[red]error:[/] RunPod needs an API key: --key or RUNPOD_API_KEY")
            raise typer.Exit(2)
        key = "local"  # a local endpoint accepts any non-empty key by default
    try:
        queued = call_endpoint("POST", f"{base}/run", key, body)
        job_id = str(queued.get("id"))
        err.print(f"submitted {job_id} to {base}", highlight=False)
        if not wait:
            typer.echo(json.dumps(queued, indent=2))
            return
        final = follow_job(base, key, job_id, interval, err)
    except SubmitError as exc:
        err.print(f"[red]error:[/] {exc}", highlight=False)
        raise typer.Exit(1) from None
    typer.echo(json.dumps(final, indent=2))
    if final.get("status") != "COMPLETED":
        raise typer.Exit(1)
