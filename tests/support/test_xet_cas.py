"""The loopback CAS's own checks, driven over HTTP as a client would (spec: CAS API)."""

from __future__ import annotations

import functools
import hashlib
import random
from collections.abc import Iterator

import httpx2
import pytest

from tests.support.xet import FakeXetCas, chunking, hashing, shard, xorb

DATA = random.Random(7).randbytes(400_000)
HTTP = httpx2.Client()  # one client: building one per call costs ~0.1 s


@pytest.fixture
def cas() -> Iterator[FakeXetCas]:
    with FakeXetCas() as running:
        yield running


def _auth(cas: FakeXetCas, scope: str = "write", ttl_s: int | None = None) -> dict[str, str]:
    token, _ = cas.issue(scope, "model/me/m", ttl_s)
    return {"Authorization": f"Bearer {token}"}


@functools.cache
def _xorb(data: bytes = DATA) -> tuple[str, bytes, list[bytes]]:
    pieces = chunking.chunks(data)
    raw = xorb.build(pieces, xorb.LZ4)
    nodes = [(hashing.chunk_hash(p), len(p)) for p in pieces]
    return hashing.to_hex(hashing.xorb_hash(nodes)), raw, pieces


def _shard(pieces: list[bytes], xorb_hex: str, **change: object) -> bytes:
    hashes = [hashing.chunk_hash(p) for p in pieces]
    info = shard.FileInfo(
        file_hash=hashing.file_hash([(h, len(p)) for h, p in zip(hashes, pieces, strict=True)]),
        terms=(shard.Term(hashing.from_hex(xorb_hex), len(DATA), 0, len(pieces)),),
        verification=(hashing.verification_hash(hashes),),
        sha256=hashlib.sha256(DATA).hexdigest(),
    )
    fields = {**info.__dict__, **change}
    return shard.build([shard.FileInfo(**fields)])


def test_upload_then_reconstruct_by_range(cas: FakeXetCas) -> None:
    name, raw, pieces = _xorb()
    url = f"{cas.url}/v1/xorbs/default/{name}"
    first = HTTP.post(url, content=raw, headers=_auth(cas))
    assert first.json() == {"was_inserted": True}
    assert HTTP.post(url, content=raw, headers=_auth(cas)).json() == {"was_inserted": False}
    put = HTTP.post(f"{cas.url}/v1/shards", content=_shard(pieces, name), headers=_auth(cas))
    assert put.status_code == 200
    assert put.json() == {"result": 1}
    file_id = hashing.to_hex(hashing.file_hash([(hashing.chunk_hash(p), len(p)) for p in pieces]))
    start = len(pieces[0]) + 5  # inside the second chunk
    got = HTTP.get(
        f"{cas.url}/v1/reconstructions/{file_id}",
        headers={**_auth(cas, "read"), "Range": f"bytes={start}-{start + 99}"},
    ).json()
    assert got["offset_into_first_range"] == 5
    (term,) = got["terms"]
    assert term["range"] == {"start": 1, "end": 2}
    (fetch,) = got["fetch_info"][name]
    span = fetch["url_range"]
    body = HTTP.get(fetch["url"], headers={"Range": f"bytes={span['start']}-{span['end']}"})
    assert body.status_code == 206
    chunk = xorb.parse(body.content).chunks[0].data
    assert chunk[5:105] == DATA[start : start + 100]
    unsigned = HTTP.get(fetch["url"].split("?")[0])
    assert unsigned.status_code == 403
    past = HTTP.get(
        f"{cas.url}/v1/reconstructions/{file_id}",
        headers={**_auth(cas, "read"), "Range": f"bytes={len(DATA)}-{len(DATA) + 9}"},
    )
    assert past.status_code == 416


def test_a_xorb_whose_hash_is_not_its_chunks_is_refused(cas: FakeXetCas) -> None:
    name, raw, _ = _xorb()
    other, _, _ = _xorb(DATA[:-1])
    wrong = HTTP.post(f"{cas.url}/v1/xorbs/default/{other}", content=raw, headers=_auth(cas))
    assert wrong.status_code == 400
    assert "xorb hash mismatch" in wrong.json()["error"]
    tampered = bytearray(raw)
    tampered[-1] ^= 0xFF  # one byte of the last chunk's compressed data
    bad = HTTP.post(
        f"{cas.url}/v1/xorbs/default/{name}", content=bytes(tampered), headers=_auth(cas)
    )
    assert bad.status_code == 400
    assert cas.store.xorbs == {}


def test_tokens_are_checked(cas: FakeXetCas) -> None:
    name, raw, _ = _xorb()
    url = f"{cas.url}/v1/xorbs/default/{name}"
    assert HTTP.post(url, content=raw).status_code == 401
    assert (
        HTTP.post(url, content=raw, headers={"Authorization": "Bearer made-up"}).status_code == 401
    )
    assert HTTP.post(url, content=raw, headers=_auth(cas, "read")).status_code == 403
    assert HTTP.post(url, content=raw, headers=_auth(cas, ttl_s=-1)).status_code == 401
    held = _auth(cas)
    cas.expire_tokens()
    assert HTTP.post(url, content=raw, headers=held).status_code == 401
    assert HTTP.post(url, content=raw, headers=_auth(cas)).status_code == 200


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"file_hash": bytes(32)}, "file hash mismatch"),
        ({"verification": (bytes(32),)}, "verification hash does not match"),
        ({"sha256": "0" * 64}, "declared sha256"),
    ],
)
def test_a_shard_must_agree_with_the_xorbs(
    cas: FakeXetCas, change: dict[str, object], message: str
) -> None:
    name, raw, pieces = _xorb()
    HTTP.post(f"{cas.url}/v1/xorbs/default/{name}", content=raw, headers=_auth(cas))
    bad = HTTP.post(
        f"{cas.url}/v1/shards", content=_shard(pieces, name, **change), headers=_auth(cas)
    )
    assert bad.status_code == 400
    assert message in bad.json()["error"]
    assert cas.store.files == {}


def test_a_shard_naming_an_unknown_xorb_is_refused(cas: FakeXetCas) -> None:
    name, _, pieces = _xorb()  # never uploaded
    bad = HTTP.post(f"{cas.url}/v1/shards", content=_shard(pieces, name), headers=_auth(cas))
    assert bad.status_code == 400
    assert "unknown xorb" in bad.json()["error"]
    garbage = HTTP.post(f"{cas.url}/v1/shards", content=b"not a shard", headers=_auth(cas))
    assert garbage.status_code == 400


def test_faults_and_counts(cas: FakeXetCas) -> None:
    name, raw, _ = _xorb()
    url = f"{cas.url}/v1/xorbs/default/{name}"
    cas.fail(503, method="POST", path_contains="/v1/xorbs/", headers={"Retry-After": "1"})
    failed = HTTP.post(url, content=raw, headers=_auth(cas))
    assert failed.status_code == 503
    assert failed.headers["Retry-After"] == "1"
    assert cas.store.xorbs == {}
    cas.drop(method="POST", path_contains="/v1/xorbs/")
    with pytest.raises(httpx2.RemoteProtocolError):
        HTTP.post(url, content=raw, headers=_auth(cas))
    assert len(cas.store.xorbs) == 1  # applied, answer lost
    assert cas.count("POST", "/v1/xorbs/") == 2
    dedupe = HTTP.get(f"{cas.url}/v1/chunks/default-merkledb/{name}", headers=_auth(cas, "read"))
    assert dedupe.status_code == 404
