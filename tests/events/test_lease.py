"""One writer per job: leases across processes, expiry, takeover and fencing."""

from __future__ import annotations

import errno
import multiprocessing as mp
import os
import time
from pathlib import Path
from typing import Any

import pytest

from events.errors import LeaseHeld, StaleLease
from events.lease import FileLease
from events.store import EventStore


def _contend(root: str, name: str, barrier: mp.synchronize.Barrier, results: mp.Queue) -> None:  # type: ignore[type-arg]
    job_dir = Path(root) / "jobs" / "job"
    lease = FileLease(job_dir, owner=name, ttl_s=30)
    barrier.wait()
    try:
        lease.acquire()
    except LeaseHeld:
        results.put((name, "refused", 0))
        return
    log = EventStore.on_disk(Path(root)).open("job", fence=lease)
    for i in range(20):
        log.append(type="PROGRESS", status="TRAINING", attempt=1, data={"by": name, "i": i})
    results.put((name, "wrote", lease.token))


@pytest.mark.parametrize("round_", range(3))
def test_two_processes_contend_and_exactly_one_writes(tmp_path: Path, round_: int) -> None:
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(2)
    results: mp.Queue = ctx.Queue()  # type: ignore[type-arg]
    procs = [
        ctx.Process(target=_contend, args=(str(tmp_path), f"w{i}", barrier, results))
        for i in range(2)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    outcomes = sorted(results.get(timeout=5)[1] for _ in procs)
    assert outcomes == ["refused", "wrote"]
    events = EventStore.on_disk(tmp_path).read("job")
    assert len(events) == 20
    assert len({e.data["by"] for e in events}) == 1


def _takeover(root: str, name: str, barrier: mp.synchronize.Barrier, results: mp.Queue) -> None:  # type: ignore[type-arg]
    lease = FileLease(Path(root) / "job", owner=name, ttl_s=30)
    barrier.wait()
    try:
        results.put((name, lease.acquire()))
    except LeaseHeld:
        results.put((name, None))


def test_racing_takeover_of_an_expired_lease_has_one_winner(tmp_path: Path) -> None:
    dead = FileLease(tmp_path / "job", owner="dead", ttl_s=0.01)
    assert dead.acquire() == 1
    time.sleep(0.05)
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(3)
    results: mp.Queue = ctx.Queue()  # type: ignore[type-arg]
    procs = [
        ctx.Process(target=_takeover, args=(str(tmp_path), f"w{i}", barrier, results))
        for i in range(3)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    tokens = [results.get(timeout=5)[1] for _ in procs]
    assert sorted(t for t in tokens if t is not None) == [2]
    assert tokens.count(None) == 2
    with pytest.raises(StaleLease):
        dead.check()


def test_live_lease_is_refused_to_a_second_owner(tmp_path: Path) -> None:
    first = FileLease(tmp_path / "job", owner="first", ttl_s=60)
    first.acquire()
    with pytest.raises(LeaseHeld, match="being run by worker 'first'"):
        FileLease(tmp_path / "job", owner="second").acquire()


def test_expired_lease_is_taken_over_with_a_higher_token(tmp_path: Path) -> None:
    now = [0.0]
    first = FileLease(tmp_path / "job", owner="first", ttl_s=5, clock=lambda: now[0])
    assert first.acquire() == 1
    now[0] = 5.0
    second = FileLease(tmp_path / "job", owner="second", ttl_s=5, clock=lambda: now[0])
    assert second.acquire() == 2
    with pytest.raises(StaleLease):
        first.check()
    with pytest.raises(StaleLease):
        first.renew()  # the old holder cannot extend a lease it lost
    second.check()
    current = second.current()
    assert current is not None
    assert (current.owner, current.token) == ("second", 2)


def test_background_renewal_keeps_the_lease_live(tmp_path: Path) -> None:
    # A TTL long enough that a busy machine still renews in time: the point is that renewals
    # carry the lease well past one TTL, not how fast they are.
    lease = FileLease(tmp_path / "job", owner="keeper", ttl_s=1.0)
    lease.acquire()
    lease.start_renewing(every_s=0.05)
    try:
        time.sleep(2.5)  # well past the TTL
        with pytest.raises(LeaseHeld):
            FileLease(tmp_path / "job", owner="other", ttl_s=1.0).acquire()
    finally:
        lease.stop_renewing()
    time.sleep(1.1)  # no renewals now: it expires
    assert FileLease(tmp_path / "job", owner="other").acquire() == 2


def test_release_frees_the_job_at_once(tmp_path: Path) -> None:
    with FileLease(tmp_path / "job", owner="a", ttl_s=600):
        pass
    assert FileLease(tmp_path / "job", owner="b").acquire() == 2


def test_renewer_notices_a_takeover_and_stops(tmp_path: Path) -> None:
    now = [0.0]
    first = FileLease(tmp_path / "job", owner="first", ttl_s=1, clock=lambda: now[0])
    first.acquire()
    now[0] = 2.0
    FileLease(tmp_path / "job", owner="second", ttl_s=1, clock=lambda: now[0]).acquire()
    first.start_renewing(every_s=0.01)
    time.sleep(0.2)
    assert isinstance(first.lost, StaleLease)
    first.stop_renewing()


def _full_volume(monkeypatch: pytest.MonkeyPatch, after: int = 0) -> None:
    """os.write on a full volume: the first `after` bytes fit, then ENOSPC."""
    real_write, room = os.write, [after]

    def write(fd: int, data: Any) -> int:
        if room[0] <= 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        n = real_write(fd, bytes(data)[: room[0]])
        room[0] -= n
        return n

    monkeypatch.setattr(os, "write", write)


@pytest.mark.parametrize("fits", [0, 5])
def test_a_failed_lease_write_leaves_no_file_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fits: int
) -> None:
    job_dir = tmp_path / "jobs" / "job"
    lease = FileLease(job_dir, owner="w1", ttl_s=30)
    _full_volume(monkeypatch, after=fits)
    with pytest.raises(OSError, match="No space left"):
        lease.acquire()
    assert sorted(p.name for p in (job_dir / "lease").iterdir()) == []
    monkeypatch.undo()
    assert lease.acquire() == 1  # the volume has room again: nothing stale in the way


def test_a_failed_renewal_keeps_the_old_record_and_no_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    job_dir = tmp_path / "jobs" / "job"
    lease = FileLease(job_dir, owner="w1", ttl_s=30)
    lease.acquire()
    before = (job_dir / "lease" / "0000000001.json").read_text()
    _full_volume(monkeypatch, after=3)
    with pytest.raises(OSError, match="No space left"):
        lease.renew()
    monkeypatch.undo()
    assert sorted(p.name for p in (job_dir / "lease").iterdir()) == ["0000000001.json"]
    assert (job_dir / "lease" / "0000000001.json").read_text() == before


def test_a_claim_racing_the_first_claim_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """b finds no lease; a's claim lands before b claims: b must lose, not take the next token
    past a's (two writers; a loaded machine once showed it in the test above)."""
    a = FileLease(tmp_path / "job", owner="a", ttl_s=30)
    b = FileLease(tmp_path / "job", owner="b", ttl_s=30)
    real = FileLease._tokens
    raced: list[bool] = []

    def a_claims_right_after_b_looks(self: FileLease) -> list[int]:
        found = real(self)
        if self is b and not raced:
            raced.append(True)
            a.acquire()
        return found

    monkeypatch.setattr(FileLease, "_tokens", a_claims_right_after_b_looks)
    with pytest.raises(LeaseHeld):
        b.acquire()
    assert a.token == 1
    a.check()  # a still holds it
