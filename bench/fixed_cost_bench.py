"""A tiny job's fixed cost: what the worker spends outside the trainer process, and the whole job
against minipipe alone.

One localpod worker runs handler.py. The first `tiny` job warms it (imports, the tiny model in
the volume's model cache); the jobs after it are measured on the warm worker. For each:

- taken and answered: localpod's first delivery (`started_at`) and result post (`finished_at`);
- the trainer process (`python -m minipipe`, what "minipipe alone" runs) from its start to its
  exit, as the kernel records them (bench/proc_watch.py), all on one monotonic clock;
- the job's status events, converted from wall clock, to show where the time outside goes.

Goal: (trainer start - taken) + (answered - trainer exit) <= 3 s. The whole job is also compared
with minipipe alone: the trainer's own command line, run by the bench right after each job while
the worker idles, so that a job and its baseline share the machine's noise.
"""

from __future__ import annotations

import itertools
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.proc_watch import ProcessWatch
from bench.table import Result, secs
from events.store import EventStore
from localpod import LocalPod
from orchestrator.cli.demo import StaticServer, make_dataset, request_body
from orchestrator.cli.submit import call_endpoint

ROOT = Path(__file__).resolve().parent.parent  # the repository
WARM_JOBS = 3  # measured after the first
BUDGET_S = 3.0
JOB_TIMEOUT_S = 600.0


@dataclass
class Job:
    """One measured job; every time is on this process's monotonic clock."""

    job_id: str
    submitted: float
    taken: float
    answered: float
    final: dict[str, Any]
    trainer: tuple[float, float] | None  # the `python -m minipipe` process: start, exit
    launcher: tuple[float | None, float | None]  # the worker's launch wrapper around it
    marks: list[tuple[float, str]] = field(default_factory=list)  # (time, status) from the log
    trainer_argv: list[str] = field(default_factory=list)

    @property
    def whole(self) -> float:
        return self.answered - self.taken

    @property
    def trainer_start(self) -> float:
        return self._trainer()[0]

    @property
    def trainer_exit(self) -> float:
        return self._trainer()[1]

    @property
    def before(self) -> float:
        """Job taken -> trainer process started."""
        return self.trainer_start - self.taken

    @property
    def after(self) -> float:
        """Trainer process exited -> answer posted."""
        return self.answered - self.trainer_exit

    @property
    def trainer_s(self) -> float:
        return self.trainer_exit - self.trainer_start

    def _trainer(self) -> tuple[float, float]:
        if self.trainer is None:
            raise RuntimeError(f"job {self.job_id}: the trainer process was not seen")
        return self.trainer

    def timeline(self) -> str:
        """Each milestone's offset from the take: where the seconds outside the trainer go."""
        points = [(self.taken, "taken"), *self.marks, (self.answered, "answered")]
        for when, name in zip(self.launcher, ("wrapper-start", "wrapper-exit"), strict=True):
            if when is not None:
                points.append((when, name))
        if self.trainer is not None:
            points += [(self.trainer[0], "minipipe-start"), (self.trainer[1], "minipipe-exit")]
        points.sort()
        return ", ".join(f"{name} +{t - self.taken:.2f}" for t, name in points)


def _is_trainer(job_id: str, argv: list[str]) -> bool:
    """`python -u -m minipipe --config .../<job>/...`: not the launch wrapper around it, nor the
    `minipipe.train` process minipipe's launcher starts (minipipe alone includes that too)."""
    joined = " ".join(argv)
    return "minipipe" in argv and "stages.training.launch" not in argv and job_id in joined


def _is_launcher(job_id: str, argv: list[str]) -> bool:
    return "stages.training.launch" in argv and job_id in " ".join(argv)


def _status_marks(root: Path, job_id: str) -> list[tuple[float, str]]:
    """The job's status changes on the monotonic clock (the log keeps wall-clock stamps)."""
    offset = time.monotonic() - time.time()
    events = EventStore.on_disk(root).read(job_id)
    return [(e.timestamp.timestamp() + offset, e.status) for e in events if e.type == e.status]


def _one_job(pod: LocalPod, root: Path, body: dict[str, Any]) -> Job:
    submitted = time.monotonic()
    job_id = str(call_endpoint("POST", f"{pod.url}/run", "bench", body)["id"])
    with (
        ProcessWatch(lambda argv: _is_trainer(job_id, argv)) as trainer,
        ProcessWatch(lambda argv: _is_launcher(job_id, argv)) as launcher,
    ):
        final = pod.wait_for(job_id, timeout=JOB_TIMEOUT_S)
    if final.get("status") != "COMPLETED" or (final.get("output") or {}).get("status") != "success":
        raise RuntimeError(f"the tiny job did not complete: {final}")
    record = pod.board.jobs[job_id]
    if record.started_at is None or record.finished_at is None:
        raise RuntimeError(f"localpod has no take or answer time for job {job_id}")
    seen = None
    if trainer.start is not None and trainer.exit is not None:
        seen = (trainer.start, trainer.exit)
    return Job(
        job_id,
        submitted,
        record.started_at,
        record.finished_at,
        final,
        seen,
        (launcher.start, launcher.exit),
        _status_marks(root, job_id),
        trainer.argv,
    )


