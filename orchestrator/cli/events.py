"""`dpserve events JOB_FOLDER [--verify] [--json]`: a job's timeline from its event log, and the
audit of its seq, hash chain and transitions."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich import box
from rich.table import Table

from events.audit import AuditReport, audit, summarize
from events.errors import CorruptLog
from events.model import Event
from events.store import EVENTS_FILE, parse_blob
from orchestrator.cli.console import err, out


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
