"""The worker's costs, through localpod and the real SDK worker loop (issue 13, item 8).

1. Cold start (bench/cold_start_bench.py): a worker process's spawn to its first job taken,
   `python -u handler.py` vs the same SDK loop with a trivial handler. Goal: ratio <= 1.2.
2. Fixed cost per job (bench/fixed_cost_bench.py): on a warm worker with the model cached, the
   seconds of a `tiny` job outside the trainer process (taken -> trainer start, trainer exit ->
   answer posted), goal <= 3 s; the whole job against minipipe alone; and a new worker's first
   job, by status.

`python -m bench.worker_bench` runs only these rows (a few minutes) and prints their table.
"""

from __future__ import annotations

from rich.console import Console

from bench import cold_start_bench, fixed_cost_bench
from bench.table import Result, render


def run() -> list[Result]:
    return [*cold_start_bench.run(), *fixed_cost_bench.run()]


def main() -> None:
    Console(width=160).print(render(run()))


if __name__ == "__main__":
    main()
