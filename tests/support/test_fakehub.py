"""The loopback fake Hub, driven by the real huggingface_hub client."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest
from huggingface_hub import CommitOperationAdd, HfApi, hf_hub_download
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
)

from tests.support.fakehub import FakeHub, git_oid

TOKEN = "hf_writer"


@pytest.fixture
def hub() -> Iterator[FakeHub]:
    with FakeHub() as running:
        yield running


@pytest.fixture
def api(hub: FakeHub) -> HfApi:
    return HfApi(endpoint=hub.url, token=TOKEN)


def _add(path: str, data: bytes) -> CommitOperationAdd:
    return CommitOperationAdd(path_in_repo=path, path_or_fileobj=data)


def test_create_repo_and_exist_ok(hub: FakeHub, api: HfApi) -> None:
    url = api.create_repo("me/job-log", repo_type="dataset")
    assert url == f"{hub.url}/datasets/me/job-log"
    assert api.create_repo("me/job-log", repo_type="dataset", exist_ok=True) == url
    with pytest.raises(HfHubHTTPError) as exc:
        api.create_repo("me/job-log", repo_type="dataset")  # without exist_ok: the 409
    assert exc.value.response.status_code == 409
    assert hub.count("POST", "/api/repos/create") == 3


def test_commit_list_download_and_noop(hub: FakeHub, api: HfApi, tmp_path: Path) -> None:
    api.create_repo("me/log", repo_type="dataset")
    info = api.create_commit(
        "me/log",
        [_add("UPDATES/0001.json", b'{"status": "STARTING"}'), _add("b.txt", b"hi")],
        commit_message="first",
        repo_type="dataset",
    )
    assert hub.files("me/log", repo_type="dataset")["b.txt"] == b"hi"
    assert info.oid == hub.repos[("dataset", "me/log")].branches["main"]
    assert sorted(api.list_repo_files("me/log", repo_type="dataset")) == [
        "UPDATES/0001.json",
        "b.txt",
    ]
    got = hf_hub_download(
        "me/log", "UPDATES/0001.json", repo_type="dataset", endpoint=hub.url, cache_dir=tmp_path
    )
    assert Path(got).read_bytes() == b'{"status": "STARTING"}'
    # Same content again: the client compares our git oids and sends no commit.
    commits = hub.count("POST", "/commit/")
    api.create_commit("me/log", [_add("b.txt", b"hi")], commit_message="x", repo_type="dataset")
    assert hub.count("POST", "/commit/") == commits
    assert all(r.auth for r in hub.requests if r.method == "POST")


def test_stale_parent_commit_is_412(hub: FakeHub, api: HfApi) -> None:
    first = hub.add_repo("me/m", {"a": b"1"})
    api.create_commit("me/m", [_add("a", b"2")], commit_message="move head", parent_commit=first)
    with pytest.raises(HfHubHTTPError) as exc:
        api.create_commit("me/m", [_add("a", b"3")], commit_message="stale", parent_commit=first)
    assert exc.value.response.status_code == 412
    assert hub.files("me/m")["a"] == b"2"


@pytest.mark.parametrize("status", [409, 429, 503])
def test_injected_commit_fault_reaches_the_client(hub: FakeHub, api: HfApi, status: int) -> None:
    hub.add_repo("me/m", {"a": b"1"})
    hub.fail(status, method="POST", path_contains="/commit/")
    with pytest.raises(HfHubHTTPError) as exc:  # the client never retries the commit POST
        api.create_commit("me/m", [_add("a", b"2")], commit_message="x")
    assert exc.value.response.status_code == status
    assert hub.files("me/m")["a"] == b"1"
    api.create_commit("me/m", [_add("a", b"2")], commit_message="x")  # the fault was used up
    assert hub.files("me/m")["a"] == b"2"


def test_tree_listing(hub: FakeHub, api: HfApi) -> None:
    hub.add_repo("o/m", {"a/b/c.bin": b"xyz", "a/d.txt": b"", "top.md": b"#"})
    flat = {e.path for e in api.list_repo_tree("o/m")}
    assert flat == {"a", "top.md"}
    deep = {e.path: getattr(e, "size", None) for e in api.list_repo_tree("o/m", recursive=True)}
    assert deep == {"a": None, "a/b": None, "a/b/c.bin": 3, "a/d.txt": 0, "top.md": 1}
    under = {e.path for e in api.list_repo_tree("o/m", path_in_repo="a")}
    assert under == {"a/b", "a/d.txt"}


def test_resolve_headers_and_range(hub: FakeHub) -> None:
    sha = hub.add_repo("o/m", {"w.txt": b"0123456789"})
    url = f"{hub.url}/o/m/resolve/main/w.txt"
    head = httpx2.head(url)
    assert head.headers["X-Repo-Commit"] == sha
    assert head.headers["ETag"] == f'"{git_oid(b"0123456789")}"'
    assert head.headers["Content-Length"] == "10"
    part = httpx2.get(url, headers={"Range": "bytes=3-5"})
    assert part.status_code == 206
    assert part.content == b"345"
    assert part.headers["Content-Range"] == "bytes 3-5/10"
    assert httpx2.get(url, headers={"Range": "bytes=7-"}).content == b"789"


def test_error_codes_map_to_client_exceptions(hub: FakeHub, tmp_path: Path) -> None:
    hub.add_repo("o/m", {"a": b"1"})
    hub.add_repo("o/gated", {"a": b"1"}, gated_tokens={"hf_ok"})

    def download(repo_id: str, filename: str, token: str | bool = False) -> str:
        return hf_hub_download(repo_id, filename, token=token, endpoint=hub.url, cache_dir=tmp_path)

    with pytest.raises(RemoteEntryNotFoundError):
        download("o/m", "missing.bin")
    with pytest.raises(RepositoryNotFoundError):
        HfApi(endpoint=hub.url).model_info("o/nothing")
    with pytest.raises(GatedRepoError) as no_token:
        download("o/gated", "a")
    assert no_token.value.response.status_code == 401
    with pytest.raises(GatedRepoError) as wrong:
        download("o/gated", "a", "hf_bad")
    assert wrong.value.response.status_code == 403
    ok = download("o/gated", "a", "hf_ok")
    assert Path(ok).read_bytes() == b"1"
    assert HfApi(endpoint=hub.url).model_info("o/gated").gated == "manual"
