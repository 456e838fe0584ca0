"""The Hub's commit limit, as it sends it, and one repo's commit budget shared on the volume.

`rate_limit_wait(exc)` reads the seconds a 429 asks for. The Hub's per-repo commit limit
answers 429 with "You have exceeded the rate limit for repository commits (128 per hour). You
can retry this action in about 1 hour." while its `RateLimit` header describes the *api*
bucket, which still has requests left (`"api";r=949;t=271`): `t=` is that bucket's reset, not
the commit limit's. So the message comes first ("in about N hour(s)/minute(s)/second(s)", "in
N ..."), `t=` counts only when `r=0` (the bucket is the cause, as huggingface_hub itself
decides), then `Retry-After` (seconds or an HTTP date). huggingface_hub puts the server's text
(the `X-Error-Message` header, the JSON body's `error`) into `str(exc)` of `HfHubHTTPError`.

`CommitLedger` is one repo's budget: the Hub allows 128 commits per repo per hour, and every
job on the volume that commits into the repo (its UPDATES mirror, its publish) shares it. The
ledger is a file, `<root>/hub-commits/<owner>--<name>.json`, holding the commit times of the
last hour and a hold-until time (a 429 said no commits before then), read-modify-written under
an `fcntl` lock on a sibling `.lock` file and replaced atomically. "updates" may commit while
fewer than `UPDATES_BUDGET` (100) commits landed in the last hour, "publish" up to the whole
`HOURLY_LIMIT` (128): the 28 in reserve are publishes (one commit per job, a few per hour even
for a busy shared repo) plus slack for commits the ledger cannot see (the user's own pushes).
The ledger never fails its caller: a missing, corrupt or unwritable file reads as empty.

Two processes that check the budget at the same instant may both commit, so the count can pass
a cap by the number of commits in flight at once (one per job): the updates cap overshoots
into the publish reserve, never past the Hub's limit in practice.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import re
import time
from collections.abc import Callable, Iterator, Mapping
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, Literal

import structlog

from events.atomic import write_atomic

log = structlog.get_logger(__name__)

Purpose = Literal["updates", "publish"]
HOURLY_LIMIT = 128  # the Hub's commits per repo per hour
UPDATES_BUDGET = 100  # what the UPDATES mirrors may use; the rest is kept for publishes
WINDOW_S = 3600.0
LEDGER_DIR = "hub-commits"

_UNIT_S = {"sec": 1, "second": 1, "min": 60, "minute": 60, "hour": 3600, "day": 86400}
# "retry this action in about 1 hour", "retry in 30 minutes", "retry ... in an hour"
_RETRY_IN = re.compile(
    r"retry\b[^.\n]*?\bin\s+(?:about\s+|around\s+|approximately\s+|~\s*)?"
    r"(\d+(?:\.\d+)?|an?|one)\s*(sec|second|min|minute|hour|day)s?\b",
    re.IGNORECASE,
)
_REMAINING = re.compile(r"(?:^|;)\s*r=(\d+)")
_RESET = re.compile(r"(?:^|;)\s*t=(\d+)")


def rate_limit_wait(exc: BaseException) -> float | None:
    """Seconds a 429 asks for, or None when it names no wait."""
    said = _RETRY_IN.search(str(exc))
    if said:
        amount = said.group(1).lower()
        count = 1.0 if amount in ("a", "an", "one") else float(amount)
        return count * _UNIT_S[said.group(2).lower()]
    response = getattr(exc, "response", None)
    headers = _headers(getattr(response, "headers", None))
    ratelimit = headers.get("ratelimit", "")
    remaining, reset = _REMAINING.search(ratelimit), _RESET.search(ratelimit)
    if remaining and reset and int(remaining.group(1)) == 0:
        return float(reset.group(1)) + 1.0  # +1: the reset is rounded down to a second
    return _retry_after(headers.get("retry-after", ""), headers.get("date", ""))


def _headers(raw: Any) -> dict[str, str]:
    """Headers with lower-case names (httpx's are case-insensitive; a dict may not be)."""
    if raw is None:
        return {}
    try:
        items = raw.items() if isinstance(raw, Mapping) or hasattr(raw, "items") else []
        return {str(k).lower(): str(v) for k, v in items}
    except Exception:  # a strange response object: no headers to read
        return {}


def _retry_after(value: str, date: str) -> float | None:
    value = value.strip()
    if not value:
        return None
    if value.isdigit():
        return float(value)
    try:
        until = parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError):
        return None
    try:  # measured against the server's clock when it sent one, so clock skew cancels out
        now = parsedate_to_datetime(date).timestamp() if date else time.time()
    except (TypeError, ValueError, IndexError):
        now = time.time()
    return max(0.0, until - now)


