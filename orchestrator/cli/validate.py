"""`dpserve validate REQUEST`: check a request; print it normalised (secrets masked)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from orchestrator.cli.console import out, read_request


def validate(
    request_file: Annotated[Path, typer.Argument(help="A request JSON: {'input': {...}} or bare")],
) -> None:
    """Check a training request; print it normalised (secrets masked) or list every problem."""
    request = read_request(request_file)
    out.print_json(json.dumps(request.masked()))
