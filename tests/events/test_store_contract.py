"""The store contract, run against the JSONL file and the in-memory backend alike."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from events.errors import CorruptLog, StaleLease
from events.lease import FileLease
from events.model import GENESIS_HASH, canonical_json, hash_body
from events.redact import MASK
from events.store import EventStore
from tests.support.helpers import raw_lines, replace_lines

SECRET = "hf_SuperSecretTokenValue1234567890"


def test_append_assigns_seq_and_chain(store: EventStore) -> None:
    log = store.open("job-1")
    first = log.append(type="INITIALIZED", status="INITIALIZED", attempt=1, data={"a": 1})
    second = log.append(type="STARTING", status="STARTING", attempt=1, data={})
    assert (first.seq, second.seq) == (1, 2)
    assert first.prev_hash == GENESIS_HASH
    assert second.prev_hash == first.hash
    assert first.hash == hash_body(canonical_json(first.body()))
    assert first.timestamp.tzinfo is not None
    assert first.timestamp.utcoffset() == timedelta(0)


def test_reopen_reads_back_the_same_events(store: EventStore) -> None:
    log = store.open("job-1")
    written = [
        log.append(type="PROGRESS", status="TRAINING", attempt=1, data={"step": i, "ü": "ñ\u2028"})
        for i in range(5)
    ]
    assert store.read("job-1") == written
    again = store.open("job-1")
    assert again.events == written
    nxt = again.append(type="PROGRESS", status="TRAINING", attempt=2, data={})
    assert nxt.seq == 6
    assert nxt.prev_hash == written[-1].hash


def test_jobs_are_separate(store: EventStore) -> None:
    store.open("a").append(type="INITIALIZED", status="INITIALIZED", attempt=1, data={})
    store.open("b").append(type="INITIALIZED", status="INITIALIZED", attempt=1, data={})
    assert store.job_ids() == ["a", "b"]
    assert [e.seq for e in store.read("b")] == [1]
    assert store.read("never") == []


@pytest.mark.parametrize("bad", ["", "..", "a/b", "../x", "x" * 129, "a b", "é"])
def test_job_ids_that_could_escape_are_refused(store: EventStore, bad: str) -> None:
    with pytest.raises(ValueError, match="job id"):
        store.open(bad)


def test_data_is_redacted_at_the_store_boundary(store: EventStore) -> None:
    log = store.open("job-1", secrets=[SECRET, "s3-secret-value"])
    event = log.append(
        type="ERROR",
        status="ERROR",
        attempt=1,
        data={
            "error": f"401 Unauthorized for https://hub/api?t={SECRET}",
            "nested": [{"access_key": "AKIAABCDEFGHIJKLMNOP"}, "plain s3-secret-value here"],
            "huggingface_token": "anything",
            "secret_key": "x",
            "password": "hunter22",
            "key_prefix": "lora-outputs",
            "apiKey": "abc",
            "shape": "a token that looks like hf_abcdefghijklmnopqrstuvwxyz0123 leaked",
        },
    )
    stored = "".join(raw_lines(store, "job-1"))
    for value in (SECRET, "s3-secret-value", "AKIAABCDEFGHIJKLMNOP", "hunter22", "hf_abcdefghij"):
        assert value not in stored
        assert value not in json.dumps(event.data)
    data = event.data
    assert data["huggingface_token"] == MASK
    assert data["secret_key"] == MASK
    assert data["apiKey"] == MASK
    assert data["key_prefix"] == "lora-outputs"  # not a credential
    assert data["error"] == f"401 Unauthorized for https://hub/api?t={MASK}"


def test_stale_fence_refuses_and_appends_nothing(store: EventStore, tmp_path) -> None:  # type: ignore[no-untyped-def]
    clock = [1000.0]
    first = FileLease(tmp_path / "job-1", owner="first", ttl_s=10, clock=lambda: clock[0])
    first.acquire()
    log = store.open("job-1", fence=first)
    log.append(type="INITIALIZED", status="INITIALIZED", attempt=1, data={})
    clock[0] += 11  # first's lease expires; a second worker takes the job over
    second = FileLease(tmp_path / "job-1", owner="second", ttl_s=10, clock=lambda: clock[0])
    assert second.acquire() == first.token + 1  # type: ignore[operator]
    with pytest.raises(StaleLease, match="lost its lease"):
        log.append(type="STARTING", status="STARTING", attempt=1, data={})
    assert len(store.read("job-1")) == 1
    taken = store.open("job-1", fence=second)
    assert taken.append(type="RESUMED", status="RESUMED", attempt=2, data={}).seq == 2


def test_damaged_middle_line_is_corruption_with_its_line_number(store: EventStore) -> None:
    log = store.open("job-1")
    for i in range(4):
        log.append(type="PROGRESS", status="TRAINING", attempt=1, data={"step": i})
    lines = raw_lines(store, "job-1")
    lines[1] = lines[1].replace('"step":1', '"step":7')
    replace_lines(store, "job-1", lines)
    with pytest.raises(CorruptLog, match="line 2: hash does not match") as info:
        store.read("job-1")
    assert info.value.line_no == 2


def test_a_removed_line_breaks_the_chain(store: EventStore) -> None:
    log = store.open("job-1")
    for i in range(3):
        log.append(type="PROGRESS", status="TRAINING", attempt=1, data={"step": i})
    lines = raw_lines(store, "job-1")
    replace_lines(store, "job-1", [lines[0], lines[2]])
    with pytest.raises(CorruptLog, match="line 2: seq 3, expected 2"):
        store.read("job-1")


def test_torn_tail_is_dropped_and_the_chain_continues(store: EventStore) -> None:
    log = store.open("job-1")
    kept = [
        log.append(type="PROGRESS", status="TRAINING", attempt=1, data={"step": i})
        for i in range(3)
    ]
    lines = raw_lines(store, "job-1")
    lines.append(lines[-1][: len(lines[-1]) // 2])  # a crash in the middle of a fourth write
    replace_lines(store, "job-1", lines)
    assert store.read("job-1") == kept
    reopened = store.open("job-1")
    nxt = reopened.append(type="PROGRESS", status="TRAINING", attempt=1, data={"step": 3})
    assert nxt.seq == 4
    assert nxt.prev_hash == kept[-1].hash
    assert store.read("job-1") == [*kept, nxt]
    assert all(line.endswith("\n") for line in raw_lines(store, "job-1"))


def test_non_json_and_foreign_lines_are_corruption(store: EventStore) -> None:
    log = store.open("job-1")
    log.append(type="INITIALIZED", status="INITIALIZED", attempt=1, data={})
    lines = raw_lines(store, "job-1")
    replace_lines(store, "job-1", ["not json at all\n", *lines])
    with pytest.raises(CorruptLog, match="line 1: not a valid event"):
        store.read("job-1")


def test_a_failing_observer_does_not_undo_a_durable_append(store: EventStore) -> None:
    log = store.open("job-1")
    seen: list[int] = []

    def broken(event: object) -> None:
        raise RuntimeError("projection bug")

    log.observers.extend([broken, lambda e: seen.append(e.seq)])
    event = log.append(type="INITIALIZED", status="INITIALIZED", attempt=1, data={})
    assert seen == [1]
    assert store.read("job-1") == [event]


def test_an_event_in_memory_equals_its_stored_form_key_order_included(store: EventStore) -> None:
    log = store.open("job-1")
    event = log.append(
        type="PROGRESS", status="TRAINING", attempt=1, data={"z": 1, "a": {"y": 2, "b": 3}}
    )
    (again,) = store.read("job-1")
    assert list(event.data) == list(again.data) == ["a", "z"]
    assert list(event.data["a"]) == ["b", "y"]
    assert event.to_line() == again.to_line()
