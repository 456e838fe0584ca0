"""Cold start: a localpod worker's process spawn to its first job taken, handler.py against the
same SDK worker loop with a trivial handler (bench/trivial_handler.py). Goal: ratio <= 1.2.

The job is queued before the worker is spawned, so the take is the worker's first job-take
request and nothing waits on the queue. The spawn time is the kernel's record of the worker
process's start (bench/proc_watch.py); the take is localpod's `started_at` of the job (first
delivery), on the same monotonic clock. Each round runs the two back to back; the ratio is the
median of the rounds' ratios, so that the machine's noise falls on both sides.
"""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path
from typing import Any

from bench.proc_watch import started_at
from bench.table import Result, secs
from localpod import LocalPod
from orchestrator.cli.submit import call_endpoint

ROOT = Path(__file__).resolve().parent.parent  # the repository
HANDLER = ROOT / "handler.py"
TRIVIAL = Path(__file__).with_name("trivial_handler.py")
ROUNDS = 5
# handler.py answers an empty input at once (FAILED: the request is invalid), so the worker
# is idle again when the pod stops.
EMPTY_JOB: dict[str, Any] = {"input": {}}


def spawn_to_take(handler: Path) -> float:
    """Seconds from the worker process's start to its first job taken."""
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        env = {"DPS_ROOT": str(tmp / "root")}
        with LocalPod(handler, env=env, log_dir=tmp / "logs") as pod:
            # localpod spawns its worker on its supervisor's first round (0.2 s after start):
            # the job is on the queue well before the process exists.
            job_id = str(call_endpoint("POST", f"{pod.url}/run", "bench", EMPTY_JOB)["id"])
            pod.wait_for(job_id, timeout=120)
            pids = pod.worker_pids()
            if not pids:  # the folder goes with this function: say what the log said
                tail = "".join(p.read_text()[-2000:] for p in (tmp / "logs").glob("*.log"))
                raise RuntimeError(f"the worker of {handler.name} exited; its log:\n{tail}")
            spawned = started_at(pids[0])
            job = pod.board.jobs[job_id]
            taken = job.started_at
            if taken is None or job.submitted_at > spawned:
                raise RuntimeError(f"{handler.name}: the job was not queued before the spawn")
            return taken - spawned


def cold_start(rounds: int = ROUNDS) -> Result:
    spawn_to_take(HANDLER), spawn_to_take(TRIVIAL)  # the page cache and .pyc files
    ours: list[float] = []
    trivial: list[float] = []
    for _ in range(rounds):
        ours.append(spawn_to_take(HANDLER))
        trivial.append(spawn_to_take(TRIVIAL))
    # Each round's pair ran back to back: the median of their ratios sheds most of the noise.
    ratio = statistics.median(a / b for a, b in zip(ours, trivial, strict=True))
    return Result(
        "cold start: worker spawn -> first job taken (handler.py)",
        secs(statistics.median(ours)),
        f"trivial SDK handler {secs(statistics.median(trivial))}",
        ratio,
        1.2,
        f"median of {rounds} paired rounds; fastest {min(ours):.2f} s vs {min(trivial):.2f} s "
        f"({min(ours) / min(trivial):.2f})",
    )


def run() -> list[Result]:
    return [cold_start()]


if __name__ == "__main__":
    for r in run():
        print(r)
