"""The fake Hub with Xet on, driven by the real huggingface_hub + hf_xet clients."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from itertools import islice
from pathlib import Path

import pytest
from huggingface_hub import CommitOperationAdd, HfApi, RepoFile, hf_hub_download
from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError
from huggingface_hub.utils._pagination import paginate

from tests.support.fakehub import FakeHub, Token

TOKEN = "hf_alice"
LORA = random.Random(11).randbytes(1_500_000)  # ~20 chunks of the spec's CDC


@pytest.fixture
def hub() -> Iterator[FakeHub]:
    with FakeHub() as running:
        running.tokens[TOKEN] = Token(user="alice")
        yield running


@pytest.fixture
def api(hub: FakeHub) -> HfApi:
    return HfApi(endpoint=hub.url, token=TOKEN)


def test_a_lora_goes_up_and_down_through_xet(hub: FakeHub, api: HfApi, tmp_path: Path) -> None:
    api.create_repo("alice/lora", private=True)
    api.upload_file(path_or_fileobj=LORA, path_in_repo="lora.safetensors", repo_id="alice/lora")
    assert hub.count("GET", "/api/models/alice/lora/xet-write-token/main") == 1
    assert hub.cas.count("POST", "/v1/xorbs/default/") >= 1
    assert hub.cas.count("POST", "/v1/shards") == 1
    assert hub.xet_paths("alice/lora") == {"lora.safetensors": hashlib.sha256(LORA).hexdigest()}
    assert hub.files("alice/lora")["lora.safetensors"] == LORA
    (entry,) = api.list_repo_tree("alice/lora")
    assert isinstance(entry, RepoFile)
    assert entry.lfs is not None
    assert entry.lfs.sha256 == hashlib.sha256(LORA).hexdigest()
    assert entry.xet_hash is not None
    assert len(entry.xet_hash) == 64
    (info,) = api.get_paths_info("alice/lora", ["lora.safetensors", "missing.bin"])
    assert isinstance(info, RepoFile)
    assert info.xet_hash == entry.xet_hash

    got = hf_hub_download(
        "alice/lora", "lora.safetensors", endpoint=hub.url, token=TOKEN, cache_dir=tmp_path
    )
    assert Path(got).read_bytes() == LORA
    assert hub.count("HEAD", "/alice/lora/resolve/") == 1
    assert hub.count("GET", "/xet-read-token/") == 1
    assert hub.cas.count("GET", "/v1/reconstructions/") == 1
    assert hub.cas.count("GET", "/v1/fetch/") >= 1
    assert hub.count("GET", "/resolve/") == 0  # the Hub never served the bytes itself


def test_same_content_again_is_no_commit(hub: FakeHub, api: HfApi) -> None:
    api.create_repo("alice/lora")
    api.upload_file(path_or_fileobj=LORA, path_in_repo="a.safetensors", repo_id="alice/lora")
    commits = hub.count("POST", "/commit/")
    op = CommitOperationAdd(path_in_repo="a.safetensors", path_or_fileobj=LORA)
    api.create_commit("alice/lora", [op], commit_message="again")  # preupload's sha256 matches
    assert hub.count("POST", "/commit/") == commits


def test_a_commit_naming_an_object_the_cas_lacks_fails(hub: FakeHub, api: HfApi) -> None:
    api.create_repo("alice/lora")
    op = CommitOperationAdd(path_in_repo="a.safetensors", path_or_fileobj=LORA)
    api.preupload_lfs_files("alice/lora", [op])
    hub.cas.store.by_sha256.clear()  # as if the CAS never kept it
    with pytest.raises(HfHubHTTPError) as exc:
        api.create_commit("alice/lora", [op], commit_message="x")
    assert exc.value.response.status_code == 400
    assert "was not uploaded" in str(exc.value)
    assert "a.safetensors" not in hub.files("alice/lora")


def test_preupload_follows_the_hubs_rule(hub: FakeHub, api: HfApi) -> None:
    hub.add_repo("alice/m", {".gitattributes": b"*.dat filter=lfs diff=lfs merge=lfs -text\n"})
    ops = {
        "notes.txt": b"plain text",
        "w.dat": b"text but marked lfs",
        "blob.txt": b"\x00\x01binary",
        "model.safetensors": b"text named like weights",  # .gitattributes overrides defaults
    }
    api.create_commit(
        "alice/m",
        [CommitOperationAdd(path_in_repo=p, path_or_fileobj=d) for p, d in ops.items()],
        commit_message="mixed",
    )
    assert sorted(hub.xet_paths("alice/m")) == ["blob.txt", "w.dat"]
    assert {p: hub.files("alice/m")[p] for p in ops} == ops


def test_seeded_weights_download_through_xet(hub: FakeHub, tmp_path: Path) -> None:
    weights = random.Random(5).randbytes(300_000)
    hub.add_repo("org/base", {"unet/model.safetensors": weights, "unet/config.json": b"{}"})
    assert sorted(hub.xet_paths("org/base")) == ["unet/model.safetensors"]
    for name, data in (("unet/model.safetensors", weights), ("unet/config.json", b"{}")):
        got = hf_hub_download("org/base", name, endpoint=hub.url, cache_dir=tmp_path)
        assert Path(got).read_bytes() == data
    assert hub.cas.count("GET", "/v1/reconstructions/") == 1
    assert hub.count("GET", "/resolve/") == 1  # config.json, a regular file
    assert hub.downloads() == 2


def test_xet_off_keeps_every_file_regular(tmp_path: Path) -> None:
    with FakeHub(xet=False) as hub:
        api = HfApi(endpoint=hub.url, token=TOKEN)
        api.create_repo("me/lora")
        api.upload_file(path_or_fileobj=LORA, path_in_repo="a.safetensors", repo_id="me/lora")
        assert hub.xet_paths("me/lora") == {}
        assert hub.count("GET", "/xet-write-token/") == 0
        with pytest.raises(AssertionError, match="no CAS"):
            _ = hub.cas


def test_a_private_repo_is_hidden_from_others(hub: FakeHub, tmp_path: Path) -> None:
    hub.add_repo("alice/secret", {"a.safetensors": LORA[:50_000]}, private=True)
    hub.tokens["hf_bob"] = Token(user="bob")

    def download(token: str | bool) -> str:
        return hf_hub_download(
            "alice/secret", "a.safetensors", endpoint=hub.url, token=token, cache_dir=tmp_path
        )

    for token in (False, "hf_bob"):
        with pytest.raises(RepositoryNotFoundError) as exc:
            download(token)
        assert exc.value.response.status_code == 401
        with pytest.raises(RepositoryNotFoundError):
            HfApi(endpoint=hub.url, token=token).model_info("alice/secret")
    assert hub.count("GET", "/xet-read-token/") == 0
    assert Path(download(TOKEN)).read_bytes() == LORA[:50_000]
    assert HfApi(endpoint=hub.url, token=TOKEN).model_info("alice/secret").private is True
    bob = HfApi(endpoint=hub.url, token="hf_bob")
    with pytest.raises(RepositoryNotFoundError):
        bob.upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id="alice/secret")


def test_create_records_visibility_and_a_409_keeps_it(hub: FakeHub, api: HfApi) -> None:
    api.create_repo("alice/pub", private=False)
    api.create_repo("alice/pub", private=True, exist_ok=True)  # the 409: nothing changes
    assert api.model_info("alice/pub").private is False
    api.create_repo("alice/priv", private=True)
    assert api.model_info("alice/priv").private is True


def test_commits_page_and_the_next_page_is_fetched_only_when_read(hub: FakeHub, api: HfApi) -> None:
    hub.add_repo("alice/log", {"a.txt": b"0"})
    hub.commits_page_size = 3
    for i in range(1, 5):
        api.upload_file(path_or_fileobj=b"%d" % i, path_in_repo="a.txt", repo_id="alice/log")
    url = f"{hub.url}/api/models/alice/log/commits/main"
    headers = {"authorization": f"Bearer {TOKEN}"}
    before = hub.count("GET", "/commits/")
    newest = list(islice(paginate(url, params={}, headers=headers), 3))
    assert hub.count("GET", "/commits/") == before + 1
    assert len(newest) == 3
    everything = api.list_repo_commits("alice/log")
    assert hub.count("GET", "/commits/") == before + 1 + 2
    assert [c.commit_id for c in everything[:3]] == [c["id"] for c in newest]
    assert len(everything) == 5


def test_faults_on_the_xet_routes_reach_hf_xet(hub: FakeHub, api: HfApi) -> None:
    api.create_repo("alice/lora")
    hub.fail(403, method="GET", path_contains="xet-write-token")
    with pytest.raises(ConnectionError, match="403 Forbidden"):  # hf_xet's error, not the Hub's
        api.upload_file(path_or_fileobj=LORA[:100_000], path_in_repo="a.bin", repo_id="alice/lora")
    assert hub.cas.count("POST", "/v1/xorbs/") == 0
    assert hub.count("POST", "/commit/") == 0
    hub.cas.fail(503, method="POST", path_contains="/v1/xorbs/")  # hf_xet retries this itself
    api.upload_file(path_or_fileobj=LORA[:100_000], path_in_repo="a.bin", repo_id="alice/lora")
    assert hub.cas.count("POST", "/v1/xorbs/") == 2
    assert hub.files("alice/lora")["a.bin"] == LORA[:100_000]
