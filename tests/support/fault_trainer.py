"""A trainer that fails as the real one does, started by the training stage in minipipe's place:
`python -m tests.support.fault_trainer --config ...` (tests/e2e/test_faults.py).

`FAULTS_TRAINER=oom` prints diffusion-pipe's CUDA OOM and exits 1; `FAULTS_TRAINER=disk_full:
<bytes>` runs minipipe with its output folder on a tmpfs of that size (a user+mount namespace,
when this machine allows one), else under RLIMIT_FSIZE of that size; otherwise it is minipipe.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

TRAINER_ENV = "FAULTS_TRAINER"
DISK_ENV = "FAULTS_DISK"  # "rlimit": the RLIMIT_FSIZE stand-in even where a tmpfs works


def userns_tmpfs_works() -> bool:
    """Whether an unprivileged user can mount a tmpfs in its own namespace here."""
    try:
        done = subprocess.run(
            ["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=4k tmpfs /mnt 2>/dev/null"],
            capture_output=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def main(argv: list[str]) -> int:
    import argparse  # noqa: PLC0415
    import resource  # noqa: PLC0415
    import signal  # noqa: PLC0415

    parser = argparse.ArgumentParser()
    parser.add_argument("--config", required=True)
    args, _ = parser.parse_known_args(argv)
    mode = os.environ.get(TRAINER_ENV, "")
    if mode == "oom":
        from tests.support.fake_trainer import print_cuda_oom  # noqa: PLC0415

        print("Global batch size = 1", flush=True)
        print("Started new epoch: 1", flush=True)
        print_cuda_oom()
        return 1
    minipipe = [sys.executable, "-u", "-m", "minipipe", *argv]
    if mode.startswith("disk_full:"):
        size = int(mode.split(":", 1)[1])
        config = tomllib.loads(Path(args.config).read_text(encoding="utf-8"))
        output_dir = Path(config["output_dir"])
        output_dir.mkdir(parents=True, exist_ok=True)
        if os.environ.get(DISK_ENV) != "rlimit" and userns_tmpfs_works():
            script = 'mount -t tmpfs -o size="$1" tmpfs "$2" && shift 2 && exec "$@"'
            os.execvp(
                "unshare",
                ["unshare", "-rm", "sh", "-c", script, "sh", str(size), str(output_dir), *minipipe],
            )
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG)
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))
    os.execv(sys.executable, minipipe)
    return 127


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
