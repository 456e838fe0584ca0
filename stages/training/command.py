"""The trainer's command line: minipipe on the CPU for `tiny`, else deepspeed + diffusion-pipe's
`train.py`, run from its checkout with a free `--master_port` per job (two jobs on one host must
not share one).

GPUs: DeepSpeed's runner deletes CUDA_VISIBLE_DEVICES when `--num_gpus` is given and then uses
GPUs 0..N-1 (launcher/runner.py, 0.18.4), so with `CUDA_VISIBLE_DEVICES=2,3` it would train on 0
and 1. When the variable is set, the command names those GPUs with `--include localhost:<list>`
instead; only when it is unset is `--num_gpus` (from `nvidia-smi -L`) passed.

The trainer runs with the Hub offline (HF_HUB_OFFLINE=1): every file it reads was fetched in the
weights stage, so a missing one fails at once instead of downloading mid-run from a Hub the
worker's settings never pointed it at. Files a loader resolves by repo id (SDXL's base configs)
are in `hub_cache`, given to it as HF_HUB_CACHE.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from stages.errors import StageFailed


def free_port() -> int:
    """A free TCP port for this job's --master_port (two jobs on one host must not share)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


VISIBLE = "CUDA_VISIBLE_DEVICES"


@dataclass(frozen=True)
class Gpus:
    """The GPUs the trainer gets: how many, and which when CUDA_VISIBLE_DEVICES names them."""

    count: int
    devices: tuple[int, ...] | None = None  # None: the variable is unset

    def launcher_args(self) -> list[str]:
        """deepspeed's arguments that select exactly these GPUs."""
        if self.devices is None:
            return [f"--num_gpus={self.count}"]
        return ["--include", "localhost:" + ",".join(map(str, self.devices))]


def _listed(visible: str) -> tuple[int, ...]:
    """CUDA_VISIBLE_DEVICES as CUDA reads it: the indices before the first invalid one ("-1")."""
    devices: list[int] = []
    for entry in (e.strip() for e in visible.split(",")):
        try:
            index = int(entry)
        except ValueError:
            if not entry:
                break
            # deepspeed's runner reads the list as integers: a UUID would crash it.
            raise StageFailed(
                f"{VISIBLE}={visible!r} names a GPU by UUID ({entry!r}); deepspeed's launcher "
                f"takes GPU indices: set {VISIBLE} to indices such as 0,1"
            ) from None
        if index < 0:
            break
        devices.append(index)
    return tuple(devices)


def visible(env: Mapping[str, str] | None = None) -> Gpus:
    """GPUs this worker may use: those CUDA_VISIBLE_DEVICES lists if set, else `nvidia-smi -L`."""
    listed = (os.environ if env is None else env).get(VISIBLE)
    if listed is not None:
        devices = _listed(listed)
        return Gpus(len(devices), devices)
    try:
        out = subprocess.run(
            ["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return Gpus(0)
    return Gpus(sum(1 for line in out.stdout.splitlines() if line.startswith("GPU ")))


def visible_gpus() -> int:
    """How many GPUs the trainer will use (data parallel): the global batch's multiplier."""
    return visible().count


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
    hub_cache: Path | None = None,
    python: str = sys.executable,
    nccl_workaround: bool = True,
    cpu_module: str = "minipipe",
) -> TrainerCommand:
    """The command line for `model_type`: minipipe for `tiny`, deepspeed + train.py otherwise.

    `num_gpus` replaces `nvidia-smi`'s count when CUDA_VISIBLE_DEVICES is unset; `hub_cache`
    is the trainer's Hugging Face cache (the weights stage's `HUB_CACHE` folder)."""
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    env["HF_HUB_OFFLINE"] = "1"
    if hub_cache is not None:
        env["HF_HUB_CACHE"] = str(hub_cache)
    resume = ["--resume_from_checkpoint", resume_from] if resume_from else []
    if model_type == "tiny":
        argv = [python, "-u", "-m", cpu_module, "--config", str(config.resolve()), *resume]
        return TrainerCommand(argv, config.parent, env)
    gpus = Gpus(num_gpus) if num_gpus is not None and VISIBLE not in env else visible(env)
    if gpus.count < 1:
        shown = f" ({VISIBLE}={env[VISIBLE]!r})" if VISIBLE in env else ""
        raise StageFailed(
            f"no GPU is visible to this worker{shown}; diffusion-pipe needs at least one"
        )
    if nccl_workaround:  # the README's setting for consumer cards; harmless elsewhere
        env.setdefault("NCCL_P2P_DISABLE", "1")
        env.setdefault("NCCL_IB_DISABLE", "1")
    argv = [
        "deepspeed",
        *gpus.launcher_args(),
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
