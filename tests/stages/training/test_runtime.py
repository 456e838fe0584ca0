"""The STARTING check's import probe: what it reports for a module that imports, one that is
missing, and one that is found but does not load (a flash-attn wheel built for another torch)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from stages.training.runtime import (
    FLASH_ATTN,
    WorkerLacksModule,
    import_problem,
    require_flash_attn,
)
from tests.support.flash_attn_stub import hide_flash_attn


def test_a_module_that_imports_has_no_problem(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "dps_fine_module.py").write_text("VALUE = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert import_problem("dps_fine_module") is None


def test_a_missing_module_is_named() -> None:
    assert import_problem("dps_no_such_module") == (
        "ModuleNotFoundError: No module named 'dps_no_such_module'"
    )


def test_a_module_found_but_broken_counts_as_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a wheel for another torch does: the package is there, its extension won't load."""
    package = tmp_path / "dps_broken_ext"
    package.mkdir()
    (package / "__init__.py").write_text(
        "raise ImportError('flash_attn_2_cuda.so: undefined symbol: _ZN3c104cuda9SetDeviceEa')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "dps_broken_ext", raising=False)
    problem = import_problem("dps_broken_ext")
    assert problem is not None
    assert problem.startswith("ImportError: ")
    assert "undefined symbol" in problem


def test_without_flash_attn_the_refusal_says_what_to_rebuild(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    hide_flash_attn(monkeypatch)
    with pytest.raises(WorkerLacksModule) as caught:
        require_flash_attn("Wan 1.3B")
    message = str(caught.value)
    assert message.startswith("Wan 1.3B needs flash-attn")
    assert f"No module named '{FLASH_ATTN}'" in message
    assert "FLASH_ATTN_WHEEL" in message
    assert "before any download" in message


def test_with_flash_attn_nothing_is_refused() -> None:
    require_flash_attn("Wan 1.3B")  # the session's stand-in (or a real install) imports
