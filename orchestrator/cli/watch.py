"""`dpserve watch REPO_ID`: follow a job's UPDATES/ on the Hub with a live progress bar, like the
seed README's monitoring script.

`watch_updates` lists the folder, downloads the new files in update order, hands each to
`on_update`, and after each poll decides on the newest update: it returns it when its status is
final (COMPLETE, ERROR, CANCELLED), so a final status that a later update supersedes (an ERROR
followed by RESUMED, in one poll or while the mirror had not yet deleted it) never ends the
watch. INTERRUPTED is not final (the job resumes on its next delivery); a `timeout` bounds the
wait and raises `WatchTimeout` with the last update seen. A file listed but gone when fetched
(a superseded one the mirror just deleted) is skipped.

Exit codes: 0 on COMPLETE (prints the download URL), 1 on ERROR (prints the error), 2 on
CANCELLED (the file's `type`; its `status` reads COMPLETE with the latest saved LoRA's URL, which
is printed, or ERROR with why none was published) or when `--timeout` passes without a final
update (an INTERRUPTED job, say).
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from huggingface_hub import HfApi
from huggingface_hub.errors import EntryNotFoundError
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn

from events.projections.updates import UPDATES_DIR, update_sort_key
from events.vocabulary import ENDED
from orchestrator.errors import WatchTimeout

# The job will not move again by itself: COMPLETE, ERROR, CANCELLED (INTERRUPTED resumes).
FINAL_STATUSES = frozenset(s.value for s in ENDED)
Update = dict[str, Any]


def watch_updates(
    repo_id: str,
    token: str | None = None,
    endpoint: str | None = None,
    on_update: Callable[[Update], None] | None = None,
    *,
    interval: float = 30.0,
    timeout: float | None = None,
    repo_type: str = "model",
    api: HfApi | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> Update:
    """Poll until the newest update is final; return it. Network errors are retried next poll."""
    api = api or HfApi(endpoint=endpoint, token=token)
    seen: set[str] = set()
    newest: tuple[tuple[int, str], Update] | None = None
    deadline = None if timeout is None else clock() + timeout
    with tempfile.TemporaryDirectory(prefix="dps-watch-") as cache:
        while True:
            for path in _new_update_files(api, repo_id, repo_type, seen):
                try:
                    local = api.hf_hub_download(
                        repo_id, path, repo_type=repo_type, cache_dir=Path(cache)
                    )
                except EntryNotFoundError:  # superseded and deleted since the listing
                    seen.add(path)
                    continue
                except Exception:  # the Hub hiccupped: this file and the rest next poll
                    break
                seen.add(path)
                update: Update = json.loads(Path(local).read_text("utf-8"))
                if on_update is not None:
                    on_update(update)
                key = update_sort_key(path)
                if newest is None or key >= newest[0]:
                    newest = (key, update)
            if newest is not None and newest[1].get("status") in FINAL_STATUSES:
                return newest[1]
            if deadline is not None and clock() + interval > deadline:
                raise WatchTimeout(None if newest is None else newest[1])
            sleep(interval)


def _new_update_files(api: HfApi, repo_id: str, repo_type: str, seen: set[str]) -> list[str]:
    try:
        files = api.list_repo_files(repo_id, repo_type=repo_type)
    except Exception:  # the repo may not exist yet, or the Hub hiccupped: try again next poll
        return []
    fresh = [
        f
        for f in files
        if f.startswith(f"{UPDATES_DIR}/") and f.endswith(".json") and f not in seen
    ]
    return sorted(fresh, key=update_sort_key)


def download_url(update: Update) -> str | None:
    data = update.get("data") or {}
    url = data.get("direct_download_url") or data.get("download_url")
    return str(url) if url else None


class LiveView:
    """A rich progress bar fed by updates: status, step, epoch, loss, ETA."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.progress = Progress(
            TextColumn("[bold]{task.fields[status]:<17}"),
            BarColumn(),
            TextColumn("{task.fields[step]}"),
            TextColumn("{task.fields[epoch]}"),
            TextColumn("{task.fields[loss]}"),
            TextColumn("{task.fields[eta]}"),
            console=console,
            transient=False,
        )
        self.task: TaskID = self.progress.add_task(
            "job", total=None, status="waiting", step="", epoch="", loss="", eta=""
        )

    def __enter__(self) -> LiveView:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def __call__(self, update: Update) -> None:
        status = str(update.get("status", "?"))
        kind = str(update.get("type", status))
        data = update.get("data") or {}
        message = data.get("message", "")
        if kind != "PROGRESS":  # one line per event; progress only moves the bar
            label = status if kind == status else f"{status}/{kind}"
            self.console.print(f"[{label}] {message}", markup=False, highlight=False)
        fields: dict[str, Any] = {"status": status}
        step, total = data.get("step"), data.get("total_steps")
        if isinstance(step, int | float):
            fields["step"] = f"step {step}" + (f"/{total}" if total else "")
            self.progress.update(self.task, completed=float(step))
        if isinstance(total, int | float) and total > 0:
            self.progress.update(self.task, total=float(total))
        elif isinstance(data.get("percent"), int | float):
            self.progress.update(self.task, total=100.0, completed=float(data["percent"]))
        if data.get("epoch") is not None:
            fields["epoch"] = f"epoch {data['epoch']}"
        if isinstance(data.get("loss"), int | float):
            fields["loss"] = f"loss {data['loss']:.4f}"
        if isinstance(data.get("eta_seconds"), int | float):
            fields["eta"] = f"eta {_duration(float(data['eta_seconds']))}"
        if status in FINAL_STATUSES or kind == "TRAINING_COMPLETE":
            fields["eta"] = ""
        self.progress.update(self.task, **fields)


def _duration(seconds: float) -> str:
    whole = max(0, int(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


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
    if final.get("type") == "CANCELLED":
        url = download_url(final)
        said = f"latest saved LoRA: {url}" if url else data.get("error") or ""
        console.print(f"Job CANCELLED: {said}", markup=False, soft_wrap=True)
        raise typer.Exit(2)
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
