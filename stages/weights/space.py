"""Room on the volume, checked before a download sends its first byte.

A download knows its exact size once the Hub has listed the revision's files; it then reserves
that much (less what it has written so far) in this process's ledger and fails at once when the
volume's free space, less what the other downloads still reserve, is short: the base model and
JoyCaption download side by side at STARTING, and neither may take the room the other counts
on. The message names the download, the sizes and what to do.
"""

from __future__ import annotations

import contextlib
import shutil
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from stages.errors import StageFailed

GB = 1e9
disk_usage = shutil.disk_usage  # tests stand a small volume in here

_lock = threading.Lock()
_reserved: dict[object, tuple[str, Callable[[], int]]] = {}  # (what, bytes still to write)


def _show(n: float) -> str:
    return f"{n / GB:.1f} GB"


@contextlib.contextmanager
def reserve(folder: Path, what: str, need: int, written: Callable[[], int]) -> Iterator[None]:
    """Hold room for `need` bytes (`written()`: how many have landed) while the block runs;
    raise StageFailed before it when the volume of `folder` has not got that much free."""
    key = object()
    with _lock:
        others = [(w, left()) for w, left in _reserved.values()]
        held = sum(max(0, n) for _, n in others)
        free = disk_usage(folder).free
        if need > free - held:
            beside = "".join(f"; {w} still needs {_show(n)}" for w, n in others if n > 0)
            raise StageFailed(
                f"not enough room on the volume for {what}: it needs {_show(need)}, the volume "
                f"has {_show(free)} free{beside}. Free space on the network volume (old jobs' "
                "folders, other models under models/) or attach a larger one"
            )
        _reserved[key] = (what, lambda: need - written())
    try:
        yield
    finally:
        with _lock:
            _reserved.pop(key, None)
