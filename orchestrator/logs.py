"""structlog setup: JSON lines in the worker, readable lines in a terminal.

In the worker (`stdlib=True`) the standard library's records (huggingface_hub, httpx, the
Gemini client, warnings) are rendered by the same processors as structlog's own, replacing the
plain-text root handler that `import runpod` installs (`logging.basicConfig(level=INFO)` in
runpod/serverless/utils/rp_upload.py). Libraries that log every request or state change at
INFO (`QUIET`) are held at WARNING unless named in `DPS_DEBUG_LOGGERS`.

The RunPod SDK's own lines (`RunPodLogger`) are printed by the SDK to stdout: JSON objects
`{"requestId", "message", "level"}` when `RUNPOD_ENDPOINT_ID` is set (on RunPod, and in
localpod), `LEVEL  | message` text otherwise; its start banner (`--- Starting Serverless
Worker | Version ... ---`) is always text.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog

# Each logs a line per HTTP request, lock or state-machine callback at INFO: noise in a job log.
QUIET = (
    "transitions",
    "httpx",
    "httpcore",
    "huggingface_hub",
    "filelock",
    "urllib3",
    "botocore",
    "boto3",
    "s3transfer",
    "google_genai",
)
_OURS = "_dps_handler"  # marks the root handler this module installed


@dataclass(frozen=True)
class LogSettings:
    """`DPS_LOG_LEVEL` (the worker's level, INFO) and `DPS_DEBUG_LOGGERS` (comma-separated
    logger names shown at DEBUG, `QUIET` ones included; `all` for every one of `QUIET`)."""

    level: int = logging.INFO
    debug_loggers: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> LogSettings:
        name = (env.get("DPS_LOG_LEVEL") or "INFO").strip().upper()
        level = logging.getLevelNamesMapping().get(name)
        if level is None:
            raise ValueError(f"DPS_LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR, got {name!r}")
        names = (env.get("DPS_DEBUG_LOGGERS") or "").split(",")
        return cls(level=level, debug_loggers=frozenset(n.strip() for n in names if n.strip()))


def _stderr_logger(*_args: Any) -> structlog.PrintLogger:
    return structlog.PrintLogger(sys.stderr)


def configure_logging(
    *,
    json_lines: bool | None = None,
    level: int = logging.INFO,
    stdlib: bool = False,
    debug_loggers: Iterable[str] = (),
) -> None:
    """JSON when asked, or when stderr is not a terminal (the RunPod worker's case). With
    `stdlib`, the standard library's records go through the same renderer (see the module doc)."""
    as_json = json_lines if json_lines is not None else not sys.stderr.isatty()
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if as_json
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    stamp = structlog.processors.TimeStamper(fmt="iso", utc=True)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            stamp,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        # sys.stderr is looked up per logger, not bound once: tests and tools swap it.
        logger_factory=_stderr_logger,
        cache_logger_on_first_use=False,
    )
    if stdlib:
        _route_stdlib(renderer, stamp, level, frozenset(debug_loggers))


def _route_stdlib(
    renderer: structlog.typing.Processor,
    stamp: structlog.typing.Processor,
    level: int,
    debug_loggers: frozenset[str],
) -> None:
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            structlog.stdlib.add_log_level,
            structlog.stdlib.add_logger_name,
            stamp,
        ],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    setattr(handler, _OURS, True)
    root = logging.getLogger()
    for old in list(root.handlers):
        # basicConfig's plain StreamHandler (runpod's) and an earlier call's; a test harness's
        # handlers (subclasses, such as pytest's capture) stay.
        if type(old) is logging.StreamHandler or getattr(old, _OURS, False):
            root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    everything = "all" in debug_loggers
    for name in QUIET:
        shown = everything or name in debug_loggers
        logging.getLogger(name).setLevel(logging.DEBUG if shown else logging.WARNING)
    for name in debug_loggers - {"all"}:
        logging.getLogger(name).setLevel(logging.DEBUG)
    logging.captureWarnings(True)  # warnings.warn lines as records, rendered like the rest
