"""Event store speed against the bare minimum the same work needs.

1. Append with fsync: our EventLog.append (redact, chain, hash, lease check, O_APPEND write,
   fsync) against a bare loop of os.write + os.fsync of the same bytes.
2. Replay + verify: parse every line, check each line's hash and the chain, fold to a view,
   check every transition; against a bare json.loads loop over the same lines.
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench.table import Result, secs
from events.fold import fold
from events.lease import FileLease
from events.store import EventStore, parse_blob
from events.table import TableWalk
from events.vocabulary import Status

APPEND_N = 10_000
REPLAY_N = 100_000
ROUNDS = 5


def _best(fn: Callable[[], float]) -> float:
    """Median of a few rounds: these machines are noisy."""
    return statistics.median(fn() for _ in range(ROUNDS))


def _payload(i: int) -> dict[str, object]:
    return {"step": i, "loss": 0.1234 + i * 1e-6, "epoch": i // 100, "message": "training"}


def bench_append(tmp: Path) -> tuple[float, float]:
    def ours() -> float:
        root = Path(tempfile.mkdtemp(dir=tmp))
        lease = FileLease(root / "jobs" / "job", owner="bench")
        lease.acquire()
        log = EventStore.on_disk(root).open(
            "job", secrets=["hf_benchsecretvalue000000000"], fence=lease
        )
        start = time.perf_counter()
        for i in range(APPEND_N):
            log.append(type="PROGRESS", status="TRAINING", attempt=1, data=_payload(i))
        return time.perf_counter() - start

    def bare() -> float:
        root = Path(tempfile.mkdtemp(dir=tmp))
        source = EventStore.in_memory().open("job")
        lines = []
        for i in range(APPEND_N):
            e = source.append(type="PROGRESS", status="TRAINING", attempt=1, data=_payload(i))
            lines.append((e.to_line() + "\n").encode())
        fd = os.open(root / "events.jsonl", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        start = time.perf_counter()
        for line in lines:
            os.write(fd, line)
            os.fsync(fd)
        elapsed = time.perf_counter() - start
        os.close(fd)
        return elapsed

    return _alternating(ours, bare)


def _alternating(ours: Callable[[], float], bare: Callable[[], float]) -> tuple[float, float]:
    """Medians of rounds run in turn (ours, bare, ours, ...): the disk's speed drifts, and
    measuring one side after the other would hand the drift to one of them."""
    pairs = [(ours(), bare()) for _ in range(ROUNDS)]
    return statistics.median(p[0] for p in pairs), statistics.median(p[1] for p in pairs)


def replay_and_verify(blob: bytes) -> Status:
    """What a worker does with a log on every delivery."""
    events = parse_blob(blob, "bench").events  # each line's hash, seq and the chain
    walk = TableWalk()  # the table's one interpreter, as the live machine and the audit use it
    for event in events:
        if walk.apply(event.type, event.data).value != event.status:
            raise AssertionError(f"bad transition at seq {event.seq}")
    view = fold(events)
    assert view.status is walk.status
    return walk.status


def bench_replay(tmp: Path) -> tuple[float, float]:
    store = EventStore.in_memory()
    log = store.open("job")
    log.append(type="INITIALIZED", status="INITIALIZED", attempt=1, data={})
    for s in ("STARTING", "DOWNLOADING", "MODEL_DOWNLOAD", "TRAINING"):
        log.append(type=s, status=s, attempt=1, data={})
    for i in range(REPLAY_N - 5):
        log.append(type="PROGRESS", status="TRAINING", attempt=1, data=_payload(i))
    blob = "".join(e.to_line() + "\n" for e in log.events).encode()
    lines = blob.split(b"\n")[:-1]

    def ours() -> float:
        start = time.perf_counter()
        replay_and_verify(blob)
        return time.perf_counter() - start

    def bare() -> float:
        start = time.perf_counter()
        for line in lines:
            json.loads(line)
        return time.perf_counter() - start

    return _best(ours), _best(bare)


def run() -> list[Result]:
    with tempfile.TemporaryDirectory() as tmp:
        a_ours, a_bare = bench_append(Path(tmp))
        r_ours, r_bare = bench_replay(Path(tmp))
    return [
        Result(
            f"append + fsync, {APPEND_N:,} events",
            secs(a_ours),
            f"os.write + os.fsync {secs(a_bare)}",
            a_ours / a_bare,
            1.5,
        ),
        Result(
            f"replay + verify, {REPLAY_N:,} events",
            secs(r_ours),
            f"json.loads loop {secs(r_bare)}",
            r_ours / r_bare,
            3.0,
        ),
    ]


def main() -> None:
    for r in run():
        print(r)
