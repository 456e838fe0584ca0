"""`dpserve`: the command line for validating requests and reading job logs."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import tomli_w
import typer
from rich import box
from rich.console import Console
from rich.table import Table

from events.audit import AuditReport, audit, summarize
from events.errors import CorruptLog
from events.model import Event
from events.redact import MASK, is_sensitive_key
from events.store import EVENTS_FILE, parse_blob
from orchestrator.catalogue import ALL_MODEL_TYPES, Download, ModelEntry, get_model
from orchestrator.cli_dataset import app as dataset_app
from orchestrator.cli_serve import serve
from orchestrator.cli_submit import submit
from orchestrator.cli_watch import watch
from orchestrator.logs import configure_logging
from orchestrator.request import RequestError, TrainingRequest, parse_request
from stages.errors import ConfigError
from stages.training.config import CUT_BY_SERVICE, JobPaths, render

app = typer.Typer(
    name="dpserve",
    help="diffusion-pipe-serverless: LoRA training as an API. Local tools.",
    no_args_is_help=True,
    add_completion=False,
)
# Piped output (CI logs, files) gets room for the timeline instead of 80 columns.
out = Console(width=None if sys.stdout.isatty() else 140)
err = Console(stderr=True, soft_wrap=True)


@app.callback()
def _main() -> None:
    """diffusion-pipe-serverless command line."""
    configure_logging()


@app.command()
def validate(
    request_file: Annotated[Path, typer.Argument(help="A request JSON: {'input': {...}} or bare")],
) -> None:
    """Check a training request; print it normalised (secrets masked) or list every problem."""
    request = _read_request(request_file)
    out.print_json(json.dumps(request.masked()))


def _events_file(path: Path) -> Path:
    return path / EVENTS_FILE if path.is_dir() else path


def timeline_table(report: AuditReport, events: list[Event]) -> Table:
    started = f"{events[0].timestamp:%Y-%m-%d %H:%M:%S} UTC" if events else "no events"
    table = Table(
        title=f"job {report.view.job_id or '?'} (started {started})",
        title_justify="left",
        box=box.SIMPLE_HEAD,
    )
    for column in ("seq", "time", "try", "event", "status"):
        table.add_column(column, no_wrap=True)
    table.add_column("details", overflow="fold", min_width=20)
    previous = ""
    for e in events:
        # A fact does not move the state: show the status only when it changes.
        status = e.status if e.status != previous else "·"
        previous = e.status
        table.add_row(
            str(e.seq), f"{e.timestamp:%H:%M:%S}", str(e.attempt), e.type, status, summarize(e)
        )
    return table


@app.command()
def events(
    path: Annotated[Path, typer.Argument(help="A job folder or an events.jsonl file")],
    verify: Annotated[
        bool, typer.Option("--verify", help="Also check every transition; exit 1 on problems")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output")] = False,
) -> None:
    """Show a job's timeline from its event log (the hash chain is always checked)."""
    file = _events_file(path)
    try:
        loaded = parse_blob(file.read_bytes(), str(file))
    except FileNotFoundError:
        err.print(f"[red]error:[/] {file}: no such file")
        raise typer.Exit(2) from None
    except CorruptLog as exc:
        err.print(f"[red]corrupt log:[/] {exc}", highlight=False)
        raise typer.Exit(2) from None
    report = audit(loaded.events)
    if as_json:
        payload: dict[str, Any] = {
            "job_id": report.view.job_id,
            "status": report.view.status.value,
            "attempt": report.view.attempt,
            "events": [e.as_stored() for e in loaded.events],
            "torn_tail_dropped": loaded.torn_tail,
            "audit": {"ok": report.ok, "problems": report.problems} if verify else None,
        }
        sys.stdout.write(json.dumps(payload, indent=2) + "\n")
    else:
        out.print(timeline_table(report, loaded.events))
        view = report.view
        out.print(
            f"status [bold]{view.status.value}[/]  attempt {view.attempt}  "
            f"{view.seq} events  head {view.head_hash[:12]}"
        )
        if loaded.torn_tail:
            out.print("[yellow]note:[/] a torn last line (a crash mid-write) was ignored")
        if verify:
            if report.ok:
                out.print("[green]verified:[/] seq, hash chain and transitions are consistent")
            else:
                for problem in report.problems:
                    out.print(f"[red]problem:[/] {problem}", highlight=False)
    if verify and not report.ok:
        raise typer.Exit(1)


# --- the catalogue and dry-run planning ---------------------------------------------------------


def _download_text(download: Download) -> str:
    if download.files:
        what = ", ".join(download.files)
    elif download.allow_patterns:
        what = "files matching " + ", ".join(download.allow_patterns)
    else:
        what = "whole repo"
    if download.ignore_patterns:
        what += " except " + ", ".join(download.ignore_patterns)
    return f"{download.repo_id} ({what})"


