"""No orphan trainers: every process of the trainer's tree ends with the worker, on every path.

diffusion-pipe is a tree (the deepspeed runner, `deepspeed.launcher.launch`, one `train.py` per
GPU), and minipipe keeps that shape (a launcher and its trainer), so these tests see the ranks a
parent-death signal on the runner alone would miss. Processes are found by a marker in their
environment, so one that left its process group or was re-parented is found too.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from tests.support.paths import REPO
from tests.support.processes import marked_processes, wait_until_gone

pytestmark = pytest.mark.slow

WORKER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from events.store import EventStore
    from stages.contract import StopRequest
    from stages.training.stage import Training
    from tests.support.minipipe_job import tiny_job, training_ctx

    plan, _, job_dir = tiny_job(Path(sys.argv[1]), epochs=50)
    Training(plan).run(training_ctx(job_dir, EventStore.in_memory().open("job")))
    """
)


def _marker() -> tuple[str, str]:
    value = uuid.uuid4().hex
    return "DPS_TEST_TREE", value


def _wait_for_steps(log: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not (log.exists() and "steps: " in log.read_text()):
        assert time.monotonic() < deadline, "the trainer never trained a step"
        time.sleep(0.1)


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_the_whole_trainer_tree_dies_with_its_worker(tmp_path: Path, how: signal.Signals) -> None:
    """The worker process dies (SIGKILL: no handler runs; SIGTERM: the default action) while
    minipipe's launcher and trainer are training."""
    name, value = _marker()
    env = {**os.environ, name: value, "PYTHONPATH": str(REPO), "MINIPIPE_STEP_SLEEP": "0.2"}
    worker = subprocess.Popen([sys.executable, "-c", WORKER, str(tmp_path)], cwd=REPO, env=env)
    try:
        _wait_for_steps(tmp_path / "jobs" / "job" / "logs" / "train.log")
        tree = [pid for pid in marked_processes(f"{name}={value}") if pid != worker.pid]
        # the wrapper, minipipe's launcher and its trainer
        assert len(tree) >= 3, f"expected the trainer's tree, found {tree}"
        worker.send_signal(how)
        worker.wait(30)
        alive = wait_until_gone(f"{name}={value}", timeout=30)
        assert alive == [], f"trainer processes outlived their worker: {alive}"
    finally:
        worker.kill()
        for pid in marked_processes(f"{name}={value}"):
            os.kill(pid, signal.SIGKILL)


def test_a_rank_that_left_the_process_group_dies_with_the_worker(tmp_path: Path) -> None:
    """A descendant in a session of its own is out of reach of a process-group signal; the
    launcher, the tree's subreaper, still ends it."""
    name, value = _marker()
    rank = tmp_path / "rank.py"
    rank.write_text(
        "import os, subprocess, sys, time\n"
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'],"
        " start_new_session=True)\n"
        f"open({str(tmp_path / 'ready')!r}, 'w').close()\n"
        "time.sleep(120)\n"
    )
    worker_code = (
        "import os, subprocess, sys, time\n"
        "subprocess.Popen([sys.executable, '-m', 'stages.training.launch', str(os.getpid()),"
        f" sys.executable, {str(rank)!r}])\n"
        "time.sleep(120)\n"
    )
    env = {**os.environ, name: value}
    worker = subprocess.Popen([sys.executable, "-c", worker_code], cwd=REPO, env=env)
    try:
        deadline = time.monotonic() + 30
        while not (tmp_path / "ready").exists():
            assert time.monotonic() < deadline, "the rank never started"
            time.sleep(0.05)
        time.sleep(0.3)  # the rank's own child is up
        assert len(marked_processes(f"{name}={value}")) == 4  # worker, launcher, rank, its child
        worker.kill()
        worker.wait(30)
        alive = wait_until_gone(f"{name}={value}", timeout=30)
        assert alive == [], f"processes outlived their worker: {alive}"
    finally:
        worker.kill()
        for pid in marked_processes(f"{name}={value}"):
            os.kill(pid, signal.SIGKILL)


def test_a_stop_the_trainer_ignores_leaves_no_process_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cancel whose save_quit and SIGTERM are ignored, with a helper outside the trainer's
    process group (the fake trainer's `stubborn` mode): the stage ends and nothing is left."""
    from stages.contract import StopRequest  # noqa: PLC0415
    from stages.errors import JobCancelled  # noqa: PLC0415
    from stages.training import driver  # noqa: PLC0415
    from tests.support.training_stage import fake_stage  # noqa: PLC0415

    name, value = _marker()
    monkeypatch.setenv(name, value)
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    monkeypatch.setattr(driver, "KILL_WAIT_S", 1.0)
    stop = StopRequest()

    def cancel_at_step_3(sample: dict[str, object]) -> None:
        if int(str(sample["step"])) >= 3:
            stop.set("cancel", "cancelled by the client")

    _, run = fake_stage(
        tmp_path, "stubborn", stop=stop, stop_grace_s=0.3, on_progress=cancel_at_step_3
    )
    try:
        with pytest.raises(JobCancelled):
            run()
        mine = f"{name}={value}"
        alive = [p for p in wait_until_gone(mine, timeout=15) if p != os.getpid()]
        assert alive == [], f"processes outlived the stopped trainer: {alive}"
    finally:
        for pid in marked_processes(f"{name}={value}"):
            if pid != os.getpid():
                os.kill(pid, signal.SIGKILL)
