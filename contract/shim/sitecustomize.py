"""Runs diffusion-pipe's real train.py on a CPU, for the contract test (`make contract`).

This folder goes on the PYTHONPATH of the trainer's processes only (the test sets it for the
training stage's environment); Python imports `sitecustomize` at start-up. Every adaptation is
at the environment level: no file of diffusion-pipe is edited.

- torch (`contract_cpu_torch`): CUDA device arguments become the CPU, `torch.cuda.set_device`
  and friends are no-ops, `torch.autocast('cuda')` is CPU autocast.
- ComfyUI (imported by every model) looks for a GPU at import unless its `cpu` option is set.
- sqlite3: diffusion-pipe's cache passes `autocommit=`, which only Python 3.12 knows.
- torchvision's CUDA build has no kernels on a CPU torch: its fake-kernel registrations, used
  only by torch.compile, are left out. torchaudio (used only for audio models) is marked absent.
- CONTRACT_KILL_AT_SAVE=<name>: right after diffusion-pipe creates `<name>/tmp` for a save,
  SIGKILL the trainer's whole process group, as a preemption would.
deepspeed itself needs only DS_ACCELERATOR=cpu (it then runs on gloo).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import os
import signal
import sqlite3
import sys
import types
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

# --- imports that need a hand --------------------------------------------------------------------


class _AfterImport(importlib.abc.MetaPathFinder):
    """Calls `hook(module)` right after the module `name` has been executed."""

    def __init__(self, name: str, hook: Callable[[types.ModuleType], None]) -> None:
        self.name, self.hook = name, hook

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: types.ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != self.name:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return spec
        loader, hook = spec.loader, self.hook

        class Hooked(importlib.abc.Loader):
            def create_module(self, spec: importlib.machinery.ModuleSpec) -> Any:
                return loader.create_module(spec)

            def exec_module(self, module: types.ModuleType) -> None:
                loader.exec_module(module)
                hook(module)

        spec.loader = Hooked()
        return spec


def _comfy_on_cpu(cli_args: types.ModuleType) -> None:
    cli_args.args.cpu = True  # read by comfy.model_management when it is imported


def _stub(name: str, why: str) -> None:
    module = types.ModuleType(name)
    module.__doc__ = f"contract stand-in: {why}"
    module.__spec__ = importlib.machinery.ModuleSpec(name, None)  # find_spec() reads it
    sys.modules[name] = module


def _imports() -> None:
    sys.meta_path.insert(0, _AfterImport("comfy.cli_args", _comfy_on_cpu))
    _stub("torchvision._meta_registrations", "torchvision's CUDA build has no CPU kernels")
    try:
        importlib.import_module("torchaudio")
    except (ImportError, OSError):
        _stub("torchaudio", "absent on the CPU; diffusion-pipe uses it for audio models only")
        _stub("torchaudio.functional", "absent on the CPU")
        setattr(sys.modules["torchaudio"], "functional", sys.modules["torchaudio.functional"])  # noqa: B010


def _sqlite_without_autocommit() -> None:
    if sys.version_info >= (3, 12):
        return
    connect = sqlite3.connect

    def connect_311(*args: Any, autocommit: bool | None = None, **kwargs: Any) -> Any:
        # autocommit=False (3.12) means implicit transactions and explicit commit(), which is
        # what 3.11's default isolation level does for the statements the cache runs.
        return connect(*args, **kwargs)

    sqlite3.connect = connect_311


# --- a kill during a save ------------------------------------------------------------------------


def _kill_at_save(target: str) -> None:
    """SIGKILL the trainer's process group once `<run>/<target>/tmp` has been created."""
    makedirs = os.makedirs

    def makedirs_then_kill(name: Any, mode: int = 0o777, exist_ok: bool = False) -> None:
        makedirs(name, mode, exist_ok)
        path = Path(os.fsdecode(name))
        if path.name == "tmp" and path.parent.name == target:
            # The driver starts the trainer in its own session, so its process group is the
            # trainer's tree and nothing else; outside one, kill only this process.
            if os.getpgrp() == os.getsid(0):
                os.killpg(os.getpgrp(), signal.SIGKILL)
            os.kill(os.getpid(), signal.SIGKILL)

    os.makedirs = makedirs_then_kill


def _is_launcher() -> bool:
    """The launch chain (`python -m stages.training.launch`, the deepspeed runner, `python -m
    deepspeed.launcher.launch`) touches no model: it is left alone and starts faster."""
    first = sys.argv[0] if sys.argv else ""
    return first == "-m" or Path(first).name == "deepspeed"


def install() -> None:
    if _is_launcher():
        return
    import contract_cpu_torch  # noqa: PLC0415 - torch, for the trainer's processes only

    contract_cpu_torch.install()
    _imports()
    _sqlite_without_autocommit()
    if target := os.environ.get("CONTRACT_KILL_AT_SAVE"):
        _kill_at_save(target)


install()
