"""Three concurrent two-hour jobs mirroring UPDATES into ONE repo, against the Hub's 128/h.

Each job is busy (PROGRESS every 10 s, a 20 s epoch with an EPOCH_SAVED each), so its mirror
alone would commit every `commit_interval_s` (60 s): three of them, today's behaviour, make
3 x 60 = 180 commits in an hour, past the Hub's 128 per repo. With the shared `CommitLedger`
(`events.projections.hub_limits`, one file under the volume's root) the mirrors defer commits
once the repo has 100 in the last hour, which keeps 28 for the publishes: each job ends with
its publish commit (made as the publisher does: `wait_s("publish")`, commit, `record`).
Jobs start 10 minutes apart. The clock is simulated and shared; the Hub is the loopback fake
driven by the real huggingface_hub client. Prints the worst rolling hour of commits for the
repo, with and without the ledger.
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from huggingface_hub import HfApi

from bench.mirror_bench import HUB_LIMIT_PER_HOUR, Chain, SimClock
from bench.table import Result
from events.projections.base import MirrorSettings
from events.projections.hub import HubMirror
from events.projections.hub_limits import CommitLedger
from orchestrator.logs import configure_logging
from tests.support.fakehub import FakeHub

JOBS = 3
JOB_HOURS = 2.0
STAGGER_S = 600.0
TICK_S = 10.0
EPOCH_S = 20.0
TOKEN = "hf_benchsharedrepotoken0000000"


@dataclass
class SharedResult:
    commit_times: list[float] = field(default_factory=list)  # every landed commit, the repo's
    publish_times: list[float] = field(default_factory=list)
    pending_left: int = 0  # updates still pending at the end (should be 0)
    updates_files: int = 0

    def worst_hour(self) -> int:
        return _worst_hour(self.commit_times)


def _worst_hour(times: list[float]) -> int:
    ordered = sorted(times)
    best, start = 0, 0
    for end, at in enumerate(ordered):
        while ordered[start] <= at - 3600.0:
            start += 1
        best = max(best, end - start + 1)
    return best


@dataclass
class _Job:
    index: int
    mirror: HubMirror
    chain: Chain
    start_s: float
    end_s: float
    step: int = 0
    done: bool = False
    commits_seen: int = 0


def simulate_shared(
    hub_url: str,
    repo_id: str,
    root: Path,
    *,
    ledger: bool = True,
    jobs: int = JOBS,
    hours: float = JOB_HOURS,
    settings: MirrorSettings | None = None,
) -> SharedResult:
    """Run `jobs` busy jobs into `repo_id`, their mirrors pumped in turn on one sim clock."""
    clock = SimClock()
    api = HfApi(endpoint=hub_url, token=TOKEN)
    api.create_repo(repo_id, exist_ok=True)
    result = SharedResult()
    running: list[_Job] = []
    for index in range(jobs):
        job_id = f"job-{index + 1}"
        mirror = HubMirror(
            repo_id=repo_id,
            job_id=job_id,
            job_dir=root / "jobs" / job_id,
            api=api,
            settings=settings or MirrorSettings(),
            clock=clock,
            sleep=clock.sleep,
            background=False,
            commit_budget=ledger,
        )
        start = index * STAGGER_S
        running.append(_Job(index, mirror, Chain(job_id, clock), start, start + hours * 3600))
    publish_ledger = CommitLedger.for_job(root / "jobs" / "publisher", repo_id, clock=clock)

    def pump(job: _Job) -> None:
        job.mirror.pump()
        commits = job.mirror.status()["commits"]
        result.commit_times.extend([clock.now] * (commits - job.commits_seen))
        job.commits_seen = commits

    def publish(job: _Job) -> bool:
        if ledger and publish_ledger.wait_s("publish") > 0:
            return False  # the publisher waits; tried again next tick
        # One commit, as the publisher makes; only the count matters here, so a small config
        # file stands for the LoRA (which would take the Xet path, unrelated to the budget).
        api.upload_file(
            path_or_fileobj=json.dumps({"job": job.chain.job_id}).encode(),
            path_in_repo=f"{job.chain.job_id}/adapter_config.json",
            repo_id=repo_id,
        )
        if ledger:
            publish_ledger.record("publish")
        result.commit_times.append(clock.now)
        result.publish_times.append(clock.now)
        return True

    publishing: list[_Job] = []
    while any(not j.done for j in running) or publishing:
        for job in running:
            if job.done or clock.now < job.start_s:
                continue
            emit = job.mirror.publish
            if not job.chain.events:
                for kind in ("INITIALIZED", "STARTING", "DOWNLOADING", "MODEL_DOWNLOAD"):
                    emit(job.chain.add(kind))
                emit(job.chain.add("TRAINING", message="Starting LoRA training"))
            elif clock.now >= job.end_s:
                emit(job.chain.add("TRAINING_COMPLETE"))
                emit(job.chain.add("UPLOADING"))
                publishing.append(job)
                job.done = True
            else:
                job.step += 1
                epoch = 1 + int(job.step * TICK_S // EPOCH_S)
                emit(job.chain.add("PROGRESS", step=job.step, epoch=epoch, loss=1.0 / job.step))
                if job.step * TICK_S % EPOCH_S == 0:
                    emit(job.chain.add("EPOCH_SAVED", epoch=epoch - 1))
            pump(job)
        for job in list(publishing):
            if publish(job):
                publishing.remove(job)
                url = f"{hub_url}/{repo_id}/resolve/main/{job.chain.job_id}/adapter_config.json"
                job.mirror.publish(job.chain.add("COMPLETE", direct_download_url=url))
                pump(job)
        clock.sleep(TICK_S)
    for job in running:  # what is left goes out as the ledger allows (the mirrors' own waits)
        for _ in range(1000):
            if not job.mirror.status()["pending"]:
                break
            wait = job.mirror.pump()
            commits = job.mirror.status()["commits"]
            result.commit_times.extend([clock.now] * (commits - job.commits_seen))
            job.commits_seen = commits
            clock.sleep(max(wait, 1.0))
        result.pending_left += job.mirror.status()["pending"]
    files = HfApi(endpoint=hub_url, token=TOKEN).list_repo_files(repo_id)
    result.updates_files = sum(1 for f in files if f.startswith("UPDATES/"))
    return result


def run() -> list[Result]:
    configure_logging(level=logging.WARNING)
    rows = []
    with FakeHub() as hub, tempfile.TemporaryDirectory() as tmp:
        shared = simulate_shared(hub.url, "bench/shared", Path(tmp) / "a", ledger=True)
        alone = simulate_shared(hub.url, "bench/unshared", Path(tmp) / "b", ledger=False)
    for name, r in (("with the shared ledger", shared), ("without (baseline)", alone)):
        rows.append(
            Result(
                f"{JOBS} concurrent {JOB_HOURS:.0f} h jobs into one repo, {name}",
                f"worst hour {r.worst_hour()} commits",
                f"Hub limit {HUB_LIMIT_PER_HOUR}/h",
                None,
                None,
                f"{len(r.commit_times)} commits in all ({len(r.publish_times)} publishes), "
                f"{r.updates_files} UPDATES files, {r.pending_left} left pending",
            )
        )
    return rows


def main() -> None:
    for r in run():
        print(r)


if __name__ == "__main__":
    main()
