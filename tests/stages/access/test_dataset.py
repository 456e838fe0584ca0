"""The dataset URL check: httpx against the loopback dataset server (a one-byte probe, never a
download) and huggingface_hub against the loopback Hub for hf://datasets/ URLs."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from pydantic import SecretStr

from stages.access.dataset import check_source
from stages.access.inputs import Bounds, DatasetTarget
from stages.access.retry import Transient
from stages.addresses import AddressPolicy
from stages.dataset.inputs import DatasetSource
from stages.errors import DownloadFailed
from tests.support.dataserver import DataServer
from tests.support.fakehub import FakeHub

FAST = Bounds(waits_s=(0.0,))
SIGNATURE = "X-Amz-Signature=sig-secret-0042"


@pytest.fixture
def srv() -> Iterator[DataServer]:
    with DataServer() as running:
        running.files["/d.zip"] = b"PK\x03\x04" + bytes(4096)
        yield running


def _check(
    url: str, target: DatasetTarget | None = None, sleeps: list[float] | None = None
) -> dict[str, object]:
    sleep = (sleeps if sleeps is not None else []).append
    source = DatasetSource("images_url", url)
    return check_source(
        source, target or DatasetTarget((source,)), FAST, sleep=sleep, clock=lambda: 0.0
    )


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_url_that_answers_gets_one_byte_probe_and_no_download(srv: DataServer) -> None:
    got = _check(f"{srv.url}/d.zip?{SIGNATURE}")
    assert got == {"field": "dataset.images_url", "at": srv.url[7:] + "/d.zip", "status": 206}
    assert srv.probes("/d.zip") == 1
    assert srv.gets("/d.zip") == []  # not a download
    assert SIGNATURE not in str(got)


def test_a_missing_file_fails_naming_the_field_without_the_query(srv: DataServer) -> None:
    sleeps: list[float] = []
    with pytest.raises(DownloadFailed) as info:
        _check(f"{srv.url}/gone.zip?{SIGNATURE}", sleeps=sleeps)
    message = str(info.value)
    assert message.startswith("dataset.images_url: not found at 127.0.0.1:")
    assert "(HTTP 404)" in message
    assert "sig-secret" not in message
    assert sleeps == []  # definite: not tried again


@pytest.mark.parametrize("status", [401, 403, 410])
def test_refusals_are_definite(srv: DataServer, status: int) -> None:
    srv.status["/x.zip"] = status
    with pytest.raises(DownloadFailed, match=r"^dataset\.images_url: "):
        _check(f"{srv.url}/x.zip")


def test_a_503_then_the_file_passes_after_tries(srv: DataServer) -> None:
    srv.fail_first["/d.zip"] = [503, 503]
    sleeps: list[float] = []
    assert _check(f"{srv.url}/d.zip", sleeps=sleeps)["status"] == 206
    assert srv.probes("/d.zip") == 3
    assert len(sleeps) == 2


def test_a_server_that_keeps_failing_is_transient_after_the_bound(srv: DataServer) -> None:
    srv.status["/d.zip"] = 503
    with pytest.raises(Transient, match="answered HTTP 503"):
        _check(f"{srv.url}/d.zip")
    assert srv.probes("/d.zip") == FAST.attempts


def test_a_host_that_does_not_answer_is_transient() -> None:
    with pytest.raises(Transient, match=r"did not answer \(ConnectError\)"):
        _check(f"http://127.0.0.1:{_closed_port()}/d.zip")


def test_a_name_that_does_not_resolve_is_definite() -> None:
    with pytest.raises(
        DownloadFailed, match=r"^dataset\.images_url: the host .* not found \(DNS\)"
    ):
        _check("https://no-such-host.invalid/d.zip")


def test_redirects_are_followed_under_the_address_policy(srv: DataServer) -> None:
    srv.redirects["/old.zip"] = "/d.zip"
    assert _check(f"{srv.url}/old.zip")["status"] == 206
    srv.redirects["/evil.zip"] = "http://169.254.169.254/latest/meta-data/"
    with pytest.raises(DownloadFailed, match="private or reserved network"):
        _check(f"{srv.url}/evil.zip")
    srv.redirects["/file.zip"] = "file:///etc/passwd"
    with pytest.raises(DownloadFailed, match='redirected to a "file" URL'):
        _check(f"{srv.url}/file.zip")
    refused = DatasetTarget((), addresses=AddressPolicy(allow_loopback=False))
    with pytest.raises(DownloadFailed, match="private or reserved network"):
        _check(f"{srv.url}/d.zip", refused)
    assert srv.probes("/d.zip") == 1  # the refused one never connected


def test_hub_datasets_must_exist_and_be_readable() -> None:
    with FakeHub() as hub:
        hub.add_repo("me/set", {"a.png": b"x"}, repo_type="dataset")
        target = DatasetTarget((), hub_endpoint=hub.url, hub_token=SecretStr("hf_reader"))
        assert _check("hf://datasets/me/set", target) == {
            "field": "dataset.images_url",
            "hub_dataset": "me/set",
        }
        with pytest.raises(DownloadFailed, match="dataset me/missing was not found on the Hub"):
            _check("hf://datasets/me/missing", target)
        with pytest.raises(DownloadFailed, match="has no revision 'v9'"):
            _check("hf://datasets/me/set@v9", target)


def test_an_inline_dataset_has_nothing_to_reach() -> None:
    assert _check("data:application/zip;base64,UEsFBgAAAAAAAAAAAAAAAAAAAAAAAA==") == {
        "field": "dataset.images_url",
        "inline": True,
    }
