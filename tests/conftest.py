from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from events.lease import FileLease
from events.store import EventStore


@pytest.fixture(params=["jsonl", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[EventStore]:
    """Both backends; every contract test runs on each."""
    if request.param == "jsonl":
        yield EventStore.on_disk(tmp_path / "root")
    else:
        yield EventStore.in_memory()


@pytest.fixture
def lease(tmp_path: Path) -> Iterator[FileLease]:
    held = FileLease(tmp_path / "lease-job", owner="tester")
    held.acquire()
    yield held
    held.release()
