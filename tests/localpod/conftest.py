"""The shared localpod endpoint: one per test module, one worker."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from localpod import LocalPod
from tests.support.localpod_client import AUTH, HANDLER, KEY
from tests.support.paths import REPO


@pytest.fixture(scope="module")
def pod(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalPod]:
    logs = tmp_path_factory.mktemp("localpod-logs")
    local = LocalPod(HANDLER, api_key=KEY, cwd=REPO, log_dir=logs, stop_grace_s=5)
    local.start()
    try:
        local.wait_ready(timeout=60)
        yield local
    finally:
        local.stop()


@pytest.fixture
def http(pod: LocalPod) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=pod.url, headers=AUTH, timeout=30) as client:
        yield client
