"""The commit limit's 429 as the Hub sends it, and one repo's commit budget shared on the volume."""

from __future__ import annotations

import json
import multiprocessing
from collections.abc import Iterator
from pathlib import Path

import pytest
from huggingface_hub import CommitOperationAdd, HfApi
from huggingface_hub.errors import HfHubHTTPError

from events.projections.hub_limits import (
    HOURLY_LIMIT,
    UPDATES_BUDGET,
    CommitLedger,
    rate_limit_wait,
)
from tests.support.fakehub import FakeHub

TOKEN = "hf_hublimitstoken0000000000000"
COMMIT_LIMIT = (
    "You have exceeded the rate limit for repository commits (128 per hour). "
    "You can retry this action in about 1 hour."
)
API_BUCKET = {  # braindecode#947: the api bucket, with requests left
    "RateLimit": '"api";r=949;t=271',
    "RateLimit-Policy": '"fixed window";"api";q=1000;w=300',
}


@pytest.fixture(scope="module")
def hub() -> Iterator[FakeHub]:
    with FakeHub() as running:
        yield running


def _429(hub: FakeHub, repo: str, headers: dict[str, str]) -> HfHubHTTPError:
    """The real client's error for a 429 the fake answers with `headers` on the commit."""
    api = HfApi(endpoint=hub.url, token=TOKEN)
    api.create_repo(repo, exist_ok=True)
    hub.fail(429, path_contains=f"{repo}/commit/", headers=headers)
    with pytest.raises(HfHubHTTPError) as caught:
        api.create_commit(repo, [CommitOperationAdd("a.json", b"{}")], commit_message="x")
    return caught.value


def test_the_commit_limit_is_waited_by_its_message_not_the_api_buckets_reset(
    hub: FakeHub,
) -> None:
    exc = _429(hub, "me/limit-msg", {"X-Error-Message": COMMIT_LIMIT, **API_BUCKET})
    assert "retry this action in about 1 hour" in str(exc)  # the client keeps the text
    assert rate_limit_wait(exc) == 3600.0


def test_the_api_bucket_counts_only_when_it_is_empty(hub: FakeHub) -> None:
    assert rate_limit_wait(_429(hub, "me/limit-r", API_BUCKET)) is None
    empty = {"RateLimit": '"api";r=0;t=55', "RateLimit-Policy": API_BUCKET["RateLimit-Policy"]}
    assert rate_limit_wait(_429(hub, "me/limit-r0", empty)) == 56.0
    assert rate_limit_wait(_429(hub, "me/limit-ra", {"Retry-After": "120", **API_BUCKET})) == 120


def test_retry_after_as_an_http_date_is_measured_against_the_server_date(hub: FakeHub) -> None:
    headers = {
        "Retry-After": "Wed, 02 Dec 2026 08:05:00 GMT",
        "Date": "Wed, 02 Dec 2026 08:00:00 GMT",
    }

    class Answer:  # the fake's Date header is its own clock: a stand-in response instead
        def __init__(self) -> None:
            self.headers = headers

    class Refused(Exception):
        response = Answer()

    assert rate_limit_wait(Refused("429")) == 300.0


@pytest.mark.parametrize(
    ("text", "wait"),
    [
        ("You can retry this action in about 1 hour.", 3600),
        ("Please retry this action in 2 hours", 7200),
        ("retry this action in about 30 minutes", 1800),
        ("You can retry in 45 seconds.", 45),
        ("retry this action in about an hour", 3600),
        ("429 Too Many Requests for url: http://x/api/models/a/b/commit/main.", None),
        ("Retry after 271 seconds (949/1000 requests remaining in current 300s window).", None),
    ],
)
def test_the_message_forms(text: str, wait: float | None) -> None:
    assert rate_limit_wait(Exception(text)) == wait


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_the_ledger_lives_under_the_volume_root_per_repo(tmp_path: Path) -> None:
    ledger = CommitLedger.for_job(tmp_path / "jobs" / "job-1", "me/lora")
    assert ledger.path == tmp_path / "hub-commits" / "me--lora.json"
    other = CommitLedger.for_job(tmp_path / "jobs" / "job-2", "me/lora")
    assert other.path == ledger.path


