"""RunPod's local test mode, run as a developer runs it: `python handler.py` (reads
test_input.json from the working folder) or `python handler.py --test_input '{...}'`, in a
subprocess whose environment has no RUNPOD_* or DPS_* variable but the ones a test gives. With
no RUNPOD_LOG_LEVEL the SDK starts at its own default level (DEBUG) unless handler.py says
otherwise, which is what these runs check."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.paths import REPO

HANDLER = REPO / "handler.py"
RESULT = "INFO   | Job result: "  # rp_local.py prints the job's result on this line, at INFO


def local_env(root: Path, **extra: str) -> dict[str, str]:
    """The test's environment without RUNPOD_* and DPS_* (a developer's shell may export some),
    with DPS_ROOT, the repository on the path, and `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNPOD_", "DPS_"))}
    path = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    env.update({"DPS_ROOT": str(root), "PYTHONPATH": path, **extra})
    return env


@dataclass(frozen=True)
class LocalRun:
    returncode: int
    stdout: str
    stderr: str

    @property
    def lines(self) -> list[str]:
        return [*self.stdout.splitlines(), *self.stderr.splitlines()]

    def result(self) -> dict[str, Any]:
        """The job's result as the SDK printed it (a Python repr of a dict)."""
        found = [line for line in self.stdout.splitlines() if line.startswith(RESULT)]
        assert len(found) == 1, self.stdout[-3000:] + self.stderr[-3000:]
        parsed: dict[str, Any] = ast.literal_eval(found[0].removeprefix(RESULT))
        return parsed

    def logs(self) -> list[dict[str, Any]]:
        """The worker's own JSON log lines (stderr)."""
        return [json.loads(line) for line in self.stderr.splitlines() if line.startswith("{")]


def run_local(
    cwd: Path, env: dict[str, str], test_input: dict[str, Any] | None = None, timeout: float = 300
) -> LocalRun:
    """`python -u handler.py` in `cwd`; with `test_input`, as `--test_input '<json>'`."""
    args = ["--test_input", json.dumps(test_input)] if test_input is not None else []
    done = subprocess.run(
        [sys.executable, "-u", str(HANDLER), *args],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return LocalRun(done.returncode, done.stdout, done.stderr)
