"""`python -m stages.training.launch PARENT_PID ARGV...`: exec ARGV so that it dies with its parent.

Linux's parent-death signal survives exec, so the trainer gets SIGKILL when the worker that
started it dies. A parent already gone before the signal was armed means exit at once.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(
            "usage: python -m stages.training.launch PARENT_PID COMMAND [ARGS...]", file=sys.stderr
        )
        return 2
    parent, command = int(argv[0]), argv[1:]
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the worker died before the signal was armed
            return 1
    os.execvp(command[0], command)  # noqa: S606 - argv built by the training driver
    return 127  # pragma: no cover - execvp does not return


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
