"""The mirror on a shared repo: the commit budget, the commit limit's 429, superseded files.

Real client, the fake Hub, simulated time.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.mirror_bench import Chain, SimClock
from bench.shared_repo_bench import simulate_shared
from events.projections.hub import CURSOR_FILE, HubMirror
from events.projections.hub_limits import HOURLY_LIMIT, UPDATES_BUDGET, CommitLedger
from events.projections.local import LocalMirror
from tests.support.fakehub import FakeHub
from tests.support.sim_mirror import sim_mirror, updates_on_hub

TOKEN = "hf_mirrorbudgettoken0000000000"
URL = "https://huggingface.co/me/lora/resolve/main/adapter_model.safetensors?download=true"
COMMIT_LIMIT = (
    "You have exceeded the rate limit for repository commits (128 per hour). "
    "You can retry this action in about 1 hour."
)


@pytest.fixture(scope="module")
def hub() -> Iterator[FakeHub]:
    with FakeHub() as running:
        yield running


def _mirror(hub: FakeHub, repo: str, job_dir: Path, clock: SimClock, **kw: Any) -> HubMirror:
    return sim_mirror(hub, repo, job_dir, clock, token=TOKEN, **kw)


_updates = updates_on_hub


def test_three_mirrors_into_one_repo_never_exceed_the_budget_in_any_hour(
    hub: FakeHub, tmp_path: Path
) -> None:
    result = simulate_shared(hub.url, "me/shared-budget", tmp_path, hours=1.05)
    # Ordinary updates stop at 100 an hour; terminal updates and publishes may use the reserve.
    extra = len(result.publish_times) + 3  # one COMPLETE per job
    assert result.worst_hour() <= min(UPDATES_BUDGET + extra, HOURLY_LIMIT)
    assert result.worst_hour() >= UPDATES_BUDGET - 5  # busy enough that the budget binds
    assert result.pending_left == 0  # deferred, never dropped
    assert len(result.publish_times) == 3
    last = {
        u["job_id"]: u
        for u in sorted(_updates(hub, "me/shared-budget").values(), key=lambda u: u["seq"])
    }
    assert {job: u["status"] for job, u in last.items()} == dict.fromkeys(last, "COMPLETE")


def _busy(mirror: HubMirror, chain: Chain) -> None:
    for kind in ("INITIALIZED", "STARTING", "TRAINING"):
        mirror.publish(chain.add(kind))


def test_a_commit_limit_429_holds_every_mirror_of_the_repo_for_its_hour(
    hub: FakeHub, tmp_path: Path
) -> None:
    repo, clock = "me/shared-429", SimClock()
    a = _mirror(hub, repo, tmp_path / "jobs" / "a", clock, job_id="a")
    b = _mirror(hub, repo, tmp_path / "jobs" / "b", clock, job_id="b")
    assert a.start() is True
    assert b.start() is True
    hub.fail(
        429,
        path_contains=f"{repo}/commit/",
        headers={"X-Error-Message": COMMIT_LIMIT, "RateLimit": '"api";r=949;t=271'},
    )
    _busy(a, Chain("a", clock))
    posts = hub.count("POST", f"{repo}/commit/")
    assert a.pump() == 0.0  # tried: 429
    assert hub.count("POST", f"{repo}/commit/") == posts + 1
    assert 3599 <= a.pump() <= 3600  # about an hour, not the api bucket's 271 s
    chain_b = Chain("b", clock)
    _busy(b, chain_b)
    b.publish(chain_b.add("ERROR", error="x"))  # urgent: asks with the publish budget
    assert 3599 <= b.pump() <= 3600  # the other job's mirror waits too, without a request
    assert hub.count("POST", f"{repo}/commit/") == posts + 1
    ledger = CommitLedger.for_job(tmp_path / "jobs" / "c", repo, clock=clock)
    assert 3599 <= ledger.wait_s("publish") <= 3600  # and so does the publisher
    clock.sleep(3600)
    assert a.flush(timeout=60) is True
    assert b.flush(timeout=60) is True


def _error_then_resume(hub: FakeHub, repo: str, job_dir: Path) -> tuple[Chain, str]:
    clock = SimClock()
    chain = Chain("job-1", clock)
    first = _mirror(hub, repo, job_dir, clock)
    for kind in ("INITIALIZED", "STARTING", "TRAINING", "UPLOADING"):
        first.publish(chain.add(kind))
    first.publish(chain.add("ERROR", error="the token was refused"))
    first.start()
    assert first.close(timeout=30)["ok"] is True
    (error_path,) = [p for p, u in _updates(hub, repo).items() if u["status"] == "ERROR"]
    return chain, error_path


def test_resumed_deletes_the_superseded_error_in_its_own_commit(
    hub: FakeHub, tmp_path: Path
) -> None:
    repo = "me/resume-delete"
    chain, error_path = _error_then_resume(hub, repo, tmp_path / "job")
    before_resume = (tmp_path / "job" / CURSOR_FILE).read_bytes()
    clock = SimClock()
    clock.sleep(3600)
    chain.add("RESUMED")
    chain.add("UPLOADING")
    chain.add("COMPLETE", direct_download_url=URL)
    second = _mirror(hub, repo, tmp_path / "job", clock)
    for event in chain.events:  # a resumed runner replays the whole log
        second.publish(event)
    second.start()
    assert second.close(timeout=30)["ok"] is True
    updates = _updates(hub, repo)
    assert error_path not in updates
    assert [u["status"] for u in sorted(updates.values(), key=lambda u: u["seq"])][-1] == (
        "COMPLETE"
    )
    # The RESUMED file and the deletion landed together: no head shows both or neither.
    state = hub.repos[("model", repo)]
    for files in state.commits.values():
        resumed = any(p.endswith("_RESUMED.json") for p in files)
        assert not (resumed and error_path in files)
    # A crash after that commit, before the cursor was saved: the resend is a no-op.
    (tmp_path / "job" / CURSOR_FILE).write_bytes(before_resume)
    posts = hub.count("POST", f"{repo}/commit/")
    third = _mirror(hub, repo, tmp_path / "job", clock)
    for event in chain.events:
        third.publish(event)
    third.start()
    assert third.close(timeout=30)["commits"] == 0
    assert hub.count("POST", f"{repo}/commit/") == posts
    # So is a resend from nothing (no cursor at all): the ERROR is never sent again.
    shutil.rmtree(tmp_path / "job")
    fourth = _mirror(hub, repo, tmp_path / "job", clock)
    for event in chain.events:
        fourth.publish(event)
    fourth.start()
    assert fourth.close(timeout=30)["commits"] == 0
    assert error_path not in _updates(hub, repo)


def test_the_local_mirror_removes_the_superseded_file_too(tmp_path: Path) -> None:
    chain = Chain("job-1", SimClock())
    mirror = LocalMirror(tmp_path / "out", job_id="job-1", repo_id="local")
    mirror.start()
    for kind in ("INITIALIZED", "TRAINING"):
        mirror.publish(chain.add(kind))
    mirror.publish(chain.add("CANCELLED", message="cancelled", published=None))
    folder = tmp_path / "out" / "UPDATES"
    assert sorted(p.name for p in folder.iterdir())[-1].endswith("_CANCELLED.json")
    for kind in ("RESUMED", "TRAINING"):
        mirror.publish(chain.add(kind))
    mirror.publish(chain.add("COMPLETE", direct_download_url=URL))
    names = sorted(p.name for p in folder.iterdir())
    assert [n.split("_")[-1] for n in names] == [
        "INITIALIZED.json",
        "TRAINING.json",
        "RESUMED.json",
        "TRAINING.json",
        "COMPLETE.json",
    ]
    assert names[2].startswith("0004_")  # numbers are never reused
