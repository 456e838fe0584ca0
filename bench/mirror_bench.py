"""Hub commits for a simulated two-hour job, against the Hub's ~128 commits/hour per repo.

The job emits PROGRESS every 10 s, a new epoch every 6 min, an EPOCH_SAVED every 4 epochs and a
CHECKPOINT every 30 min; the clock is injected (simulated time), the Hub is the loopback fake
driven by the real huggingface_hub client. Prints total commits, the worst rolling hour, and
what an unbatched mirror (one commit per event) would have needed.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.table import Result
from events.model import GENESIS_HASH, Event, make_event
from events.projections.base import MirrorSettings
from events.projections.hub import HubMirror
from events.vocabulary import Status
from orchestrator.logs import configure_logging
from tests.support.fakehub import FakeHub  # the loopback Hub lives with the tests

JOB_HOURS = 2.0
PROGRESS_EVERY_S = 10.0
EPOCH_EVERY_S = 360.0
HUB_LIMIT_PER_HOUR = 128
START = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


class SimClock:
    """Simulated seconds since START; `sleep` advances it."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += max(0.0, seconds)


class Chain:
    """Builds a job's events with chosen timestamps (the store stamps the wall clock)."""

    def __init__(self, job_id: str, clock: SimClock) -> None:
        self.job_id, self.clock = job_id, clock
        self.events: list[Event] = []

    def add(self, kind: str, status: str | None = None, **data: Any) -> Event:
        prev = self.events[-1] if self.events else None
        event, _ = make_event(
            job_id=self.job_id,
            seq=len(self.events) + 1,
            type=kind,
            # A transition's status is its own name; a fact keeps the job's status.
            status=status
            or (kind if kind in Status.__members__ else prev.status if prev else kind),
            attempt=1,
            data=data,
            prev_hash=prev.hash if prev else GENESIS_HASH,
            timestamp=START + timedelta(seconds=self.clock.now),
        )
        self.events.append(event)
        return event


@dataclass
class SimResult:
    events: list[Event]
    commit_times: list[float]
    status: dict[str, Any]

    @property
    def worst_hour(self) -> int:
        times = self.commit_times
        return max((sum(1 for u in times if t <= u < t + 3600) for t in times), default=0)


def simulate_job(
    hub_url: str, repo_id: str, job_dir: Path, settings: MirrorSettings | None = None
) -> SimResult:
    """Run the two-hour job through a HubMirror driven synchronously (`pump`) on sim time."""
    clock = SimClock()
    mirror = HubMirror(
        repo_id=repo_id,
        job_id="sim-job",
        job_dir=job_dir,
        endpoint=hub_url,
        token="hf_bench",
        settings=settings or MirrorSettings(),
        clock=clock,
        sleep=clock.sleep,
        background=False,
    )
    chain = Chain("sim-job", clock)
    commit_times: list[float] = []

    def emit(kind: str, status: str | None = None, **data: Any) -> None:
        mirror.publish(chain.add(kind, status, **data))
        before = mirror.status()["commits"]
        mirror.pump()
        if mirror.status()["commits"] > before:
            commit_times.append(clock.now)

    mirror.publish(chain.add("INITIALIZED", message="Repository created"))
    mirror.start(timeout=30)  # creates the repo, commits the first update
    commit_times.extend([0.0] * mirror.status()["commits"])
    for status in ("STARTING", "DOWNLOADING"):
        clock.sleep(15)
        emit(status)
    emit("DATASET_REPORT", images=40)
    clock.sleep(60)
    emit("MODEL_DOWNLOAD")
    clock.sleep(240)
    emit("MODEL_READY")
    emit("TRAINING", message="Starting LoRA training")
    total = int(JOB_HOURS * 3600 / PROGRESS_EVERY_S)
    for step in range(1, total + 1):
        clock.sleep(PROGRESS_EVERY_S)
        epoch = 1 + int(step * PROGRESS_EVERY_S // EPOCH_EVERY_S)
        emit(
            "PROGRESS",
            step=step,
            total_steps=total,
            epoch=epoch,
            loss=0.1 + 1.0 / step,
            eta_seconds=(total - step) * PROGRESS_EVERY_S,
            percent=round(100.0 * step / total, 2),
        )
        if step * PROGRESS_EVERY_S % EPOCH_EVERY_S == 0 and epoch % 4 == 1:
            emit("EPOCH_SAVED", epoch=epoch - 1)
        if step * PROGRESS_EVERY_S % 1800 == 0:
            emit("CHECKPOINT", step=step)
    emit("TRAINING_COMPLETE")
    clock.sleep(20)
    emit("UPLOADING")
    clock.sleep(30)
    emit("STAGE_DONE", stage="publish")
    url = f"{hub_url}/{repo_id}/resolve/main/adapter_model.safetensors?download=true"
    emit("COMPLETE", message="Training completed successfully!", direct_download_url=url)
    before = mirror.status()["commits"]
    final = mirror.close(timeout=60)
    commit_times.extend([clock.now] * (final["commits"] - before))
    return SimResult(chain.events, commit_times, final)


def run() -> list[Result]:
    configure_logging(level=logging.WARNING)  # the mirror's per-commit lines are noise here
    with FakeHub() as hub, tempfile.TemporaryDirectory() as tmp:
        result = simulate_job(hub.url, "bench/mirror", Path(tmp))
        files = [p for p in hub.files("bench/mirror") if p.startswith("UPDATES/")]
        posts = hub.count("POST", "/commit/")
    events = len(result.events)
    return [
        Result(
            f"Hub commits, simulated {JOB_HOURS:.0f} h job ({events} events)",
            f"{result.status['commits']} commits, worst hour {result.worst_hour}",
            f"one commit per event: {events}",
            None,
            None,
            f"{len(files)} UPDATES files, {posts} commit POSTs; Hub limit ~{HUB_LIMIT_PER_HOUR}/h",
        )
    ]


def main() -> None:
    for r in run():
        print(r)


if __name__ == "__main__":
    main()
