"""`dpserve models`: the models a request can train, with their defaults and weights."""

from __future__ import annotations

from rich import box
from rich.table import Table

from orchestrator.catalogue import ALL_MODEL_TYPES, ModelEntry, get_model
from orchestrator.cli.console import out
from stages.weights.sources import HubFiles

# "needs": what the worker's Python must import for the model (flash-attn for Wan).
COLUMNS = ("model_type", "name", "dp type", "media", "gated", "needs", "LoRA file", "lr", "epochs")


def download_text(download: HubFiles) -> str:
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


def models() -> None:
    """List the models a request can train, with their defaults and weights."""
    table = Table(title="model catalogue", title_justify="left", box=box.SIMPLE_HEAD)
    for column in COLUMNS:
        # Short columns never wrap; the long ones fold so the repos stay readable at 140 columns.
        short = column in ("model_type", "gated", "needs", "lr", "epochs")
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
            "flash-attn" if entry.needs_flash_attn else "",
            entry.lora_file,
            f"{entry.defaults['learning_rate']:g}",
            str(entry.defaults["epochs"]),
            _sources(entry),
        )
    out.print(table)
