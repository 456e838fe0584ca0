"""The contract test's fixtures: the diffusion-pipe checkout (DIFFUSION_PIPE_DIR; without one every
test is skipped), its venv, the tiny Flux, and the trainer's environment."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SHIM = REPO / "contract" / "shim"
NO_CHECKOUT = (
    "the contract test runs the real diffusion-pipe: `make contract DIFFUSION_PIPE_DIR=<checkout>` "
    "(contract/prepare.sh makes the checkout and its venv under .contract/); no checkout given"
)


@pytest.fixture(scope="session")
def checkout() -> Path:
    given = os.environ.get("DIFFUSION_PIPE_DIR")
    if not given:
        pytest.skip(NO_CHECKOUT)
    path = Path(given).resolve()
    if not (path / "train.py").is_file():
        pytest.fail(
            f"DIFFUSION_PIPE_DIR={given}: no train.py there; is it a diffusion-pipe checkout?"
        )
    return path


@pytest.fixture(scope="session")
def contract_venv(checkout: Path) -> Path:
    """CONTRACT_VENV, else the venv contract/prepare.sh makes next to the checkout."""
    venv = Path(os.environ.get("CONTRACT_VENV") or checkout.parent / "venv").resolve()
    if not (venv / "bin" / "deepspeed").exists():
        pytest.fail(
            f"{venv}: no deepspeed there; set CONTRACT_VENV to the trainer's venv "
            "(contract/prepare.sh makes one)"
        )
    return venv


@pytest.fixture(scope="session")
def root(tmp_path_factory: pytest.TempPathFactory, contract_venv: Path) -> Path:
    """A working folder whose models/flux holds the tiny Flux, built in the trainer's venv."""
    base = tmp_path_factory.mktemp("contract")
    subprocess.run(
        [
            str(contract_venv / "bin" / "python"),
            str(REPO / "contract" / "tiny_flux.py"),
            str(base / "models" / "flux"),
        ],
        check=True,
        capture_output=True,
        timeout=600,
    )
    return base


@pytest.fixture(scope="session", autouse=True)
def trainer_env(checkout: Path, contract_venv: Path) -> Iterator[None]:
    """The stage copies os.environ into the trainer's: the contract venv's deepspeed first on
    PATH, the shim on PYTHONPATH (the trainer's processes only: this process has started), the
    CPU accelerator, nothing from the network, one visible device for the driver to count."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PATH", f"{contract_venv / 'bin'}{os.pathsep}{os.environ['PATH']}")
        mp.setenv("PYTHONPATH", str(SHIM))
        mp.setenv("DS_ACCELERATOR", "cpu")
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("WANDB_MODE", "disabled")
        mp.setenv("CUDA_VISIBLE_DEVICES", "0")
        mp.delenv("CONTRACT_KILL_AT_SAVE", raising=False)
        yield
