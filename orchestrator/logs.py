"""structlog setup: JSON lines in the worker, readable lines in a terminal."""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog


def _stderr_logger(*_args: Any) -> structlog.PrintLogger:
    return structlog.PrintLogger(sys.stderr)


def configure_logging(*, json_lines: bool | None = None, level: int = logging.INFO) -> None:
    """JSON when asked, or when stderr is not a terminal (the RunPod worker's case)."""
    as_json = json_lines if json_lines is not None else not sys.stderr.isatty()
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if as_json
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        # sys.stderr is looked up per logger, not bound once: tests and tools swap it.
        logger_factory=_stderr_logger,
        cache_logger_on_first_use=False,
    )
