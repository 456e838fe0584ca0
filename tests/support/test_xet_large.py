"""Files past one xorb (64 MiB of chunk data): the real client's full xorbs are taken, and a
seeded file spans several xorbs, read back whole through the real client."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from huggingface_hub import HfApi, hf_hub_download

from tests.support.fakehub import FakeHub, Token
from tests.support.xet import xorb
from tests.support.xet.store import Store

TOKEN = "hf_alice"


def test_the_clients_full_xorbs_of_random_bytes_are_taken(tmp_path: Path) -> None:
    """hf_xet fills a xorb with 64 MiB of chunk data; stored raw, it serializes to a little
    more than 64 MiB (headers, footer), which the CAS must take as the Hub does."""
    weights = random.Random(5).randbytes(70 * 1024 * 1024)
    with FakeHub() as hub:
        hub.tokens[TOKEN] = Token(user="alice")
        api = HfApi(endpoint=hub.url, token=TOKEN)
        api.create_repo("alice/big")
        api.upload_file(path_or_fileobj=weights, path_in_repo="w.safetensors", repo_id="alice/big")
        assert hub.cas.count("POST", "/v1/xorbs/default/") >= 2
        got = hf_hub_download(
            "alice/big", "w.safetensors", endpoint=hub.url, token=TOKEN, cache_dir=tmp_path
        )
        assert Path(got).read_bytes() == weights


def test_a_seeded_file_spans_several_xorbs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(xorb, "MAX_XORB_BYTES", 200_000)  # a small cut, so the file is small
    data = random.Random(6).randbytes(900_000)
    stored = Store().ingest(data)
    assert len({t.xorb_hash for t in stored.terms}) >= 4
    with FakeHub() as hub:
        hub.add_repo("org/base", {"model.safetensors": data})
        got = hf_hub_download("org/base", "model.safetensors", endpoint=hub.url, cache_dir=tmp_path)
        assert Path(got).read_bytes() == data
        assert hub.cas.count("GET", "/v1/reconstructions/") == 1