def _sources(entry: ModelEntry) -> str:
    if not entry.downloads:
        return f"built locally by {entry.built_by or '?'}"
    return "\n".join(d.repo_id for d in entry.downloads)


@app.command()
def models() -> None:
    """List the models a request can train, with their defaults and weights."""
    table = Table(title="model catalogue", title_justify="left", box=box.SIMPLE_HEAD)
    for column in ("model_type", "name", "dp type", "media", "gated", "LoRA file", "lr", "epochs"):
        # Short columns never wrap; the long ones fold so the repos stay readable at 140 columns.
        short = column in ("model_type", "gated", "lr", "epochs")
        table.add_column(column, no_wrap=short, overflow="ellipsis" if short else "fold")
    # Download sizes are not recorded (they change with the repos); the repos are shown instead.
    table.add_column("weights from", overflow="fold", ratio=3)
    for model_type in ALL_MODEL_TYPES:
        entry = get_model(model_type)
        table.add_row(
            entry.model_type,
            entry.display_name,
            entry.diffusion_pipe_type,
            "+".join(sorted(entry.media)),
            "yes" if entry.gated else "no",
            entry.lora_file,
            f"{entry.defaults['learning_rate']:g}",
            str(entry.defaults["epochs"]),
            _sources(entry),
        )
    out.print(table)


def _read_request(request_file: Path) -> TrainingRequest:
    """The parsed request; exit 2 on an unreadable file, 1 on an invalid request."""
    try:
        raw = json.loads(request_file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        err.print(f"[red]error:[/] {request_file}: no such file")
        raise typer.Exit(2) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        err.print(f"[red]error:[/] {request_file}: not valid JSON ({exc})")
        raise typer.Exit(2) from None
    if not isinstance(raw, dict):
        err.print(f"[red]error:[/] {request_file}: the request must be a JSON object")
        raise typer.Exit(2)
    try:
        return parse_request(raw)
    except RequestError as exc:
        # markup off: the message quotes user text, which must not be read as rich markup.
        err.print(f"{request_file}: {exc}", style="red", highlight=False, markup=False)
        raise typer.Exit(1) from None


def _masked(value: Any) -> Any:
    # Passthrough credentials (monitoring.wandb_api_key) would otherwise be printed.
    if isinstance(value, dict):
        return {k: MASK if is_sensitive_key(k) else _masked(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_masked(v) for v in value]
    return value


@app.command()
def plan(
    request_file: Annotated[Path, typer.Argument(help="A request JSON: {'input': {...}} or bare")],
    root: Annotated[
        Path, typer.Option("--root", help="Working folder the job paths are shown under")
    ] = Path("./work"),
    images: Annotated[
        int | None, typer.Option("--images", min=0, help="Image count, to check the batch size")
    ] = None,
    videos: Annotated[
        int | None, typer.Option("--videos", min=0, help="Video count, to check the batch size")
    ] = None,
) -> None:
    """Print the diffusion-pipe configs and the downloads a request would produce. Runs and
    downloads nothing."""
    request = _read_request(request_file)
    paths = JobPaths.for_job(root.absolute(), "JOB_ID")
    try:
        configs = render(request, paths, image_count=images, video_count=videos)
    except ConfigError as exc:
        # markup off: the message quotes user text, which must not be read as rich markup.
        err.print(f"{request_file}: {exc}", style="red", highlight=False, markup=False)
        raise typer.Exit(1) from None
    entry = request.model
    # Plain writes: the TOML's [tables] would be read as rich markup.
    if entry.trains_videos and request.training.video_clip_mode == CUT_BY_SERVICE:
        sys.stdout.write(
            f"# video_clip_mode {CUT_BY_SERVICE}: before training, each video is cut into "
            f"overlapping clips of its frame bucket in {paths.clips_dir} (each with the video's "
            "caption); diffusion-pipe takes each clip from its beginning\n"
        )
    sys.stdout.write(f"# {paths.dataset_file}\n{tomli_w.dumps(_masked(configs.dataset))}\n")
    main_file = paths.config_dir / configs.main_file_name
    sys.stdout.write(f"# {main_file}\n{tomli_w.dumps(_masked(configs.main))}\n")
    sys.stdout.write(f"# weights, into {paths.models_root}\n")
    if not entry.downloads:
        sys.stdout.write(
            f"- built locally by {entry.built_by}: {paths.models_root / entry.weights_dir}\n"
        )
    for download in entry.downloads:
        gated = " [gated: needs a Hugging Face token that accepted the licence]"
        sys.stdout.write(
            f"- {_download_text(download)} -> {paths.models_root / download.dest}"
            f"{gated if download.gated else ''}\n"
        )


# Commands that live in their own modules (each owns its imports and options).
app.add_typer(dataset_app, name="dataset")
app.command()(watch)
app.command()(serve)
app.command()(submit)


if __name__ == "__main__":  # pragma: no cover
    app()
