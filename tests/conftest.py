from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from events.lease import FileLease
from events.store import EventStore
from tests.support.flash_attn_stub import stub_on_path

# hf_xet reads these once per process, when it is first used, so they are set before any test
# (localpod's workers inherit them): its internal retries (6 tries over minutes by default)
# are cut so a fault test takes a second, and its caches (shards it has seen, keyed by the CAS
# URL) are the session's own, never a developer's ~/.cache or an earlier run's.
os.environ.setdefault("HF_XET_CLIENT_RETRY_MAX_ATTEMPTS", "1")
os.environ.setdefault("HF_XET_CLIENT_RETRY_BASE_DELAY", "10ms")
if "HF_XET_CACHE" not in os.environ:
    os.environ["HF_XET_CACHE"] = tempfile.mkdtemp(prefix="dps-test-xet-cache-")
    atexit.register(shutil.rmtree, os.environ["HF_XET_CACHE"], ignore_errors=True)


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


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    """moto's standalone S3 server on 127.0.0.1 with a `loras` bucket, for one test module."""
    import boto3  # noqa: PLC0415 - only the S3 tests pay for boto3 and moto
    from moto.server import ThreadedMotoServer  # noqa: PLC0415

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    boto3.client(
        "s3",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="x",
        aws_secret_access_key="y",
    ).create_bucket(Bucket="loras")
    yield url
    server.stop()


@pytest.fixture(scope="session", autouse=True)
def _flash_attn_as_in_the_image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The default image has flash-attn, so Wan jobs pass STARTING; tests/support/flash_attn_stub
    says why a stand-in, and how a test takes it away."""
    with stub_on_path(tmp_path_factory.mktemp("flash_attn_stub")):
        yield


@pytest.fixture(scope="session", autouse=True)
def _no_canary_on_any_test_volume(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """After the whole run: no secret canary in any file of any job folder (every job's
    events, logs, UPDATES, configs, outputs). The one allowed place: the trainer's own TOML,
    which must hold a passthrough credential such as a wandb key for the trainer to use it."""
    yield
    from tests.support.canary import TOKEN_CANARY, find  # noqa: PLC0415 - at the end of the run

    base = tmp_path_factory.getbasetemp()
    hits = []
    for jobs in base.rglob("jobs"):
        if not jobs.is_dir():
            continue
        for path in jobs.rglob("*"):
            if not path.is_file() or path.is_symlink():
                continue
            data = path.read_bytes()
            names = [n for n in find(data) if not (path.suffix == ".toml" and "wandb" in n)]
            names += [TOKEN_CANARY] if TOKEN_CANARY.encode() in data else []
            hits += [f"{path.relative_to(base)}: {n}" for n in names]
    assert not hits, "secret canaries found on test volumes:\n" + "\n".join(hits[:20])
