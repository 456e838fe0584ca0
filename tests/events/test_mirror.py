"""The UPDATES mirror: projection, batching, Hub faults, resume, secrets (real client, fake Hub)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
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
from orchestrator.settings import Settings
from tests.support.fakehub import FakeHub
from tests.support.sim_mirror import sim_mirror, updates_on_hub

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
    return sim_mirror(hub, repo, job_dir, clock, token=TOKEN, **kw)


_updates = updates_on_hub


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
        "pending": 0,
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
        "pending": 0,
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
        "pending": 0,
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
    assert mirror.close() == {
        "ok": True,
        "mirrored_seq": 2,
        "pending": 0,
        "last_error": None,
        "commits": 2,
    }


# -- the mirror never delays the job (a Hub that hangs, is down or refuses the token) -------------
def _timed(call: Callable[[], Any], limit: float = 20.0) -> tuple[Any, float]:
    """`call()` in a thread: its result and seconds, failing (not hanging) past `limit`."""
    done: list[Any] = []
    began = time.monotonic()
    thread = threading.Thread(target=lambda: done.append(call()), daemon=True)
    thread.start()
    thread.join(limit)
    assert done, f"still blocked after {limit} s"
    return done[0], time.monotonic() - began


def _until(check: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def _live(hub: FakeHub, repo: str, job_dir: Path, **kw: Any) -> HubMirror:
    """A mirror with its own thread and the real clock, as the worker makes it."""
    return HubMirror(
        repo_id=repo, job_id="job-1", job_dir=job_dir, endpoint=hub.url, token=TOKEN, **kw
    )


def _append(log: Any, *kinds: str) -> None:
    for kind in kinds:
        data = {"error": "the dataset host did not answer"} if kind == "ERROR" else {}
        log.append(type=kind, status=kind, attempt=1, data=data)


def _seqs(hub: FakeHub, repo: str) -> list[int]:
    return sorted(u["seq"] for u in _updates(hub, repo).values())


def test_a_hung_hub_costs_the_job_only_the_documented_bounds(
    hub: FakeHub, repo: str, tmp_path: Path
) -> None:
    hub.hang()  # every request: the connection is accepted, no answer comes
    try:
        log = EventStore.in_memory().open("job-1")
        mirror = _live(hub, repo, tmp_path)  # the defaults, as the worker uses them
        mirror.attach(log)
        landed, took = _timed(mirror.start)
        assert landed is False
        assert took < 8  # 5 s; the old mirror waited here for as long as the Hub hung
        _append(log, "INITIALIZED", "STARTING", "ERROR")
        status, took = _timed(mirror.close)
        assert took < 8
        assert status["ok"] is False
        assert (status["pending"], status["mirrored_seq"], status["commits"]) == (3, 0, 0)
        assert "not mirrored" in status["last_error"]
    finally:
        hub.release()
    assert not (tmp_path / CURSOR_FILE).exists()
    assert MirrorSettings().start_timeout_s <= 5  # the bounds README's Progress section names
    assert MirrorSettings().close_timeout_s <= 5


def test_a_commit_answered_after_close_records_nothing_and_the_next_delivery_sends_all(
    hub: FakeHub, repo: str, tmp_path: Path
) -> None:
    hub.hang(body_contains=b"UPDATES/")  # the repo is created; the mirror's files hang
    settings = MirrorSettings(start_timeout_s=1, close_timeout_s=1)
    store = EventStore.on_disk(tmp_path / "root")
    log = store.open("job-1")
    try:
        first = _live(hub, repo, tmp_path / "job", settings=settings)
        first.attach(log)
        _append(log, "INITIALIZED")
        assert _timed(first.start)[0] is False
        _append(log, "STARTING", "ERROR")
        thread = first._thread
        status, took = _timed(first.close)
        assert took < 5
        assert status["pending"] >= 1
        assert status["ok"] is False
        assert hub.held >= 1
    finally:
        hub.release()
    assert thread is not None
    thread.join(20)  # the late answer lands on the Hub; the closed mirror notes nothing
    assert not thread.is_alive()
    assert not (tmp_path / "job" / CURSOR_FILE).exists()
    second = _live(hub, repo, tmp_path / "job", settings=settings)
    second.attach(store.open("job-1"))  # the next delivery catches up from the log
    assert second.start() is True
    final = second.close()
    assert final["ok"] is True
    assert final["pending"] == 0
    assert final["mirrored_seq"] == 3
    assert _seqs(hub, repo) == [1, 2, 3]


def test_a_hub_that_is_down_gets_everything_with_the_next_successful_commit(
    hub: FakeHub, repo: str, tmp_path: Path
) -> None:
    settings = MirrorSettings(backoff_s=0.2, max_backoff_s=0.5, start_timeout_s=30)
    log = EventStore.in_memory().open("job-1")
    mirror = _live(hub, repo, tmp_path, settings=settings)
    _append(log, "INITIALIZED")
    mirror.attach(log)
    hub.down()
    try:
        landed, took = _timed(mirror.start)
        assert landed is False
        assert took < 5  # a refused connection answers at once: start does not wait it out
        _append(log, "STARTING", "DOWNLOADING")  # the job goes on
        status = mirror.status()
        assert status["ok"] is False
        assert status["pending"] == 3
        assert "create repo failed" in status["last_error"]
    finally:
        hub.up()
    _until(lambda: mirror.status()["pending"] == 0)  # retried in the background
    assert _seqs(hub, repo) == [1, 2, 3]
    numbers = sorted(u["update_number"] for u in _updates(hub, repo).values())
    assert numbers == [1, 2, 3]
    final = mirror.close()
    assert (final["ok"], final["mirrored_seq"], final["pending"]) == (True, 3, 0)


def test_the_next_delivery_pushes_what_an_outage_left_pending(
    hub: FakeHub, repo: str, tmp_path: Path
) -> None:
    settings = MirrorSettings(backoff_s=0.2, max_backoff_s=0.5, close_timeout_s=1)
    store = EventStore.on_disk(tmp_path / "root")
    log = store.open("job-1")
    first = _live(hub, repo, tmp_path / "job", settings=settings)
    first.attach(log)
    _append(log, "INITIALIZED")
    assert first.start(timeout=10) is True
    hub.down()
    try:
        _append(log, "STARTING", "ERROR")
        status, took = _timed(first.close)
        assert took < 5
        assert (status["ok"], status["mirrored_seq"], status["pending"]) == (False, 1, 2)
    finally:
        hub.up()
    assert json.loads((tmp_path / "job" / CURSOR_FILE).read_text())["mirrored_seq"] == 1
    second = _live(hub, repo, tmp_path / "job", settings=settings)
    second.attach(store.open("job-1"))
    assert second.start() is True
    assert second.close()["mirrored_seq"] == 3
    assert _seqs(hub, repo) == [1, 2, 3]
    numbers = sorted(u["update_number"] for u in _updates(hub, repo).values())
    assert numbers == [1, 2, 3]


@pytest.mark.parametrize("code", [401, 403])
def test_a_refused_token_stops_the_mirror_at_once(
    hub: FakeHub, repo: str, tmp_path: Path, code: int
) -> None:
    creates = hub.count("POST", "/repos/create")
    hub.fail(code, path_contains="/repos/create", times=100)
    try:
        log = EventStore.in_memory().open("job-1")
        mirror = _live(hub, repo, tmp_path)  # the defaults
        mirror.attach(log)
        _append(log, "INITIALIZED")
        landed, took = _timed(mirror.start)
        assert landed is False
        assert took < 3
        _append(log, "STARTING", "ERROR")
        status, took = _timed(mirror.close)
        assert took < 3
        assert (status["ok"], status["pending"]) == (False, 3)
        assert str(code) in status["last_error"]
        assert "refused" in status["last_error"]
        assert TOKEN not in status["last_error"]
        assert hub.count("POST", "/repos/create") == creates + 1  # definite: not tried again
    finally:
        hub.faults.clear()


def _hub_plan(tmp_path: Path, job_id: str) -> tuple[Any, Settings]:
    from orchestrator.plan import plan_job  # noqa: PLC0415
    from orchestrator.request import parse_request  # noqa: PLC0415

    raw = {
        "model_type": "tiny",
        "dataset": {"type": "precaptioned", "images_url": "https://example.com/d.zip"},
        "training": {"epochs": 1, "resolution": 32},
        "output": {"method": "huggingface", "huggingface": {"token": TOKEN}},  # auto-named
    }
    settings = Settings(root=tmp_path / "root")
    return plan_job(parse_request(raw), settings, job_id), settings


def test_naming_an_auto_named_repo_never_blocks_the_job(hub: FakeHub, tmp_path: Path) -> None:
    from orchestrator.mirrors import make_mirror  # noqa: PLC0415
    from stages.publish.hub import default_repo_id  # noqa: PLC0415

    plan, settings = _hub_plan(tmp_path, "job-named-late")
    settings = Settings(root=settings.root, hub_endpoint=hub.url)
    hub.hang(path_contains="/whoami-v2")
    try:
        mirror, took = _timed(
            lambda: make_mirror(plan, settings, MirrorSettings(start_timeout_s=0.5))
        )
        assert took < 3  # the old make_mirror called whoami here, in the job's thread
        assert isinstance(mirror, HubMirror)
        log = EventStore.on_disk(settings.root).open(plan.job_id)
        mirror.attach(log)
        assert _timed(mirror.start)[0] is False
        log.append(type="INITIALIZED", status="INITIALIZED", attempt=1, data={})
        assert mirror.status()["pending"] == 1  # held until the repo has a name
    finally:
        hub.release()
    repo = default_repo_id(hub.whoami_name, "tiny", plan.job_id)
    _until(lambda: mirror.status()["pending"] == 0)
    assert mirror.repo_id == repo
    assert [u["repo_id"] for u in _updates(hub, repo).values()] == [repo]
    mirror.close()


def test_a_failed_whoami_is_retried_by_the_mirror_not_given_up(
    hub: FakeHub, tmp_path: Path
) -> None:
    from orchestrator.mirrors import make_mirror  # noqa: PLC0415
    from stages.publish.hub import default_repo_id  # noqa: PLC0415

    plan, settings = _hub_plan(tmp_path, "job-whoami-503")
    settings = Settings(root=settings.root, hub_endpoint=hub.url)
    hub.fail(503, path_contains="/whoami-v2", times=2)
    mirror = make_mirror(plan, settings, MirrorSettings(backoff_s=0.2, max_backoff_s=0.5))
    assert isinstance(mirror, HubMirror)  # the old one gave up: no UPDATES for the whole job
    log = EventStore.on_disk(settings.root).open(plan.job_id)
    mirror.attach(log)
    log.append(type="INITIALIZED", status="INITIALIZED", attempt=1, data={})
    mirror.start()
    _until(lambda: mirror.status()["pending"] == 0)
    repo = default_repo_id(hub.whoami_name, "tiny", plan.job_id)
    assert _seqs(hub, repo) == [1]
    assert mirror.close()["ok"] is True