def _minipipe_alone(argv: list[str]) -> float:
    """The trainer's own command line, as the worker ran it, from this process."""
    start = time.perf_counter()
    subprocess.run(argv, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


@dataclass
class Measured:
    cold: Job
    warm: list[Job]
    cold_alone: float  # minipipe alone right after the cold job
    alone: list[float]  # right after each warm job


def _by_status(job: Job) -> dict[str, float]:
    """Seconds spent in each status, from the take to the answer."""
    spent: dict[str, float] = {}
    marks = [(job.taken, "before the first event"), *job.marks, (job.answered, "answered")]
    for (t0, status), (t1, _) in itertools.pairwise(marks):
        spent[status] = spent.get(status, 0.0) + max(0.0, t1 - t0)
    return spent


def _mark(job: Job, status: str) -> float | None:
    return next((t for t, s in job.marks if s == status), None)


def measure(tmp: Path, warm_jobs: int = WARM_JOBS) -> Measured:
    """A cold job, then `warm_jobs` on the warm worker; each job is followed by minipipe alone on
    its command line while the worker idles (a job and its baseline share the machine's noise)."""
    (tmp / "www").mkdir()
    (tmp / "www" / "dataset.zip").write_bytes(make_dataset())
    root = tmp / "root"
    jobs: list[Job] = []
    alone: list[float] = []
    with (
        StaticServer(tmp / "www") as www,
        LocalPod(ROOT / "handler.py", env={"DPS_ROOT": str(root)}, log_dir=tmp / "logs") as pod,
    ):
        pod.wait_ready(120)
        body = request_body(f"{www.url}/dataset.zip", tmp / "outputs")
        for _ in range(1 + warm_jobs):
            job = _one_job(pod, root, body)
            if not job.trainer_argv:
                raise RuntimeError(f"the trainer of job {job.job_id} was not seen")
            jobs.append(job)
            alone.append(_minipipe_alone(job.trainer_argv))
    return Measured(jobs[0], jobs[1:], alone[0], alone[1:])


def results(m: Measured) -> list[Result]:
    med = statistics.median
    before, after = med(j.before for j in m.warm), med(j.after for j in m.warm)
    outside = before + after
    # Where each side goes: the TRAINING status splits the first, the COMPLETE status the second.
    to_training = med((_mark(j, "TRAINING") or j.trainer_start) - j.taken for j in m.warm)
    to_complete = med((_mark(j, "COMPLETE") or j.answered) - j.trainer_exit for j in m.warm)
    whole, alone = med(j.whole for j in m.warm), med(m.alone)
    ratio = med(j.whole / a for j, a in zip(m.warm, m.alone, strict=True))
    trainer = med(j.trainer_s / a for j, a in zip(m.warm, m.alone, strict=True))
    own = med(j.whole / j.trainer_s for j in m.warm)  # same window: free of the machine's noise
    queued = med(j.taken - j.submitted for j in m.warm)
    cold_whole = m.cold.answered - m.cold.submitted
    cold_own = cold_whole / m.cold.trainer_s
    cold = ", ".join(f"{k.lower()} {v:.1f}" for k, v in _by_status(m.cold).items() if v >= 0.05)
    return [
        Result(
            "fixed cost of a warm tiny job (outside the trainer)",
            secs(outside),
            f"budget {secs(BUDGET_S)}",
            outside / BUDGET_S,
            1.0,
            f"medians of {len(m.warm)}: taken->trainer start {before:.2f} s (to TRAINING "
            f"{to_training:.2f}); trainer exit->answer {after:.2f} s (to COMPLETE "
            f"{to_complete:.2f}, then {after - to_complete:.2f} to the post)",
        ),
        Result(
            "warm tiny job, taken -> answered",
            secs(whole),
            f"minipipe alone {secs(alone)}",
            ratio,
            None,
            f"median of per-job ratios (each job, then minipipe alone on its command line); "
            f"whole / the job's own trainer process {own:.2f}; that trainer took {trainer:.2f}x "
            f"alone; queue->taken {queued:.2f} s",
        ),
        Result(
            "cold tiny job, submit -> answered (a new worker's first job)",
            secs(cold_whole),
            f"minipipe alone {secs(m.cold_alone)}",
            cold_whole / m.cold_alone,
            None,
            f"whole / the job's own trainer process {cold_own:.2f}; seconds by status: {cold}",
        ),
    ]


def run() -> list[Result]:
    with tempfile.TemporaryDirectory() as tmp:
        measured = measure(Path(tmp))
    for job in (measured.cold, *measured.warm):
        print(f"  job {job.job_id}: {job.timeline()}", flush=True)
    return results(measured)


if __name__ == "__main__":
    for r in run():
        print(r)
