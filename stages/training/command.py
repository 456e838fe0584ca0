"""The trainer's command line: minipipe on the CPU for `tiny`, else deepspeed + diffusion-pipe's
`train.py`, run from its checkout with a free `--master_port` per job (two jobs on one host must
not share one)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from stages.errors import StageFailed


def free_port() -> int:
    """A free TCP port for this job's --master_port (two jobs on one host must not share)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def visible_gpus() -> int:
    """GPUs this worker may use: CUDA_VISIBLE_DEVICES if set, else `nvidia-smi -L`."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip() and d.strip() != "-1"])
    try:
        out = subprocess.run(
            ["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(1 for line in out.stdout.splitlines() if line.startswith("GPU "))


@dataclass(frozen=True)
class TrainerCommand:
    argv: list[str]
    cwd: Path
    env: dict[str, str]


def trainer_command(
    *,
    model_type: str,
    config: Path,
    resume_from: str | None,
    diffusion_pipe_dir: Path,
    num_gpus: int | None = None,
    master_port: int | None = None,
    python: str = sys.executable,
    nccl_workaround: bool = True,
    cpu_module: str = "minipipe",
) -> TrainerCommand:
    """The command line for `model_type`: minipipe for `tiny`, deepspeed + train.py otherwise."""
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    resume = ["--resume_from_checkpoint", resume_from] if resume_from else []
    if model_type == "tiny":
        argv = [python, "-u", "-m", cpu_module, "--config", str(config.resolve()), *resume]
        return TrainerCommand(argv, config.parent, env)
    gpus = num_gpus if num_gpus is not None else visible_gpus()
    if gpus < 1:
        raise StageFailed("no GPU is visible to this worker; diffusion-pipe needs at least one")
    if nccl_workaround:  # the README's setting for consumer cards; harmless elsewhere
        env.setdefault("NCCL_P2P_DISABLE", "1")
        env.setdefault("NCCL_IB_DISABLE", "1")
    argv = [
        "deepspeed",
        f"--num_gpus={gpus}",
        "train.py",
        "--deepspeed",
        "--config",
        str(config.resolve()),
        "--master_port",
        str(master_port or free_port()),
        *resume,
    ]
    # Several model loaders use paths relative to the checkout: run from its root.
    return TrainerCommand(argv, diffusion_pipe_dir, env)
