"""Dataset downloads over loopback: resume, errors users can act on, caps, reuse, hf://."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from stages.dataset.download import download
from stages.dataset.limits import DownloadLimits
from stages.errors import DownloadFailed
from tests.support.dataserver import DataServer
from tests.support.fakehub import FakeHub
from tests.support.media import make_zip

FAST = DownloadLimits(attempts=3, retry_wait_s=0.0, connect_timeout_s=2, read_timeout_s=2)
DATA = make_zip({f"{i}.jpg": os.urandom(20_000) for i in range(10)})


@pytest.fixture
def srv() -> Iterator[DataServer]:
    with DataServer() as running:
        running.files["/d.zip"] = DATA
        yield running


def _get(url: str, dest: Path, **kw: object) -> Path:
    got = download(url, dest, field="dataset.images_url", name="images", limits=FAST, **kw)  # type: ignore[arg-type]
    return got.path


def test_resume_after_drop(srv: DataServer, tmp_path: Path) -> None:
    srv.drop_after["/d.zip"] = [50_000, 30_000]
    seen: list[int] = []
    got = download(
        srv.url + "/d.zip",
        tmp_path,
        field="dataset.images_url",
        name="images",
        limits=FAST,
        on_bytes=lambda done, total: seen.append(done),
    )
    assert got.path.read_bytes() == DATA
    assert got.sha256 == hashlib.sha256(DATA).hexdigest()
    assert srv.gets("/d.zip") == [None, "bytes=50000-", "bytes=80000-"]
    assert seen[-1] == len(DATA)


def test_server_ignoring_range_gets_a_fresh_download(srv: DataServer, tmp_path: Path) -> None:
    srv.ranges = False
    srv.drop_after["/d.zip"] = [50_000]
    assert _get(srv.url + "/d.zip", tmp_path).read_bytes() == DATA
    assert srv.gets("/d.zip") == [None, "bytes=50000-"]


def test_second_call_reuses_a_valid_download(srv: DataServer, tmp_path: Path) -> None:
    first = download(srv.url + "/d.zip", tmp_path, field="f", name="images", limits=FAST)
    again = download(srv.url + "/d.zip", tmp_path, field="f", name="images", limits=FAST)
    assert (first.reused, again.reused) == (False, True)
    assert len(srv.gets("/d.zip")) == 1
    first.path.write_bytes(b"tampered")  # the manifest no longer matches: fetch again
    assert _get(srv.url + "/d.zip", tmp_path).read_bytes() == DATA
    assert len(srv.gets("/d.zip")) == 2


def test_404_and_403_messages_hide_the_query(srv: DataServer, tmp_path: Path) -> None:
    srv.status["/private.zip"] = 403
    with pytest.raises(DownloadFailed) as exc:
        _get(srv.url + "/missing.zip?X-Amz-Signature=topsecret", tmp_path)
    assert "not found at 127.0.0.1" in str(exc.value)
    assert "/missing.zip" in str(exc.value)
    assert "topsecret" not in str(exc.value)
    user = srv.url.replace("http://", "http://me:pw-secret@")
    with pytest.raises(DownloadFailed) as exc:
        _get(user + "/private.zip?sig=topsecret", tmp_path)
    assert "refused access (HTTP 403): is the link public / not expired?" in str(exc.value)
    assert "topsecret" not in str(exc.value)
    assert "pw-secret" not in str(exc.value)


def test_size_cap(srv: DataServer, tmp_path: Path) -> None:
    small = DownloadLimits(max_bytes=1000, retry_wait_s=0)
    with pytest.raises(DownloadFailed) as exc:
        download(srv.url + "/d.zip", tmp_path, field="f", name="images", limits=small)
    assert "larger than the" in str(exc.value)


def test_redirects(srv: DataServer, tmp_path: Path) -> None:
    srv.redirects["/old"] = "/d.zip"
    srv.redirects["/evil"] = "file:///etc/passwd"
    assert _get(srv.url + "/old", tmp_path).read_bytes() == DATA
    with pytest.raises(DownloadFailed) as exc:
        _get(srv.url + "/evil", tmp_path / "b")
    assert 'redirected to a "file" URL' in str(exc.value)


def test_schemes_and_web_pages(srv: DataServer, tmp_path: Path) -> None:
    with pytest.raises(DownloadFailed) as exc:
        _get("ftp://example.com/x.zip", tmp_path)
    assert str(exc.value) == (
        'dataset.images_url: the "ftp" scheme is not supported; use an http(s) URL or '
        "hf://datasets/owner/name"
    )
    srv.files["/page"] = b"<!doctype html><html>sign in</html>"
    with pytest.raises(DownloadFailed) as exc:
        _get(srv.url + "/page", tmp_path)
    assert "returned a web page" in str(exc.value)


def test_gives_up_after_attempts(tmp_path: Path) -> None:
    with DataServer() as srv:
        srv.status["/flaky"] = 503
        with pytest.raises(DownloadFailed) as exc:
            _get(srv.url + "/flaky", tmp_path)
        assert "after 3 attempts (HTTP 503)" in str(exc.value)
        assert len(srv.gets("/flaky")) == 3


def test_hf_dataset(tmp_path: Path) -> None:
    with FakeHub() as hub:
        hub.add_repo("me/faces", {"data/set.zip": DATA, "README.md": b"hi"}, repo_type="dataset")
        got = download(
            "hf://datasets/me/faces@main",
            tmp_path,
            field="dataset.images_url",
            name="images",
            hub_endpoint=hub.url,
        )
        assert (got.path / "data" / "set.zip").read_bytes() == DATA
        with pytest.raises(DownloadFailed) as exc:
            download("hf://datasets/me/nope", tmp_path, field="f", name="x", hub_endpoint=hub.url)
        assert "me/nope was not found" in str(exc.value)
