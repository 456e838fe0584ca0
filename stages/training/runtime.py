"""What a model needs in the worker's own Python, checked at STARTING before anything downloads.

diffusion-pipe's Wan code imports flash-attn inside `try/except ModuleNotFoundError` and only
fails later on a bare `assert FLASH_ATTN_2_AVAILABLE` (models/wan/attention.py), after the
weights download and latent caching. The trainer runs in the worker's Python (the image's
venv), so importing the module here answers the same question at once, including a wheel
built for another torch, whose import fails on an undefined symbol rather than a missing name.
"""

from __future__ import annotations

import importlib

from stages.errors import StageFailed

FLASH_ATTN = "flash_attn"
# What to rebuild: the Dockerfile's build argument and what its wheel must match.
FLASH_ATTN_FIX = (
    "rebuild the worker image with flash-attn: the Dockerfile's FLASH_ATTN_WHEEL build "
    "argument (its default pins a prebuilt wheel for torch 2.9 / CUDA 12 / Python 3.12, "
    "cxx11 ABI; an override must match the image's torch) must not be empty, then redeploy"
)


class WorkerLacksModule(StageFailed):
    """The model needs a Python module the worker image does not have; nothing was fetched."""


def import_problem(module: str) -> str | None:
    """Why `module` cannot be imported in this Python, or None when it can."""
    try:
        importlib.import_module(module)
    except Exception as exc:  # ImportError, or an OSError from a shared library that won't load
        return f"{type(exc).__name__}: {exc}"
    return None


def flash_attn_imports() -> bool:
    return import_problem(FLASH_ATTN) is None


def require_flash_attn(display_name: str) -> None:
    """Raise WorkerLacksModule when flash-attn does not import; `display_name` is the model's."""
    problem = import_problem(FLASH_ATTN)
    if problem is not None:
        raise WorkerLacksModule(
            f"{display_name} needs flash-attn, which this worker cannot import ({problem}); "
            f"the job was refused before any download. Fix: {FLASH_ATTN_FIX}"
        )