def test_two_ledgers_on_one_file_share_the_budget_and_keep_the_reserve(tmp_path: Path) -> None:
    clock = Clock()
    a = CommitLedger.for_job(tmp_path / "jobs" / "a", "me/lora", clock=clock)
    b = CommitLedger.for_job(tmp_path / "jobs" / "b", "me/lora", clock=clock)
    for i in range(UPDATES_BUDGET):
        assert (a if i % 2 else b).wait_s("updates") == 0.0
        (a if i % 2 else b).record("updates")
        clock.now += 10
    # 100 landed in the last hour, half by each: both mirrors wait until the first ages out...
    assert a.wait_s("updates") == b.wait_s("updates") == pytest.approx(3600 - 1000)
    # ...while a publish may still use the reserve, up to the Hub's whole limit.
    for _ in range(HOURLY_LIMIT - UPDATES_BUDGET):
        assert a.wait_s("publish") == 0.0
        a.record("publish")
    assert b.wait_s("publish") == pytest.approx(3600 - 1000)
    clock.now += 3600 - 1000
    assert b.wait_s("updates") > 0  # the reserve's publishes still count
    clock.now += 3600
    assert a.wait_s("updates") == 0.0
    assert a.commits_in_last_hour() == 0


def test_hold_until_holds_every_ledger_of_the_repo(tmp_path: Path) -> None:
    clock = Clock()
    a = CommitLedger.for_job(tmp_path / "jobs" / "a", "me/lora", clock=clock)
    b = CommitLedger.for_job(tmp_path / "jobs" / "b", "me/lora", clock=clock)
    other = CommitLedger.for_job(tmp_path / "jobs" / "a", "me/other", clock=clock)
    a.hold_until(clock.now + 3600)
    a.hold_until(clock.now + 60)  # an earlier hold never shortens a later one
    assert b.wait_s("updates") == 3600
    assert b.wait_s("publish") == 3600  # the Hub refuses publishes too
    assert other.wait_s("updates") == 0.0
    clock.now += 3600
    assert b.wait_s("publish") == 0.0


@pytest.mark.parametrize("junk", [b"{not json", b"[1, 2]", b'{"commits": [{"at": "x"}, 3]}', b""])
def test_a_corrupt_or_missing_file_reads_as_empty_and_heals(tmp_path: Path, junk: bytes) -> None:
    clock = Clock()
    ledger = CommitLedger.for_job(tmp_path / "jobs" / "a", "me/lora", clock=clock)
    assert ledger.wait_s("updates") == 0.0  # no file yet
    ledger.path.parent.mkdir(parents=True, exist_ok=True)
    ledger.path.write_bytes(junk)
    assert ledger.wait_s("updates") == 0.0
    ledger.record("updates")
    assert ledger.commits_in_last_hour() == 1
    assert json.loads(ledger.path.read_text())["commits"][0]["purpose"] == "updates"


def test_an_unwritable_volume_never_raises(tmp_path: Path) -> None:
    (tmp_path / "hub-commits").write_text("a file where the folder should be")
    ledger = CommitLedger.for_job(tmp_path / "jobs" / "a", "me/lora")
    ledger.record("updates")
    ledger.hold_until(1e12)
    assert ledger.wait_s("updates") == 0.0


def _record_many(path: str, count: int) -> None:
    ledger = CommitLedger(Path(path), "me/lora")
    for _ in range(count):
        ledger.record("updates")


def test_two_processes_recording_at_once_lose_no_commit(tmp_path: Path) -> None:
    path = str(tmp_path / "hub-commits" / "me--lora.json")
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_record_many, args=(path, 30)) for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0
    assert CommitLedger(Path(path), "me/lora").commits_in_last_hour() == 60
