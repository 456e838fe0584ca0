"""Finding a test's processes by a marker in their environment: every descendant, even one that
left its process group or was re-parented to init."""

from __future__ import annotations

import time
from pathlib import Path


def marked_processes(marker: str) -> list[int]:
    """Pids of live processes whose environment holds `marker` (a NAME=value entry)."""
    needle = marker.encode()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if needle not in (entry / "environ").read_bytes().split(b"\0"):
                    continue
                if "State:\tZ" in (entry / "status").read_text():
                    continue  # exited, waiting to be reaped: dead
            except OSError:  # gone meanwhile, or not ours
                continue
            found.append(int(entry.name))
    return found


def wait_until_gone(marker: str, timeout: float = 20.0) -> list[int]:
    """Wait for every marked process to exit; returns the ones still alive at the timeout."""
    deadline = time.monotonic() + timeout
    while (alive := marked_processes(marker)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return alive
