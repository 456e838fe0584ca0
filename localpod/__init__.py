"""localpod: a local RunPod-compatible endpoint for development and tests.

Serves RunPod's client API (/run, /runsync, /status, /cancel, /retry, /health) and the
worker protocol (job-take, job-stop, job-done, job-stream, ping), and runs the real
`runpod` SDK worker loop against it as subprocesses, under RunPod's platform rules (default
execution timeout, TTL, result retention, webhook retries: settings with RunPod's defaults,
localpod/README.md). Not a production server.
"""

from localpod.board import (
    CANCELLED,
    COMPLETED,
    FAILED,
    FINAL_STATUSES,
    IN_PROGRESS,
    IN_QUEUE,
    TIMED_OUT,
    Events,
    Job,
    JobBoard,
)
from localpod.pod import LocalPod

__all__ = [
    "CANCELLED",
    "COMPLETED",
    "FAILED",
    "FINAL_STATUSES",
    "IN_PROGRESS",
    "IN_QUEUE",
    "TIMED_OUT",
    "Events",
    "Job",
    "JobBoard",
    "LocalPod",
]
