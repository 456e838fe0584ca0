"""A full volume, simulated where the product writes: `Path.open` hands back, for the files a
test picks, a file that takes a few bytes and then fails as the OS does on a full disk (ENOSPC)
or an exhausted quota (EDQUOT). Nothing else is patched: the product's own error handling runs."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest


class FullVolumeFile:
    """A real file that accepts `room` bytes, then raises OSError(`code`) on every write."""

    def __init__(self, real: Any, code: int, room: int = 2) -> None:
        self.real, self.code, self.room = real, code, room

    def write(self, data: bytes) -> int:
        if self.room > 0:
            taken = self.real.write(data[: self.room])
            self.room -= taken
        raise OSError(self.code, os.strerror(self.code), self.real.name)

    def __enter__(self) -> FullVolumeFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.real.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


def fill_volume(
    monkeypatch: pytest.MonkeyPatch,
    code: int,
    picks: Callable[[Path, str], bool],
    room: int = 2,
) -> None:
    """From now on, every file `picks(path, mode)` chooses is opened as a `FullVolumeFile`."""
    real_open = Path.open

    def open_(path: Path, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        f = real_open(path, mode, *args, **kwargs)
        return FullVolumeFile(f, code, room) if picks(path, mode) else f

    monkeypatch.setattr(Path, "open", open_)


def written(mode: str) -> bool:
    """Whether `mode` opens a file for writing (w, x or a)."""
    return any(flag in mode for flag in "wxa")