class CommitLedger:
    """One repo's commit budget, shared through a file by every job on the volume."""

    def __init__(self, path: Path, repo_id: str, *, clock: Callable[[], float] = time.time):
        self.path, self.repo_id, self._clock = Path(path), repo_id, clock

    @classmethod
    def for_job(
        cls, job_dir: Path, repo_id: str, *, clock: Callable[[], float] = time.time
    ) -> CommitLedger:
        """The ledger of `repo_id` for a job at `<root>/jobs/<id>`: `<root>/hub-commits/...`.
        A job folder outside a `jobs/` folder (a test's tmp dir) keeps its own ledger."""
        job_dir = Path(job_dir)
        root = job_dir.parent.parent if job_dir.parent.name == "jobs" else job_dir
        name = repo_id.replace("/", "--")  # the Hub forbids "--" in repo ids: unambiguous
        return cls(root / LEDGER_DIR / f"{name}.json", repo_id, clock=clock)

    def wait_s(self, purpose: Purpose) -> float:
        """Seconds until a commit for `purpose` fits the budget; 0.0: commit now."""
        now = self._clock()
        times, held = self._read(now)
        if held > now:
            return held - now
        cap = HOURLY_LIMIT if purpose == "publish" else UPDATES_BUDGET
        if len(times) < cap:
            return 0.0
        # The commit that must age out of the hour for one more to fit.
        return max(0.0, times[len(times) - cap] + WINDOW_S - now)

    def record(self, purpose: Purpose) -> None:
        """A commit for `purpose` landed now."""
        with self._update() as state:
            state["commits"].append({"at": self._clock(), "purpose": purpose})

    def hold_until(self, until: float) -> None:
        """The Hub said no commits before `until` (the ledger's clock): every job waits."""
        with self._update() as state:
            state["hold_until"] = max(float(state.get("hold_until") or 0.0), until)

    def commits_in_last_hour(self) -> int:
        return len(self._read(self._clock())[0])

    # -- the file ----------------------------------------------------------------------------
    def _read(self, now: float) -> tuple[list[float], float]:
        """(sorted commit times of the last hour, hold-until) from the file as it stands."""
        state = self._load(now)
        return sorted(c["at"] for c in state["commits"]), float(state["hold_until"])

    def _load(self, now: float) -> dict[str, Any]:
        try:
            raw = json.loads(self.path.read_text("utf-8"))
        except FileNotFoundError:
            raw = {}
        except (OSError, ValueError) as exc:
            log.warning(
                "commit ledger unreadable; starting afresh", path=str(self.path), error=str(exc)
            )
            raw = {}
        commits: list[dict[str, Any]] = []
        for item in raw.get("commits", []) if isinstance(raw, dict) else []:
            try:
                at = float(item["at"])
            except (TypeError, KeyError, ValueError):
                continue
            if now - WINDOW_S < at <= now + WINDOW_S:  # a future time: another clock's, kept
                commits.append({"at": at, "purpose": str(item.get("purpose", "updates"))})
        try:
            held = float(raw.get("hold_until") or 0.0) if isinstance(raw, dict) else 0.0
        except (TypeError, ValueError):
            held = 0.0
        return {"repo_id": self.repo_id, "commits": commits, "hold_until": held}

    @contextlib.contextmanager
    def _update(self) -> Iterator[dict[str, Any]]:
        """Read-modify-write under the lock; a volume that refuses leaves the ledger as it was."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            lock = open(self.path.with_suffix(".lock"), "a+b")  # noqa: SIM115 - held below
        except OSError as exc:
            log.warning("commit ledger not writable", path=str(self.path), error=str(exc))
            yield self._load(self._clock())  # the caller's change is dropped
            return
        with lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            state = self._load(self._clock())
            yield state
            state["commits"].sort(key=lambda c: c["at"])
            try:
                write_atomic(self.path, json.dumps(state, indent=1) + "\n")
            except OSError as exc:
                log.warning("commit ledger not saved", path=str(self.path), error=str(exc))
