"""`python -m minipipe`: a launcher process that starts the trainer process, as DeepSpeed does.

diffusion-pipe runs as a tree: the `deepspeed` runner starts `deepspeed.launcher.launch`, which
starts `train.py` and waits (launcher/launch.py at DeepSpeed 0.18.4). This keeps that shape, so a
test sees what a real worker has to stop: the launcher passes SIGTERM/SIGINT on to the trainer
and exits 1, exits with the trainer's code when it fails (a trainer killed by signal N ends the
launcher with 256 - N, DeepSpeed's `sys.exit(returncode)`), and sets up nothing that would make
the trainer die with it.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Sequence

_KILL_AFTER_S = 30.0  # DeepSpeed's terminate_process_tree waits this long before SIGKILL


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    trainer = subprocess.Popen([sys.executable, "-u", "-m", "minipipe.train", *args])

    def stop(signum: int, _frame: object) -> None:
        trainer.terminate()
        try:
            trainer.wait(_KILL_AFTER_S)
        except subprocess.TimeoutExpired:
            trainer.kill()
        sys.exit(1)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    while trainer.poll() is None:
        time.sleep(0.2)
    return trainer.returncode
