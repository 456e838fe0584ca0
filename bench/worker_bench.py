"""The worker's costs: cold start, and a whole tiny job's orchestration around the trainer.

1. Cold start: `python -c "import handler"` vs `python -c "import runpod"` (the SDK the
   worker needs anyway). Goal: ratio <= 1.3.
2. Orchestration: a whole `tiny` job through localpod (the SDK worker loop, every stage,
   mirror, events) vs minipipe alone on the same prepared data and config; plus the seconds
   spent in each status, from the job's event log.
"""

from __future__ import annotations

import itertools
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.table import Result, secs
from events.store import EventStore
from localpod import LocalPod
from orchestrator.cli.demo import StaticServer, make_dataset, request_body
from orchestrator.cli.submit import call_endpoint

ROOT = Path(__file__).resolve().parent.parent  # the repository
ROUNDS = 5


def _import_time(module: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", f"import {module}"], cwd=ROOT, check=True)
    return time.perf_counter() - start


def cold_start() -> Result:
    _import_time("handler"), _import_time("runpod")  # warm the page cache
    ours = statistics.median(_import_time("handler") for _ in range(ROUNDS))
    sdk = statistics.median(_import_time("runpod") for _ in range(ROUNDS))
    return Result(
        "cold start: import handler", secs(ours), f"import runpod {secs(sdk)}", ours / sdk, 1.3
    )


def _by_status(root: Path, job_id: str) -> dict[str, float]:
    events = EventStore.on_disk(root).read(job_id)
    marks = [(e.timestamp.timestamp(), e.status) for e in events if e.type == e.status]
    spent: dict[str, float] = {}
    for (t0, status), (t1, _) in itertools.pairwise(marks):
        spent[status] = spent.get(status, 0.0) + t1 - t0
    return spent


def orchestration() -> Result:
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        (tmp / "www").mkdir()
        (tmp / "www" / "dataset.zip").write_bytes(make_dataset())
        root = tmp / "root"
        with (
            StaticServer(tmp / "www") as www,
            LocalPod(ROOT / "handler.py", env={"DPS_ROOT": str(root)}, log_dir=tmp / "logs") as pod,
        ):
            pod.wait_ready(60)
            start = time.perf_counter()
            body = request_body(f"{www.url}/dataset.zip", tmp / "outputs")
            job_id = str(call_endpoint("POST", f"{pod.url}/run", "bench", body)["id"])
            final = pod.wait_for(job_id, timeout=600)
            whole = time.perf_counter() - start
        assert final["status"] == "COMPLETED", final
        config = root / "jobs" / job_id / "config" / "tiny.toml"
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "minipipe", "--config", str(config)],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        alone = time.perf_counter() - start
        spent = _by_status(root, job_id)
    stages = ", ".join(f"{k.lower()} {v:.1f}" for k, v in spent.items() if v >= 0.05)
    return Result(
        "whole tiny job through localpod",
        secs(whole),
        f"minipipe alone {secs(alone)}",
        whole / alone,
        None,
        f"seconds by status: {stages}",
    )


def run() -> list[Result]:
    return [cold_start(), orchestration()]


def main() -> None:
    for r in run():
        print(r)


if __name__ == "__main__":
    main()
