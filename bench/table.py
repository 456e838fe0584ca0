"""One row per benchmark: ours vs a baseline measured in the same run, the ratio, the goal."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console
from rich.table import Table


@dataclass(frozen=True)
class Result:
    name: str
    ours: str  # a measured figure with its unit
    baseline: str
    ratio: float | None  # ours / baseline where both are times
    goal: float | None = None  # met when ratio <= goal
    note: str = ""

    @property
    def met(self) -> str:
        if self.goal is None or self.ratio is None:
            return "-"
        return "yes" if self.ratio <= self.goal else "NO"


def secs(value: float) -> str:
    return f"{value:.2f} s"


def render(results: list[Result]) -> Table:
    table = Table(title="benchmarks (ratios against a baseline measured in the same run)")
    for column in ("benchmark", "ours", "baseline", "ratio", "goal", "met", "note"):
        table.add_column(column, overflow="fold")
    for r in results:
        table.add_row(
            r.name,
            r.ours,
            r.baseline,
            "-" if r.ratio is None else f"{r.ratio:.2f}",
            "-" if r.goal is None else f"<= {r.goal:g}",
            r.met,
            r.note,
        )
    return table


def markdown(results: list[Result]) -> str:
    lines = [
        "# Benchmark results",
        "",
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on a machine with {os.cpu_count()} "
        "cores (`make bench`). Every ratio compares against a baseline measured in the same "
        "run; these machines are noisy, so read ratios, not seconds.",
        "",
        "| benchmark | ours | baseline | ratio | goal | met | note |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        ratio = "-" if r.ratio is None else f"{r.ratio:.2f}"
        goal = "-" if r.goal is None else f"<= {r.goal:g}"
        lines.append(
            f"| {r.name} | {r.ours} | {r.baseline} | {ratio} | {goal} | {r.met} | {r.note} |"
        )
    return "\n".join(lines) + "\n"


def publish(results: list[Result], path: Path) -> None:
    """Print the table and write it at the top of `path`, keeping the dated `## ` sections
    below it (measurements written by hand, with their circumstances)."""
    Console(width=160).print(render(results))
    kept = ""
    if path.is_file():
        old = path.read_text(encoding="utf-8")
        start = old.find("\n## ")
        kept = "" if start < 0 else old[start:]
    path.write_text(markdown(results) + kept, encoding="utf-8")
    print(f"written to {path}")
