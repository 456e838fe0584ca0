"""`LocalPod`: a local RunPod-compatible endpoint that runs the real SDK worker loop.

A development and test tool, not a deployment target. It serves RunPod's client API and the
worker protocol on one port, and keeps `workers` subprocesses of `python -u <handler>` (through
worker_boot.py) in production mode pointed at itself. A worker that dies during a job is
replaced and the job is delivered again with the same id and input, as RunPod's automatic
retries do.
"""

from __future__ import annotations

import contextlib
import hmac
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from localpod.board import (
    DEFAULT_EXECUTION_TIMEOUT_S,
    DEFAULT_TTL_S,
    FINAL_STATUSES,
    RUN_RETENTION_S,
    RUNSYNC_RETENTION_S,
    Events,
    Job,
    JobBoard,
)
from localpod.server import (
    WEBHOOK_RETRIES,
    WEBHOOK_RETRY_DELAY_S,
    EndpointServer,
    send_webhook,
)

SUPERVISE_EVERY_S = 0.2
# A worker that exits with an error this soon after starting is probably broken (an import
# error): replacing it at once would spin, so the replacement waits RESPAWN_BACKOFF_S.
QUICK_DEATH_S = 3.0
RESPAWN_BACKOFF_S = 2.0
WORKER_BOOT = Path(__file__).with_name("worker_boot.py")


@dataclass
class _Proc:
    id: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    started_at: float


