"""What the `dpserve` commands share: the consoles, and reading a request file."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer
from rich.console import Console

from orchestrator.errors import RequestError
from orchestrator.request import TrainingRequest, parse_request

# Piped output (CI logs, files) gets room for the timeline instead of 80 columns.
out = Console(width=None if sys.stdout.isatty() else 140)
err = Console(stderr=True, soft_wrap=True)


def fail(message: str, code: int) -> typer.Exit:
    """Print `message` (user text: no rich markup) to stderr; the Exit to raise."""
    err.print(message, style="red", highlight=False, markup=False)
    return typer.Exit(code)


def read_request(request_file: Path) -> TrainingRequest:
    """The parsed request; exit 2 on an unreadable file, 1 on an invalid request."""
    try:
        raw = json.loads(request_file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        err.print(f"[red]error:[/] {request_file}: no such file")
        raise typer.Exit(2) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise fail(f"error: {request_file}: not valid JSON ({exc})", 2) from None
    except (ValueError, RecursionError) as exc:  # a 5,000-digit number, 5,000-deep nesting
        raise fail(
            f"error: {request_file}: not a JSON request this tool reads ({exc})", 2
        ) from None
    if not isinstance(raw, dict):
        err.print(f"[red]error:[/] {request_file}: the request must be a JSON object")
        raise typer.Exit(2)
    try:
        return parse_request(raw)
    except RequestError as exc:
        # markup off: the message quotes user text, which must not be read as rich markup.
        raise fail(f"{request_file}: {exc}", 1) from None
