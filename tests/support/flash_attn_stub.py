"""flash-attn as the default image has it, on a test machine that cannot install it.

The image installs flash-attn (the Dockerfile's FLASH_ATTN_WHEEL), so Wan jobs pass the STARTING
check there (`stages.training.runtime`). Its wheel needs CUDA, so the session fixture in
`conftest.py` puts an empty `flash_attn` package at the end of sys.path: a real install, where
one exists, still comes first. The stand-in trainers never call it. A test of the refusal takes
it away with `hide_flash_attn`, so `import flash_attn` fails as on an image built without it.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

MODULE = "flash_attn"
_ROOTS: list[str] = []  # the stub folders on sys.path


@contextmanager
def stub_on_path(folder: Path) -> Iterator[None]:
    """An importable, empty `flash_attn` under `folder`, on sys.path while the block runs."""
    package = folder / MODULE
    package.mkdir(parents=True, exist_ok=True)
    (package / "__init__.py").write_text('"""A test stand-in: importable, never called."""\n')
    root = str(folder)
    sys.path.append(root)
    _ROOTS.append(root)
    try:
        yield
    finally:
        _ROOTS.remove(root)
        if root in sys.path:
            sys.path.remove(root)
        sys.modules.pop(MODULE, None)


def hide_flash_attn(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make `import flash_attn` fail for one test, as it does on an image without it."""
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in _ROOTS])
    monkeypatch.delitem(sys.modules, MODULE, raising=False)
    importlib.invalidate_caches()
    if importlib.util.find_spec(MODULE) is not None:  # a real install: block it instead
        monkeypatch.setitem(sys.modules, MODULE, None)