class LocalPod:
    """A local endpoint at `.url`; use as a context manager, or `start()` / `stop()`.

    RunPod's platform rules are settings with RunPod's defaults (localpod/README.md):
    `default_execution_timeout_s` (600; None: none), `default_ttl_s` (86400; None: none),
    `run_retention_s` (1800) and `runsync_retention_s` (60) after a job ends, `webhook_retries`
    (2) `webhook_retry_delay_s` (10) apart; `clock` times jobs (tests inject a fake one).
    """

    def __init__(
        self,
        handler: Path,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        workers: int = 1,
        api_key: str | None = None,
        worker_secret: str | None = None,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        log_dir: Path | None = None,
        endpoint_id: str = "local",
        python: str = sys.executable,
        max_redeliveries: int = 3,
        ping_timeout_s: float | None = 30.0,
        take_hold_s: float = 1.0,
        stop_hold_s: float = 1.0,
        stop_grace_s: float = 10.0,
        default_execution_timeout_s: float | None = DEFAULT_EXECUTION_TIMEOUT_S,
        default_ttl_s: float | None = DEFAULT_TTL_S,
        run_retention_s: float = RUN_RETENTION_S,
        runsync_retention_s: float = RUNSYNC_RETENTION_S,
        webhook_retries: int = WEBHOOK_RETRIES,
        webhook_retry_delay_s: float = WEBHOOK_RETRY_DELAY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.handler = Path(handler).resolve()
        self.host = host
        self.port = port
        self.workers = workers
        self.api_key = api_key
        self.env = dict(env or {})
        self.cwd = Path(cwd).resolve() if cwd is not None else self.handler.parent
        self.log_dir = Path(log_dir) if log_dir is not None else None
        self.endpoint_id = endpoint_id
        self.python = python
        self.ping_timeout_s = ping_timeout_s
        self.take_hold_s = take_hold_s
        self.stop_hold_s = stop_hold_s
        self.stop_grace_s = stop_grace_s
        self.webhook_retries = webhook_retries
        self.webhook_retry_delay_s = webhook_retry_delay_s
        self.board = JobBoard(
            max_redeliveries=max_redeliveries,
            default_execution_timeout_s=default_execution_timeout_s,
            default_ttl_s=default_ttl_s,
            run_retention_s=run_retention_s,
            runsync_retention_s=runsync_retention_s,
            clock=clock,
        )
        # Worker routes take only this secret, and client routes refuse it: a client must not
        # read queued inputs or post results. External workers need it passed in.
        self.worker_secret = worker_secret or secrets.token_urlsafe(32)
        if self.worker_secret == api_key:
            raise ValueError("the worker secret must differ from the client API key")
        self._procs: dict[str, _Proc] = {}
        self._lock = threading.Lock()
        self._spawned = 0
        self._next_spawn_at = 0.0
        self._stopping = threading.Event()
        self._server: EndpointServer | None = None
        self._threads: list[threading.Thread] = []

    # ---- lifecycle ---------------------------------------------------------------------

    def __enter__(self) -> LocalPod:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> LocalPod:
        if not self.handler.is_file():
            raise FileNotFoundError(f"handler not found: {self.handler}")
        if self.log_dir is None:
            self.log_dir = Path(tempfile.mkdtemp(prefix="localpod-logs-"))
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._server = EndpointServer(
            (self.host, self.port),
            board=self.board,
            endpoint_id=self.endpoint_id,
            authorize=self._authorize,
            worker_counts=self._worker_counts,
            on_final=self._on_final,
            take_hold_s=self.take_hold_s,
            stop_hold_s=self.stop_hold_s,
        )
        self.port = self._server.server_address[1]
        serve = threading.Thread(target=self._server.serve_forever, name="localpod-http")
        supervise = threading.Thread(target=self._supervise, name="localpod-supervisor")
        self._threads = [serve, supervise]
        for thread in self._threads:
            thread.daemon = True
            thread.start()
        return self

    def stop(self) -> None:
        """Terminate every worker (SIGTERM, then SIGKILL after the grace) and the server."""
        with self._lock:  # the lock _spawn checks the flag under: no worker starts after this
            if self._stopping.is_set():
                return
            self._stopping.set()
        if len(self._threads) > 1:
            self._threads[1].join()  # the supervisor: no respawn or redelivery from here on
        self.board.close()
        with self._lock:
            procs = list(self._procs.values())
        for proc in procs:
            _signal(proc.popen.pid, signal.SIGTERM, group=False)
        deadline = time.monotonic() + self.stop_grace_s
        for proc in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.popen.wait(max(0.0, deadline - time.monotonic()))
            # The group too: the SDK's heartbeat child outlives a killed parent.
            _signal(proc.popen.pid, signal.SIGKILL, group=True)
            proc.popen.wait()
        with self._lock:
            self._procs.clear()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)

    # ---- addresses ---------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """What `runpod.endpoint_url_base` takes: the URL without the endpoint id."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host  # noqa: S104
        return f"http://{host}:{self.port}/v2"

    @property
    def url(self) -> str:
        return f"{self.base_url}/{self.endpoint_id}"

    @property
    def events(self) -> Events:
        return self.board.events

    @property
    def stopping(self) -> bool:
        """Whether stop() has begun: from then on no worker is started."""
        return self._stopping.is_set()

    # ---- test helpers ------------------------------------------------------------------

    def worker_pids(self) -> list[int]:
        with self._lock:
            return [p.popen.pid for p in self._procs.values() if p.popen.poll() is None]

    def worker_ids(self) -> list[str]:
        with self._lock:
            return [p.id for p in self._procs.values() if p.popen.poll() is None]

    def worker_log(self, worker_id: str) -> Path:
        assert self.log_dir is not None
        return self.log_dir / f"{worker_id}.log"

    def kill_worker(self, sig: int = signal.SIGKILL, worker_id: str | None = None) -> str:
        """Signal one worker: `worker_id`, else one with a job, else any. Its id.

        SIGKILL takes its whole process group (a dead machine); other signals reach the
        SDK's main process only, so SIGTERM exercises its drain.
        """
        with self.board.cond, self._lock:
            alive = [p for p in self._procs.values() if p.popen.poll() is None]
            busy = [p for p in alive if (s := self.board.seats.get(p.id)) and s.jobs]
            chosen = [p for p in alive if p.id == worker_id] if worker_id else busy or alive
            if not chosen:
                raise LookupError(f"no live worker {worker_id or ''}".strip())
            proc = chosen[0]
            if sig in (signal.SIGTERM, signal.SIGINT):
                self.board.seat(proc.id).draining = True
                self.board.cond.notify_all()
        _signal(proc.popen.pid, sig, group=sig == signal.SIGKILL)
        return proc.id

    def redeliver(self, job_id: str) -> None:
        """Deliver `job_id` again (same id and input), as RunPod may after a finished job."""
        if self.board.redeliver(job_id) is None:
            raise LookupError(f"no job {job_id}")

    def wait_for(
        self, job_id: str, statuses: Iterable[str] = FINAL_STATUSES, timeout: float = 30.0
    ) -> dict[str, Any]:
        return self.board.wait_for(job_id, statuses, timeout)

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Block until every worker has asked for a job (the SDK is up)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.board.cond:
                if sum(1 for w in self.worker_ids() if w in self.board.seats) >= self.workers:
                    return
            time.sleep(0.05)
        raise TimeoutError(f"workers not ready after {timeout} s; logs in {self.log_dir}")

    # ---- internals ---------------------------------------------------------------------

    def _authorize(self, header: str | None, worker: bool) -> bool:
        """Worker routes: the worker secret only. Client routes: the API key (any non-empty
        key without one), never the worker secret."""
        # Clients send "Bearer <key>"; the SDK worker sends the bare key.
        key = (header or "").removeprefix("Bearer ").strip().encode()
        is_secret = hmac.compare_digest(key, self.worker_secret.encode())
        if worker:
            return is_secret
        if is_secret or not key:
            return False
        return self.api_key is None or hmac.compare_digest(key, self.api_key.encode())

    def _worker_counts(self) -> tuple[int, int]:
        with self.board.cond:
            seats = self.board.seats
            running = sum(1 for s in seats.values() if s.jobs)
            idle = len(seats) - running
            # Managed workers still booting have no seat yet: count them idle.
            idle += sum(1 for w in self.worker_ids() if w not in seats)
            return idle, running

    def _on_final(self, worker_id: str, job: Job, stop_pod: bool) -> None:
        if job.webhook:
            with self.board.cond:
                body = job.view(self.board.clock())
            send_webhook(
                job.webhook,
                body,
                retries=self.webhook_retries,
                delay_s=self.webhook_retry_delay_s,
                record=lambda outcome: self.board.record_webhook(job.id, outcome),
            )
        if stop_pod:
            # A per-job refresh_worker asks the platform to replace the worker.
            with contextlib.suppress(LookupError):
                self.kill_worker(signal.SIGTERM, worker_id)

    def _worker_env(self, worker_id: str) -> dict[str, str]:
        base = f"http://127.0.0.1:{self.port}/v2/{self.endpoint_id}"
        query = "?gpu=localpod"  # the SDK appends "&..." to each URL
        env = dict(os.environ)
        env.update(
            {
                # Placeholders stay literal: the SDK substitutes them.
                "RUNPOD_WEBHOOK_GET_JOB": f"{base}/job-take/$ID{query}",
                "RUNPOD_WEBHOOK_POST_OUTPUT": f"{base}/job-done/$RUNPOD_POD_ID/$ID{query}",
                "RUNPOD_WEBHOOK_POST_STREAM": f"{base}/job-stream/$RUNPOD_POD_ID/$ID{query}",
                "RUNPOD_WEBHOOK_PING": f"{base}/ping/$RUNPOD_POD_ID{query}",
                "RUNPOD_POD_ID": worker_id,
                "RUNPOD_ENDPOINT_ID": self.endpoint_id,
                "RUNPOD_PING_INTERVAL": "1000",
                # Offline boxes fail the 8.8.8.8 and GPU fitness checks.
                "RUNPOD_SKIP_AUTO_SYSTEM_CHECKS": "true",
                "RUNPOD_SKIP_GPU_CHECK": "true",
                # Tests serve datasets from localhost.
                "RUNPOD_ALLOW_PRIVATE_DOWNLOAD_URLS": "true",
            }
        )
        env.update(self.env)
        # After the caller's env: a key it or the developer's shell exports must not replace it.
        env["RUNPOD_AI_API_KEY"] = self.worker_secret
        return env

    def _spawn(self) -> None:
        with self._lock:
            if self._stopping.is_set():  # a round that began before stop() spawns nothing
                return
            self._spawned += 1
            worker_id = f"w{self._spawned}-{uuid.uuid4().hex[:6]}"
            log_path = self.worker_log(worker_id)
            with log_path.open("wb") as log:
                popen = subprocess.Popen(
                    [self.python, "-u", str(WORKER_BOOT), str(self.handler)],
                    cwd=self.cwd,
                    env=self._worker_env(worker_id),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # its own group: a kill reaches the heartbeat child
                )
            self._procs[worker_id] = _Proc(worker_id, popen, log_path, time.monotonic())

    def _supervise(self) -> None:
        while not self._stopping.wait(SUPERVISE_EVERY_S):
            self._reap()
            _, silent = self.board.expire(ping_timeout_s=self.ping_timeout_s)
            for worker_id in silent:
                with self._lock:
                    proc = self._procs.get(worker_id)
                if proc is None:  # an external worker: nothing to kill, just redeliver
                    self.board.worker_gone(worker_id, None)
                else:
                    _signal(proc.popen.pid, signal.SIGKILL, group=True)
            with self._lock:
                missing = self.workers - len(self._procs)
            if missing > 0 and time.monotonic() >= self._next_spawn_at:
                for _ in range(missing):
                    self._spawn()

    def _reap(self) -> None:
        with self._lock:
            dead = [p for p in self._procs.values() if p.popen.poll() is not None]
            for proc in dead:
                del self._procs[proc.id]
        for proc in dead:
            _signal(proc.popen.pid, signal.SIGKILL, group=True)  # leftovers of its group
            self.board.worker_gone(proc.id, proc.popen.returncode)
            crashed = (proc.popen.returncode or 0) > 0  # not a signal from us or a test
            if crashed and time.monotonic() - proc.started_at < QUICK_DEATH_S:
                self._next_spawn_at = time.monotonic() + RESPAWN_BACKOFF_S


def _signal(pid: int, sig: int, *, group: bool) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if group:
            os.killpg(pid, sig)  # start_new_session made the pid its group id
        else:
            os.kill(pid, sig)
