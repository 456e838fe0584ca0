"""`dpserve dataset check ZIP_OR_URL`: the pre-flight dataset report, without a job.

`check_dataset` runs the dataset stage's own steps (download, safe extraction, the report) on a
local archive or folder, or an http(s)/hf:// URL, in a temporary folder.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Annotated, Any

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from orchestrator.catalogue import ALL_MODEL_TYPES, get_model
from orchestrator.cli.console import err, out
from orchestrator.plan import dataset_rules
from orchestrator.request import RequestError, effective_training, parse_request
from stages.dataset.inputs import DatasetInputs, DatasetSource
from stages.dataset.report import DatasetReport, problem_lines
from stages.dataset.stage import prepare
from stages.errors import StageFailed

app = typer.Typer(name="dataset", help="Check a dataset before training.", no_args_is_help=True)


def check_dataset(
    zip_or_url: str,
    *,
    model_type: str = "qwen",
    dataset_type: str = "precaptioned",
    trigger_word: str | None = None,
    work_dir: Path | None = None,
    hub_endpoint: str = "https://huggingface.co",
    token: str | None = None,
    video_clip_mode: str | None = None,
) -> DatasetReport:
    """The pre-flight report for a local archive or folder, or an http(s)/hf:// URL."""
    entry = get_model(model_type)
    field = "images_url" if entry.trains_images else "videos_url"
    path = Path(zip_or_url)
    is_local = "://" not in zip_or_url and path.exists()
    body: dict[str, Any] = {
        "model_type": model_type,
        "dataset": {
            "type": dataset_type,
            field: "https://local.invalid/dataset.zip" if is_local else zip_or_url,
        },
        # Gated models and video captioning need keys to run, not to check a dataset.
        "api_keys": {"huggingface_token": token or "hf_check_only", "gemini_api_key": "check"},
    }
    if trigger_word:
        body["dataset"]["trigger_word"] = trigger_word
    if video_clip_mode:
        body["training"] = {"video_clip_mode": video_clip_mode}
    request = parse_request(body)
    inputs = DatasetInputs(
        sources=(DatasetSource(field, str(body["dataset"][field])),),
        rules=dataset_rules(request, effective_training(request)),
        hub_token=request.hf_download_token(),
        hub_endpoint=hub_endpoint,
    )
    with tempfile.TemporaryDirectory(dir=work_dir, prefix="dpserve-check-") as tmp:
        return prepare(inputs, Path(tmp), local={field: path.absolute()} if is_local else None)


@app.callback()
def _group() -> None:
    """Dataset tools."""


@app.command("check")
def check(
    zip_or_url: Annotated[
        str, typer.Argument(help="A local zip/tar/folder or an http(s)/hf:// URL")
    ],
    *,
    model_type: Annotated[
        str, typer.Option("--model-type", help=f"One of: {', '.join(ALL_MODEL_TYPES)}")
    ] = "qwen",
    dataset_type: Annotated[
        str, typer.Option("--type", help="precaptioned, images, videos or both")
    ] = "precaptioned",
    trigger_word: Annotated[str | None, typer.Option("--trigger-word")] = None,
    clip_mode: Annotated[
        str | None,
        typer.Option(
            "--clip-mode",
            help="Video clip mode; multiple_overlapping shows how many clips the videos give",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON")] = False,
) -> None:
    """Download (if a URL), unpack into a temporary folder and report what would train."""
    try:
        report = check_dataset(
            zip_or_url,
            model_type=model_type,
            dataset_type=dataset_type,
            trigger_word=trigger_word,
            video_clip_mode=clip_mode,
        )
    except (StageFailed, RequestError) as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc
    if as_json:
        print(json.dumps(report.to_event(), indent=2))
    else:
        print_report(report, out)
    if report.fatal():
        raise typer.Exit(1)


def print_report(report: DatasetReport, console: Console) -> None:
    summary = Table(
        title=f"Dataset for {report.model_type} ({report.dataset_type})", box=box.SIMPLE
    )
    summary.add_column("")
    summary.add_column("value", justify="right")
    rows: list[tuple[str, object]] = [
        ("images (usable / found)", f"{report.usable_images} / {report.images}"),
        ("videos (usable / found)", f"{report.usable_videos} / {report.videos}"),
        ("video clips trained", report.video_clips),
        ("captions found", report.captions_found),
        ("captions missing", report.captions_missing),
        ("captions empty", report.captions_empty),
        ("captions not UTF-8", report.captions_not_utf8),
        ("skipped for want of a caption", report.skipped_no_caption),
        ("global batch", report.global_batch),
        ("steps per epoch", report.steps_per_epoch),
        (f"total steps ({report.epochs} epochs)", report.total_steps),
    ]
    for name in ("width", "height", "frames", "fps", "duration_s"):
        spread = getattr(report, name)
        if spread is not None:
            shown = f"{spread.min:g} / {spread.median:g} / {spread.max:g}"
            rows.append((f"{name} min / median / max", shown))
    if report.aspect_buckets:
        rows.append(("aspect", ", ".join(f"{k} {v}" for k, v in report.aspect_buckets.items())))
    for label, value in rows:
        summary.add_row(label, str(value))
    console.print(summary)
    problems = Table(title="Problems", box=box.SIMPLE)
    for column in ("severity", "count", "problem", "examples"):
        problems.add_column(column)
    for severity, count, meaning, names in problem_lines(report):
        colour = "red" if severity == "fatal" else "yellow"
        label = f"[{colour}]{severity}[/{colour}]"
        problems.add_row(label, str(count), meaning, ", ".join(names[:5]))
    if problems.row_count:
        console.print(problems)
    for note in report.notes:
        console.print(f"[yellow]note:[/yellow] {note}")
    for message in report.fatal():
        console.print(f"[red]fatal:[/red] {message}")
