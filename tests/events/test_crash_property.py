"""A crash can cut the file anywhere inside the last line; any other damage is corruption."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from events.audit import audit
from events.errors import CorruptLog
from events.store import EventStore

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**53), 2**53),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
payloads = st.dictionaries(
    st.text(alphabet="abcdefghij_", min_size=1, max_size=8).filter(lambda k: "key" not in k),
    json_scalars,
    max_size=4,
)


def _write(root: Path, datas: list[dict[str, Any]]) -> tuple[EventStore, Path, bytes]:
    store = EventStore.on_disk(root)
    log = store.open("job")
    log.append(type="INITIALIZED", status="INITIALIZED", attempt=1, data={})
    for data in datas:
        log.append(type="PROGRESS", status="INITIALIZED", attempt=1, data=data)
    path = root / "jobs" / "job" / "events.jsonl"
    return store, path, path.read_bytes()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(datas=st.lists(payloads, min_size=0, max_size=6), cut=st.floats(0, 1, exclude_max=True))
def test_cut_inside_last_line_keeps_exactly_the_earlier_events(
    datas: list[dict[str, Any]], cut: float
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store, path, blob = _write(Path(tmp), datas)
        full = store.read("job")
        last_start = blob.rstrip(b"\n").rfind(b"\n") + 1
        offset = last_start + int(cut * (len(blob) - last_start))  # in [start, len-1]: torn
        path.write_bytes(blob[:offset])
        events = store.read("job")
        assert events == full[:-1]
        log = store.open("job")
        nxt = log.append(type="PROGRESS", status="INITIALIZED", attempt=1, data={"x": True})
        assert nxt.seq == len(full)
        assert nxt.prev_hash == (events[-1].hash if events else "0" * 64)
        reread = store.read("job")
        assert reread == [*events, nxt]
        if reread[0].type == "INITIALIZED":
            assert audit(reread).ok


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    datas=st.lists(payloads, min_size=1, max_size=5),
    where=st.floats(0, 1, exclude_max=True),
    line_pick=st.floats(0, 1, exclude_max=True),
    new_byte=st.integers(0, 255),
)
def test_any_changed_byte_in_an_earlier_line_is_corruption(
    datas: list[dict[str, Any]], where: float, line_pick: float, new_byte: int
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store, path, blob = _write(Path(tmp), datas)
        lines = blob.split(b"\n")[:-1]
        target = int(line_pick * (len(lines) - 1))  # never the last line
        line = bytearray(lines[target])
        pos = int(where * len(line))
        if line[pos] == new_byte:
            new_byte = (new_byte + 1) % 256
        line[pos] = new_byte
        lines[target] = bytes(line)
        path.write_bytes(b"\n".join(lines) + b"\n")
        with pytest.raises(CorruptLog) as info:
            store.read("job")
        assert info.value.line_no == target + 1
