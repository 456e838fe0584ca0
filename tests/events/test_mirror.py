"""The UPDATES mirror: projection, batching, Hub faults, resume, secrets (real client, fake Hub)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.mirror_bench import Chain, SimClock, simulate_job
from events.model import Event
from events.projections.base import MirrorSettings
from events.projections.hub import CURSOR_FILE, HubMirror
from events.projections.local import LocalMirror
from events.projections.updates import ProjectionState, Thinning, project, render
from events.store import EventStore
from tests.support.fakehub import FakeHub

TOKEN = "hf_mirrorwritertoken0000000000"
REPO = "me/lora"
COMMIT = "/commit/"


@pytest.fixture(scope="module")
def hub() -> Iterator[FakeHub]:
    with FakeHub() as running:
        yield running


@pytest.fixture
def repo(hub: FakeHub, request: pytest.FixtureRequest) -> str:
    name = "".join(c if c.isalnum() else "-" for c in request.node.name)
    return f"me/{name.strip('-')[:60]}"


def _mirror(hub: FakeHub, repo: str, job_dir: Path, clock: SimClock, **kw: Any) -> HubMirror:
    return HubMirror(
        repo_id=repo,
        job_id="job-1",
        job_dir=job_dir,
        endpoint=hub.url,
        token=TOKEN,
        clock=clock,
        sleep=clock.sleep,
        background=False,
        **kw,
    )


def _updates(hub: FakeHub, repo: str) -> dict[str, dict[str, Any]]:
    return {
        path: json.loads(data)
        for path, data in hub.files(repo).items()
        if path.startswith("UPDATES/")
    }


def _posts(hub: FakeHub, repo: str) -> int:
    return hub.count("POST", f"{repo}{COMMIT}")


# -- the pure projection ---------------------------------------------------------------------
def test_file_is_a_superset_of_the_seeds_format() -> None:
    clock = SimClock()
    chain = Chain("job-1", clock)
    event = chain.add("INITIALIZED", message="Repository created")
    update = render(event, number=1, repo_id=REPO)
    assert update.path == "UPDATES/0001_20260101_120000_INITIALIZED.json"
    body = json.loads(update.content)
    assert list(body)[:6] == ["status", "timestamp", "job_id", "update_number", "repo_id", "data"]
    assert body["timestamp"] == "2026-01-01T12:00:00.000000+00:00"
    assert body["data"]["message"] == "Repository created"
    assert (body["seq"], body["type"], body["attempt"], body["hash"]) == (
        1,
        "INITIALIZED",
        1,
        event.hash,
    )
    assert render(event, number=1, repo_id=REPO) == update  # deterministic bytes


def test_progress_is_thinned_and_facts_keep_the_status() -> None:
    clock = SimClock()
    chain = Chain("job-1", clock)
    state, kept = ProjectionState(), []
    chain.add("TRAINING")
    for step in range(1, 361):  # one hour, every 10 s, a new epoch every 20 min
        clock.sleep(10)
        chain.add("PROGRESS", step=step, epoch=1 + step // 120)
    clock.sleep(1)
    chain.add("CHECKPOINT", step=360)
    for event in chain.events:
        state, update = project(state, event, repo_id=REPO, thinning=Thinning())
        if update is not None:
            kept.append(json.loads(update.content))
    progress = [u for u in kept if u["type"] == "PROGRESS"]
    # every 5 min (12 in an hour) plus the 3 epoch changes at 20/40/60 min, which coincide
    assert 12 <= len(progress) <= 15
    assert [u["update_number"] for u in kept] == list(range(1, len(kept) + 1))
    assert kept[-1]["type"] == "CHECKPOINT"
    assert kept[-1]["status"] == "TRAINING"
    assert state.last_seq == len(chain.events)


# -- the two-hour job ------------------------------------------------------------------------
def test_two_hour_job_stays_far_below_the_commit_limit(hub: FakeHub, tmp_path: Path) -> None:
    result = simulate_job(hub.url, "me/two-hours", tmp_path)
    assert result.status == {
        "ok": True,
        "mirrored_seq": len(result.events),
        "last_error": None,
        "commits": len(result.commit_times),
    }
    assert result.worst_hour <= 60
    updates = _updates(hub, "me/two-hours")
    mirrored = {u["seq"] for u in updates.values()}
    for event in result.events:  # every non-PROGRESS event made it, the final one included
        assert event.type == "PROGRESS" or event.seq in mirrored
    last = max(updates.values(), key=lambda u: u["update_number"])
    assert last["status"] == "COMPLETE"
    assert "direct_download_url" in last["data"]
    cursor = json.loads((tmp_path / CURSOR_FILE).read_text())
    assert cursor["mirrored_seq"] == len(result.events)


# -- Hub faults ------------------------------------------------------------------------------
def _job_until_complete(mirror: HubMirror, clock: SimClock) -> Chain:
    chain = Chain("job-1", clock)
    for kind in ("INITIALIZED", "STARTING", "TRAINING"):
        mirror.publish(chain.add(kind))
    mirror.publish(chain.add("COMPLETE", direct_download_url="https://x/lora.safetensors"))
    return chain


def test_429_waits_as_the_ratelimit_header_says(hub: FakeHub, repo: str, tmp_path: Path) -> None:
    clock = SimClock()
    mirror = _mirror(hub, repo, tmp_path, clock)
    assert mirror.start() is True
    hub.fail(429, path_contains=f"{repo}{COMMIT}", headers={"RateLimit": '"api";r=0;t=42'})
    _job_until_complete(mirror, clock)
    assert mirror.pump() == 0.0  # tried and failed
    assert 42 <= mirror.pump() <= 43  # the Hub's wait, honoured: no new attempt yet
    assert mirror.status()["ok"] is False
    assert "429" in mirror.status()["last_error"]
    assert _posts(hub, repo) == 1
    assert mirror.flush(timeout=120) is True
    assert clock.now >= 43
    assert mirror.status() == {
        "ok": True,
        "mirrored_seq": 4,
        "last_error": mirror.status()["last_error"],
        "commits": 1,
    }
    assert len(_updates(hub, repo)) == 4


@pytest.mark.parametrize("code", [409, 412])
def test_409_and_412_are_retried(hub: FakeHub, repo: str, tmp_path: Path, code: int) -> None:
    clock = SimClock()
    mirror = _mirror(hub, repo, tmp_path, clock)
    mirror.start()
    info_reads = hub.count("GET", f"/api/models/{repo}")
    hub.fail(code, path_contains=f"{repo}{COMMIT}")
    _job_until_complete(mirror, clock)
    assert mirror.flush(timeout=60) is True
    assert _posts(hub, repo) == 2
    assert mirror.status()["commits"] == 1
    assert mirror.status()["ok"] is True
    if code == 412:  # the head was read again before the retry
        assert hub.count("GET", f"/api/models/{repo}") > info_reads
    assert len(_updates(hub, repo)) == 4


def test_5xx_outage_is_reported_never_raised_and_heals(
    hub: FakeHub, repo: str, tmp_path: Path
) -> None:
    clock = SimClock()
    mirror = _mirror(hub, repo, tmp_path, clock)
    mirror.start()
    hub.fail(500, path_contains=f"{repo}{COMMIT}", times=4)
    chain = _job_until_complete(mirror, clock)
    assert mirror.flush(timeout=10) is False  # backing off: 5, 10, 20 s...
    status = mirror.status()
    assert status["ok"] is False
    assert "500" in status["last_error"]
    assert TOKEN not in status["last_error"]
    mirror.publish(chain.add("PROGRESS", step=1))  # the job goes on while the Hub is down
    assert mirror.flush(timeout=600) is True
    final = mirror.close(timeout=10)
    assert final["ok"] is True
    assert final["mirrored_seq"] == 5
    assert len(_updates(hub, repo)) == 5


def test_unchanged_resend_makes_no_commit(hub: FakeHub, repo: str, tmp_path: Path) -> None:
    clock = SimClock()
    first = _mirror(hub, repo, tmp_path / "a", clock)
    first.start()
    chain = _job_until_complete(first, clock)
    first.close(timeout=10)
    posts = _posts(hub, repo)
    again = _mirror(hub, repo, tmp_path / "b", clock)  # no cursor: sends everything again
    for event in chain.events:
        again.publish(event)
    again.start()
    assert again.close(timeout=10) == {
        "ok": True,
        "mirrored_seq": 4,
        "last_error": None,
        "commits": 0,
    }
    assert _posts(hub, repo) == posts


def test_resume_continues_from_the_cursor(hub: FakeHub, repo: str, tmp_path: Path) -> None:
    clock = SimClock()
    chain = Chain("job-1", clock)
    events = [chain.add(k) for k in ("INITIALIZED", "STARTING", "DOWNLOADING")]
    first = _mirror(hub, repo, tmp_path, clock)
    for event in events:
        first.publish(event)
    first.start()
    first.close(timeout=10)
    assert json.loads((tmp_path / CURSOR_FILE).read_text())["mirrored_seq"] == 3
    clock.sleep(30)
    events += [chain.add("RESUMED"), chain.add("COMPLETE")]
    second = _mirror(hub, repo, tmp_path, clock)
    assert second.status()["mirrored_seq"] == 3
    preuploads = hub.count("POST", f"{repo}/preupload")
    for event in events:  # a resumed runner replays the whole log into the mirror
        second.publish(event)
    second.start()
    assert second.close(timeout=10)["commits"] == 1
    assert hub.count("POST", f"{repo}/preupload") == preuploads + 1
    numbers = sorted(u["update_number"] for u in _updates(hub, repo).values())
    assert numbers == [1, 2, 3, 4, 5]  # no file sent twice under another number


def test_secrets_never_reach_updates(hub: FakeHub, repo: str, tmp_path: Path) -> None:
    canary = "hf_CanaryCanaryCanaryCanary1234"
    log = EventStore.on_disk(tmp_path / "root").open("job-1", secrets=[canary])
    mirror = HubMirror(
        repo_id=repo,
        job_id="job-1",
        job_dir=tmp_path / "job",
        endpoint=hub.url,
        token=canary,  # the mirror's own token must not leak either
    )
    mirror.attach(log)
    mirror.start(timeout=10)
    log.append(type="INITIALIZED", status="INITIALIZED", attempt=1, data={})
    log.append(
        type="ERROR",
        status="ERROR",
        attempt=1,
        data={"error": f"push failed with {canary}", "hf_token": canary, "url": f"x?{canary}"},
    )
    status = mirror.close(timeout=20)
    assert status["ok"] is True
    assert status["mirrored_seq"] == 2
    blobs = [data for path, data in hub.files(repo).items() if path.startswith("UPDATES/")]
    assert len(blobs) == 2
    assert all(canary.encode() not in blob for blob in blobs)
    assert canary not in json.dumps(status)


def test_background_thread_flushes_final_updates_at_once(
    hub: FakeHub, repo: str, tmp_path: Path
) -> None:
    log = EventStore.in_memory().open("job-1")
    settings = MirrorSettings(commit_interval_s=3600)  # only the urgent path can commit
    mirror = HubMirror(
        repo_id=repo,
        job_id="job-1",
        job_dir=tmp_path,
        endpoint=hub.url,
        token=TOKEN,
        settings=settings,
    )
    log.append(type="INITIALIZED", status="INITIALIZED", attempt=1, data={})
    mirror.attach(log)
    assert mirror.start(timeout=10) is True  # the first update, committed synchronously
    assert len(_updates(hub, repo)) == 1
    log.append(type="STARTING", status="STARTING", attempt=1, data={})
    log.append(type="ERROR", status="ERROR", attempt=1, data={"error": "boom"})
    assert mirror.flush(timeout=10) is True
    assert mirror.close(timeout=5)["mirrored_seq"] == 3
    statuses = sorted((u["update_number"], u["status"]) for u in _updates(hub, repo).values())
    assert statuses == [(1, "INITIALIZED"), (2, "STARTING"), (3, "ERROR")]


def test_full_queue_coalesces_progress_but_keeps_transitions(tmp_path: Path) -> None:
    clock = SimClock()
    settings = MirrorSettings(queue_max=3, progress_interval_s=0)
    mirror = HubMirror(
        repo_id=REPO,
        job_id="job-1",
        job_dir=tmp_path,
        endpoint="http://127.0.0.1:9",  # nothing listens: never contacted here
        settings=settings,
        clock=clock,
        background=False,
    )
    chain = Chain("job-1", clock)
    mirror.publish(chain.add("TRAINING"))
    for step in range(10):
        clock.sleep(1)
        mirror.publish(chain.add("PROGRESS", step=step))
    mirror.publish(chain.add("ERROR", error="x"))
    kinds = [p.update.kind for p in mirror._pending]
    assert kinds[0] == "TRAINING"
    assert kinds[-1] == "ERROR"
    assert len(kinds) <= 4


def test_local_mirror_writes_the_same_files(tmp_path: Path) -> None:
    clock = SimClock()
    chain = Chain("job-1", clock)
    mirror = LocalMirror(tmp_path / "out", job_id="job-1", repo_id=REPO)
    mirror.start()
    events: list[Event] = [chain.add("INITIALIZED"), chain.add("COMPLETE", message="done")]
    for event in events:
        mirror.publish(event)
    names = sorted(p.name for p in (tmp_path / "out" / "UPDATES").iterdir())
    assert names == [
        "0001_20260101_120000_INITIALIZED.json",
        "0002_20260101_120000_COMPLETE.json",
    ]
    expected = render(events[1], number=2, repo_id=REPO).content
    assert (tmp_path / "out" / "UPDATES" / names[1]).read_bytes() == expected
    assert mirror.close() == {"ok": True, "mirrored_seq": 2, "last_error": None, "commits": 2}
