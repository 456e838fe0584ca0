"""Dataset downloads over loopback: resume, errors users can act on, caps, reuse, hf://."""

from __future__ import annotations

import errno
import hashlib
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from stages.dataset.download import download
from stages.dataset.limits import DownloadLimits
from stages.errors import DownloadFailed
from tests.support.dataserver import DataServer
from tests.support.fakehub import FakeHub
from tests.support.full_disk import fill_volume, written
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


# --- a trickle must not hold the worker: deadline, average rate, tries ---------------------------

SLOW = b"PK" + os.urandom(1998)  # 2000 bytes: sent a byte at a time it takes seconds for real


def _trickle(srv: DataServer, seconds_per_byte: float) -> str:
    """A byte every `seconds_per_byte` on `srv.clock`, paced for real so none arrive early."""
    srv.files["/t.zip"] = SLOW
    srv.chunk_size = 1
    srv.chunk_delay_s["/t.zip"] = 0.005
    srv.chunk_clock_s["/t.zip"] = seconds_per_byte
    return srv.url + "/t.zip?sig=topsecret"


def _refused(url: str, dest: Path, limits: DownloadLimits, **kw: object) -> str:
    with pytest.raises(DownloadFailed) as exc:
        download(url, dest, field="dataset.images_url", name="images", limits=limits, **kw)  # type: ignore[arg-type]
    message = str(exc.value)
    assert message.startswith("dataset.images_url: "), message
    assert "topsecret" not in message
    assert [p.name for p in dest.iterdir()] == []  # no partial file left behind
    return message


def test_a_byte_every_59_s_meets_the_deadline(srv: DataServer, tmp_path: Path) -> None:
    """Each byte comes under the read timeout, so only an overall deadline stops it."""
    url = _trickle(srv, 59.0)
    limits = DownloadLimits(retry_wait_s=0, deadline_s=600, min_rate=0)
    message = _refused(url, tmp_path, limits, clock=srv.clock)
    assert f"the download from {srv.url[7:]}/t.zip did not finish within 10 min" in message
    assert re.search(r"received \d+ B of 2\.0 KiB in \d+ min\)", message), message
    assert "use a faster or more reliable host, or a smaller dataset" in message
    assert len(srv.gets("/t.zip")) == 1


def test_the_deadline_covers_every_try_and_wait(tmp_path: Path) -> None:
    now = [0.0]
    with DataServer() as srv:
        srv.status["/flaky"] = 503
        limits = DownloadLimits(attempts=100, max_tries=100, retry_wait_s=60, deadline_s=100)
        message = _refused(
            srv.url + "/flaky?sig=topsecret",
            tmp_path,
            limits,
            clock=lambda: now[0],
            sleep=lambda s: now.__setitem__(0, now[0] + s),
        )
        assert "did not finish within 100 s (received 0 B of an unknown size in 2 min)" in message
        assert len(srv.gets("/flaky")) == 2  # at 0 s and 60 s: at 120 s it is too late


def test_a_slow_average_is_refused_once_the_grace_passed(srv: DataServer, tmp_path: Path) -> None:
    url = _trickle(srv, 10.0)  # 0.1 B/s
    limits = DownloadLimits(retry_wait_s=0)  # 64 KiB/s on average, judged after 120 s
    message = _refused(url, tmp_path, limits, clock=srv.clock)
    assert re.search(r"averaged \d\.\d B/s, under the 64\.0 KiB/s minimum", message), message
    assert re.search(r"received \d+ B of 2\.0 KiB in \d+ (s|min)\)", message), message
    assert "use a faster or more reliable host, or a smaller dataset" in message


def test_one_byte_per_range_request_stops_at_max_tries(srv: DataServer, tmp_path: Path) -> None:
    """Every try makes progress, so the no-progress counter never trips: total tries do."""
    srv.files["/t.zip"] = SLOW[:50]
    srv.drop_after["/t.zip"] = [1] * 100
    limits = DownloadLimits(attempts=3, retry_wait_s=0, max_tries=5)
    message = _refused(srv.url + "/t.zip?sig=topsecret", tmp_path, limits)
    assert "did not finish after 5 tries (received 5 B of 50 B in " in message, message
    assert srv.gets("/t.zip") == [None, "bytes=1-", "bytes=2-", "bytes=3-", "bytes=4-"]


# --- a full disk --------------------------------------------------------------------------------


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT])
def test_a_full_disk_is_a_download_failure(
    srv: DataServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    fill_volume(
        monkeypatch, code, lambda path, mode: path.name.endswith(".part") and "a" in mode, 0
    )
    message = _refused(srv.url + "/d.zip?sig=topsecret", tmp_path, FAST)
    assert "the volume is full" in message, message
    assert "free space, or use a smaller dataset" in message


# --- hf:// sized before any byte -----------------------------------------------------------------


def test_hf_dataset_over_the_cap_is_refused_before_downloading(tmp_path: Path) -> None:
    with FakeHub() as hub:
        hub.add_repo("me/big", {"a.zip": DATA, "b/c.zip": DATA}, repo_type="dataset")
        small = DownloadLimits(max_bytes=len(DATA))
        with pytest.raises(DownloadFailed) as exc:
            download(
                "hf://datasets/me/big",
                tmp_path,
                field="dataset.images_url",
                name="images",
                limits=small,
                hub_endpoint=hub.url,
            )
        assert str(exc.value).startswith("dataset.images_url: the dataset is larger than the ")
        assert re.search(r"limit \(39\d\.\d KiB\); split it", str(exc.value)), str(exc.value)
        assert hub.downloads() == 0
    assert not (tmp_path / "images").exists()


@pytest.mark.parametrize("path", ["regular", "xet"])
def test_hf_dataset_that_fails_midway_is_removed(tmp_path: Path, path: str) -> None:
    """On the Hub's regular path the resolve GET fails; on the Xet path (how the Hub stores
    archives) the CAS does, and hf_xet raises a RuntimeError of its own."""
    with FakeHub(xet=path == "xet") as hub:
        hub.add_repo("me/half", {"a.zip": DATA, "b.zip": DATA}, repo_type="dataset")
        if path == "xet":
            hub.cas.fail(403, method="GET", path_contains="/v1/reconstructions/", times=10)
        else:
            hub.fail(403, method="GET", path_contains="b.zip", times=10)
        with pytest.raises(DownloadFailed) as exc:
            download(
                "hf://datasets/me/half",
                tmp_path,
                field="dataset.images_url",
                name="images",
                hub_endpoint=hub.url,
            )
        assert str(exc.value).startswith("dataset.images_url: ")
    assert not (tmp_path / "images").exists()


def test_hf_dataset_on_a_full_disk_is_a_download_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # huggingface_hub's temp file, on the Hub's regular path: hf_xet (the Xet path) writes from
    # Rust, where a Python-level full volume cannot reach it.
    fill_volume(
        monkeypatch,
        errno.ENOSPC,
        lambda path, mode: path.name.endswith(".incomplete") and written(mode),
        0,
    )
    with FakeHub(xet=False) as hub:
        hub.add_repo("me/faces", {"set.zip": DATA}, repo_type="dataset")
        with pytest.raises(DownloadFailed) as exc:
            download(
                "hf://datasets/me/faces",
                tmp_path,
                field="dataset.images_url",
                name="images",
                hub_endpoint=hub.url,
            )
    assert str(exc.value) == (
        "dataset.images_url: the volume is full while downloading me/faces from the Hub; free "
        "space, or use a smaller dataset"
    )
    assert not (tmp_path / "images").exists()
