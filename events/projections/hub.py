"""The `UPDATES/` files in the output repo on the Hub, committed in rate-limited batches.

`HubMirror` (a `Projection`, like `LocalMirror`) batches pending files into one
commit at most every `commit_interval_s` (flushing at once for COMPLETE, ERROR, CANCELLED and
INTERRUPTED), from a background thread, so training never waits on the Hub. It owns the commit
retries because huggingface_hub does not retry the commit POST (reference §1.2): it honours 429
waits, retries 409 with jitter, re-reads the head on 412 and backs off on 5xx and network
errors. A 401 or 403 is definite (the token is refused): it stops trying for this delivery and
says so in `status()`.

The Hub allows 128 commits per repo per hour, and several jobs may write into one repo: every
commit asks the repo's `CommitLedger` (`events.projections.hub_limits`, a file on the volume
shared by every job there) first. A batch of ordinary updates may use the budget up to the
reserve kept for publishes (100 of 128 an hour); a batch that carries a terminal update
(COMPLETE, ERROR, CANCELLED, INTERRUPTED) asks as a publish does and may use the reserve: there
is one such update per attempt, and the seed's script ends on it. A wait defers the commit
(the files stay pending, the job goes on); a 429 is waited by its reset
(`rate_limit_wait`: the commit limit's "retry this action in about 1 hour") and written to the
ledger as a hold, so every mirror of that repo waits it out. A RESUMED update's superseded
ERROR/CANCELLED file is deleted in the commit that adds the RESUMED file (only if it is still
there, so a resend stays a no-op).

Its cursor ("mirrored up to seq N" plus the projection state) is saved in the job folder as
`mirror.json` only after a commit landed, so a later delivery (or resume) catches up from the
log and sends what was left; a resend is harmless anyway, because the files are deterministic
and the client skips unchanged files without committing.

The mirror never delays the job. Every Hub call runs in its own thread (naming an auto-named
repo by `whoami`, creating it, committing): `start()` waits at most `start_timeout_s` (5 s, env
`DPS_MIRROR_START_TIMEOUT_S`) for the repo and what is pending, less when the Hub answers with
an error; `close()` waits at most `close_timeout_s` (5 s, `DPS_MIRROR_CLOSE_TIMEOUT_S`) for the
last updates, less when the next try is due after that. A Hub that hangs costs the job those
bounds and nothing else; the updates not pushed stay in the job's log on the volume.

Wiring: `mirror.attach(event_log)` (catches up from the log, then follows it through
`EventLog.observers`), `mirror.start()`, ..., `mirror.close(timeout)` -> `status()`:
`{ok, mirrored_seq, pending, last_error, commits}`.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi

from events.atomic import write_atomic
from events.projections.base import MirrorSettings, Projection
from events.projections.hub_limits import CommitLedger, Purpose, rate_limit_wait
from events.projections.updates import ProjectionState, UpdateFile
from events.vocabulary import Fact

log = structlog.get_logger(__name__)

CURSOR_FILE = "mirror.json"
REFUSED = frozenset({401, 403})  # the token will not work in this delivery: stop trying
Clock = Callable[[], float]
Sleep = Callable[[float], None]


@dataclass
class _Pending:
    update: UpdateFile
    state: ProjectionState  # the projection state right after this file's event


@dataclass
class _Cursor:
    state: ProjectionState = field(default_factory=ProjectionState)
    head: str | None = None


class HubMirror(Projection):
    """Projects a job's events into `UPDATES/` of a Hub repo, in rate-limited batched commits.

    Give `repo_id`, or `name_repo` (a call that names it, e.g. by `whoami`), which the mirror's
    own thread makes, retried like any Hub call; events wait for the name in memory.
    `ledger_clock` is the commit ledger's clock, a wall clock shared by every process on the
    volume (`time.time`); by default the injected `clock` when one is given (a simulated
    timeline drives both), else `time.time`.
    """

    def __init__(
        self,
        *,
        repo_id: str | None = None,
        name_repo: Callable[[], str] | None = None,
        job_id: str,
        job_dir: Path,
        token: str | None = None,
        endpoint: str | None = None,
        api: HfApi | None = None,
        settings: MirrorSettings = MirrorSettings(),
        private: bool | None = None,
        repo_type: str = "model",
        clock: Clock = time.monotonic,
        sleep: Sleep = time.sleep,
        background: bool = True,
        rng: random.Random | None = None,
        ledger_clock: Clock | None = None,
        commit_budget: bool = True,  # False: no shared ledger (the bench's baseline)
    ) -> None:
        if repo_id is None and name_repo is None:
            raise ValueError("HubMirror needs repo_id or name_repo")
        super().__init__(repo_id, job_id, settings.thinning, (token,) if token else ())
        self.api = api or HfApi(endpoint=endpoint, token=token)
        self.settings = settings
        self.private, self.repo_type = private, repo_type
        self.job_dir = Path(job_dir)
        self._name_repo = name_repo
        self._clock, self._sleep, self._background = clock, sleep, background
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not security
        self._ledger_clock = ledger_clock or (time.time if clock is time.monotonic else clock)
        self._ledger: CommitLedger | None = None
        self._use_ledger = commit_budget
        self._cond = threading.Condition(self._lock)
        self._pending: list[_Pending] = []
        self._cursor = _Cursor()
        if repo_id is not None:
            self._on_named()
        self._repo_ready = False
        self._last_commit_at: float | None = None
        self._not_before = 0.0  # no Hub call before this (429/409/5xx waits)
        self._failures = 0
        self._failing = False
        self._refused = False  # a 401/403: no more Hub calls in this delivery
        self._last_error: str | None = None
        self._commits = 0
        self._coalesced = 0
        self._flush_wanted = False
        self._closing = False
        self._busy = False  # a Hub call is on the wire
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self, timeout: float | None = None) -> bool:
        """Start the worker thread, and wait at most `timeout` (`start_timeout_s`) for the
        repo to be ready and what is pending (the first update) to be committed; less when the
        Hub answers with an error. Returns whether that landed. Never raises."""
        wait = self.settings.start_timeout_s if timeout is None else timeout
        if not self._background:  # driven by the caller's clock (tests, the bench)
            deadline = self._clock() + wait
            while not self._ensure_repo() and self._clock() < deadline and not self._refused:
                self._sleep(
                    max(0.0, min(self._not_before - self._clock(), deadline - self._clock()))
                )
            return self._drain(deadline) if self._repo_ready else False
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="hub-mirror", daemon=True)
            self._thread.start()
        end = time.monotonic() + wait
        with self._cond:
            while time.monotonic() < end and not self._failing:
                if self._repo_ready and not self._outstanding():
                    return True
                self._cond.wait(min(end - time.monotonic(), self.settings.poll_s))
            return self._repo_ready and not self._outstanding() and not self._failing

    def flush(self, timeout: float | None = None) -> bool:
        """Commit everything pending now (respecting Hub waits); True when nothing is left.
        Returns early when the Hub refused the token or the next try is due after `timeout`."""
        wait = self.settings.close_timeout_s if timeout is None else timeout
        if not self._background:
            return self._drain(self._clock() + wait)
        if self._thread is None:  # never started (the job never opened its log): no Hub call
            with self._lock:
                return not self._outstanding()
        end = time.monotonic() + wait  # the caller's real wait, whatever clock drives commits
        with self._cond:
            self._flush_wanted = True
            self._cond.notify_all()
            while self._outstanding() and not self._refused and time.monotonic() < end:
                next_try = self._not_before - self._clock()
                if not self._busy and next_try > end - time.monotonic():
                    break  # nothing can land before the deadline
                self._cond.wait(min(end - time.monotonic(), self.settings.poll_s))
            return not self._outstanding()

    def close(self, timeout: float | None = None) -> dict[str, Any]:
        """Flush (bounded by `timeout`, `close_timeout_s`), stop the worker and report. A call
        still on the wire is left to its thread, which commits and records nothing more.
        Never raises."""
        self.flush(timeout)
        with self._cond:
            self._closing = True
            self._cond.notify_all()
            on_the_wire = self._busy
        if self._thread is not None:
            if not on_the_wire:  # else the call may never return: leave the thread to it
                self._thread.join(timeout=min(1.0, self.settings.poll_s))
            self._thread = None
        with self._lock:
            left = self._outstanding()
            if left and not self._last_error:
                self._last_error = (
                    f"{left} updates not mirrored before the deadline (the Hub did not answer "
                    "in time); they stay in the job's log and go out with its next delivery"
                )
        return self.status()

    def status(self) -> dict[str, Any]:
        with self._lock:
            left = self._outstanding()
            return {
                "ok": not self._failing and not (self._closing and left),
                "mirrored_seq": self._cursor.state.last_seq,
                "pending": left,
                "last_error": self._last_error,
                "commits": self._commits,
            }

    # -- queue -------------------------------------------------------------------------------
    def _outstanding(self) -> int:
        """Updates not on the Hub yet (under the lock): files pending, events awaiting a name."""
        return len(self._pending) + len(self._held)

    def _on_named(self) -> None:
        self._cursor = self._load_cursor()
        self._state = self._cursor.state
        if self._use_ledger:
            self._ledger = CommitLedger.for_job(
                self.job_dir, str(self.repo_id), clock=self._ledger_clock
            )

    def _accept(self, update: UpdateFile, state: ProjectionState) -> None:
        if len(self._pending) >= self.settings.queue_max:
            self._coalesce(update)
        self._pending.append(_Pending(update, state))
        if update.urgent:
            self._cond.notify_all()

    def _coalesce(self, incoming: UpdateFile) -> None:
        """Queue full (the Hub is unreachable for long): drop the oldest pending PROGRESS;
        transitions and facts are always kept (few, and each matters)."""
        for index, item in enumerate(self._pending):
            if item.update.kind == Fact.PROGRESS:
                del self._pending[index]
                self._coalesced += 1
                return

    # -- the worker --------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            try:
                wait = self.pump()
            except Exception as exc:  # the worker must outlive any bug
                log.exception("hub mirror worker error", error=str(exc))
                wait = self.settings.poll_s
            with self._cond:
                if self._closing:
                    return
                if wait > 0:
                    self._cond.wait(min(wait, self.settings.poll_s))

    def pump(self) -> float:
        """Make one Hub call if one is due (name or create the repo, or commit a batch);
        return the seconds until the next one could be."""
        with self._lock:
            if self._refused or self._closing:
                return self.settings.poll_s
            now = self._clock()
            if now < self._not_before:
                return self._not_before - now
            ready = self._repo_ready
            batch: list[_Pending] = []
            purpose: Purpose = "updates"
            if ready:
                if not self._pending:
                    return self.settings.poll_s
                terminal = any(p.update.urgent for p in self._pending)
                if not (terminal or self._flush_wanted) and self._last_commit_at is not None:
                    due_at = self._last_commit_at + self.settings.commit_interval_s
                    if now < due_at:
                        return due_at - now
                batch = list(self._pending)
                purpose = "publish" if terminal else "updates"  # terminal: the reserve too
            self._busy = True
        try:
            if not ready:
                self._ensure_repo()
                return 0.0
            wait = self._budget_wait(purpose)  # file I/O: outside the lock
            if wait > 0:
                with self._lock:
                    self._not_before = max(self._not_before, self._clock() + wait)
                return wait
            self._commit(batch, purpose)
        finally:
            with self._cond:
                self._busy = False
                self._cond.notify_all()
        return 0.0

    def _budget_wait(self, purpose: Purpose) -> float:
        """Seconds the repo's commit ledger asks this commit to wait (never raises)."""
        if self._ledger is None:
            return 0.0
        try:
            return self._ledger.wait_s(purpose)
        except Exception as exc:  # the ledger is advice: a broken one must not stop the mirror
            log.warning("commit ledger unreadable", error=str(exc))
            return 0.0

    def _drain(self, deadline: float) -> bool:
        """Commit until nothing is pending or `deadline` (driven by the injected clock)."""
        with self._lock:
            self._flush_wanted = True
        while True:
            wait = self.pump()
            with self._lock:
                if not self._outstanding():
                    self._flush_wanted = False
                    return True
                if self._refused:
                    return False
            now = self._clock()
            if now >= deadline:
                return False
            if wait > 0:
                self._sleep(min(wait, deadline - now))

    def _ensure_named(self) -> bool:
        if self.repo_id is not None:
            return True
        assert self._name_repo is not None
        try:
            repo_id = self._name_repo()
        except Exception as exc:  # reported in status(), never raised
            self._failed(exc, "naming the repo (whoami)")
            return False
        self._named(repo_id)
        return True

    def _ensure_repo(self) -> bool:
        if self._repo_ready:
            return True
        if not self._ensure_named():
            return False
        repo_id = str(self.repo_id)
        try:
            self.api.create_repo(
                repo_id, repo_type=self.repo_type, private=self.private, exist_ok=True
            )
            # The head lets a commit tell a real commit from the client's no-op skip.
            head = self.api.repo_info(repo_id, repo_type=self.repo_type).sha
        except Exception as exc:  # reported in status(), never raised
            self._failed(exc, "create repo")
            return False
        with self._cond:
            self._cursor.head = head
            self._repo_ready = True
            self._failures, self._failing = 0, False
            self._cond.notify_all()
        return True

    def _commit(self, batch: list[_Pending], purpose: Purpose = "updates") -> None:
        if not self._ensure_repo():
            return
        first, last = batch[0].update, batch[-1].update
        # A superseded file pending in this batch is never sent; one on the Hub is deleted.
        superseded = {gone for p in batch for gone in p.update.deletes}
        operations: list[CommitOperationAdd | CommitOperationDelete] = [
            CommitOperationAdd(path_in_repo=p.update.path, path_or_fileobj=p.update.content)
            for p in batch
            if p.update.path not in superseded
        ]
        try:
            operations += [
                CommitOperationDelete(path_in_repo=path)
                for path in sorted(superseded)
                # Only if still there: a resend after a crash must stay a no-op commit.
                if self.api.file_exists(str(self.repo_id), path, repo_type=self.repo_type)
            ]
            info = self.api.create_commit(
                str(self.repo_id),
                operations,
                commit_message=f"UPDATES seq {first.seq}-{last.seq} ({last.kind})",
                repo_type=self.repo_type,
            )
        except Exception as exc:  # reported in status(), never raised
            self._failed(exc, "commit")
            return
        made = info.oid != self._cursor.head  # the client returns the old head on a no-op
        ledger = self._ledger
        if made and ledger is not None:  # landed, even if after close: the budget is spent
            self._ledger_call(lambda: ledger.record(purpose))
        done = {id(p) for p in batch}
        with self._lock:
            if self._closing:  # answered after close: a later delivery owns the cursor
                return
            self._pending = [p for p in self._pending if id(p) not in done]
            self._cursor.head = info.oid
            # With nothing pending, events thinned out after the batch are covered too.
            self._cursor.state = batch[-1].state if self._pending else self._state
            if made:
                self._commits += 1
                self._last_commit_at = self._clock()
            self._failures, self._failing = 0, False
            if not self._pending:
                self._flush_wanted = False
            cursor = self._cursor_json()
        self._save_cursor(cursor)
        log.info(
            "hub mirror committed",
            repo_id=self.repo_id,
            files=len(batch),
            deleted=sum(isinstance(o, CommitOperationDelete) for o in operations),
            seq=last.seq,
            commit=made,
        )

    def _failed(self, exc: Exception, what: str) -> None:
        status = _status_code(exc)
        with self._lock:
            self._failures += 1
            n = self._failures
        refused = status in REFUSED
        if status == 429:
            wait = rate_limit_wait(exc) or self.settings.rate_limit_wait_s
            ledger = self._ledger
            if ledger is not None:  # every mirror (and publish) of this repo waits it out
                until = self._ledger_clock() + wait
                self._ledger_call(lambda: ledger.hold_until(until))
        elif status == 409:  # another commit holds the repo lock: back off a random bit
            wait = (
                self.settings.conflict_wait_s * min(2 ** (n - 1), 8) * self._rng.uniform(0.5, 1.5)
            )
        elif status == 412:  # the head moved: read it again, then retry soon
            self._refresh_head()
            wait = self._rng.uniform(0.5, 1.5)
        elif status is None or status >= 500 or status == 408:
            wait = self.settings.backoff_s * 2 ** min(n - 1, 10)
        else:  # 401/403 stop the mirror below; 404...: unlikely to heal soon
            wait = self.settings.max_backoff_s
        wait = min(wait, self.settings.max_backoff_s) if status != 429 else wait
        message = self._redactor.text(f"{what} failed ({status or type(exc).__name__}): {exc}")
        message = message.strip().splitlines()[0][:500] if message.strip() else what
        if refused:
            message += "; the token was refused, so UPDATES are not mirrored in this delivery"
        with self._cond:
            self._not_before = self._clock() + wait
            self._failing = True
            self._refused = self._refused or refused
            self._last_error = message
            self._cond.notify_all()  # a start() or flush() waiting on the Hub stops waiting
        log.warning(
            "hub mirror failed",
            repo_id=self.repo_id,
            status=status,
            wait_s=None if refused else wait,
            error=message,
        )

    def _ledger_call(self, call: Callable[[], None]) -> None:
        try:
            call()
        except Exception as exc:  # the ledger is advice: never fail the mirror over it
            log.warning("commit ledger not updated", error=str(exc))

    def _refresh_head(self) -> None:
        try:
            sha = self.api.repo_info(str(self.repo_id), repo_type=self.repo_type).sha
        except Exception:  # the next commit will tell
            return
        with self._lock:
            self._cursor.head = sha

    # -- cursor ------------------------------------------------------------------------------
    def _load_cursor(self) -> _Cursor:
        try:
            raw = json.loads((self.job_dir / CURSOR_FILE).read_text("utf-8"))
        except (OSError, ValueError):
            return _Cursor()
        if raw.get("repo_id") != self.repo_id or raw.get("job_id") != self.job_id:
            return _Cursor()  # another destination: start from the beginning
        return _Cursor(ProjectionState.from_dict(raw.get("state") or {}), raw.get("head"))

    def _cursor_json(self) -> str:
        return json.dumps(
            {
                "repo_id": self.repo_id,
                "job_id": self.job_id,
                "mirrored_seq": self._cursor.state.last_seq,
                "state": self._cursor.state.to_dict(),
                "head": self._cursor.head,
            },
            indent=2,
        )

    def _save_cursor(self, text: str) -> None:
        try:
            self.job_dir.mkdir(parents=True, exist_ok=True)
            write_atomic(self.job_dir / CURSOR_FILE, text)
        except OSError as exc:  # the cursor is an optimisation: a resend is harmless
            log.warning("mirror cursor not saved", error=str(exc))


def _status_code(exc: Exception) -> int | None:
    response = getattr(exc, "response", None)
    code = getattr(response, "status_code", None)
    return code if isinstance(code, int) else None
