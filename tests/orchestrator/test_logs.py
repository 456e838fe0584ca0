"""The worker's logging: the standard library's records as the same JSON lines as structlog's,
after `import runpod` installed its plain-text root handler; chatty libraries quiet unless
DPS_DEBUG_LOGGERS names them. Run in a subprocess: logging is process-wide."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap

import pytest

from orchestrator.logs import LogSettings
from tests.support.paths import REPO

SCRIPT = textwrap.dedent(
    """
    import logging, sys, warnings
    import runpod  # noqa: F401 - its logging.basicConfig(level=INFO) is what we replace
    import structlog
    from orchestrator.logs import LogSettings, configure_logging

    ours = LogSettings.from_env({"DPS_DEBUG_LOGGERS": sys.argv[1]})
    configure_logging(json_lines=True, stdlib=True, level=ours.level,
                      debug_loggers=ours.debug_loggers)
    structlog.get_logger("orchestrator.x").info("from structlog", n=1)
    logging.getLogger("stages.captions.gemini").info("from the stdlib %s", "ok")
    logging.getLogger("transitions.core").info("Executed callback")
    logging.getLogger("httpx").info("HTTP Request: GET http://h/ 200")
    logging.getLogger("httpx").warning("a warning gets through")
    warnings.warn("a python warning")
    """
)


def _lines(debug_loggers: str) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, debug_loggers],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stderr.splitlines()


def test_every_line_is_json_and_the_chatty_libraries_are_quiet() -> None:
    records = [json.loads(line) for line in _lines("")]  # raises on a line that is not JSON
    events = [r["event"] for r in records]
    assert events[:2] == ["from structlog", "from the stdlib ok"]
    assert "Executed callback" not in events
    assert "HTTP Request: GET http://h/ 200" not in events
    assert "a warning gets through" in events
    assert any("a python warning" in e for e in events)
    stdlib = records[1]
    assert stdlib["logger"] == "stages.captions.gemini"
    assert stdlib["level"] == "info"
    assert {"event", "level", "timestamp"} <= set(records[0])


def test_dps_debug_loggers_turns_a_quiet_library_back_on() -> None:
    events = [json.loads(line)["event"] for line in _lines("httpx")]
    assert "HTTP Request: GET http://h/ 200" in events
    assert "Executed callback" not in events
    every = [json.loads(line)["event"] for line in _lines("all")]
    assert "Executed callback" in every


def test_log_settings_from_the_environment() -> None:
    assert LogSettings.from_env({}) == LogSettings(logging.INFO, frozenset())
    got = LogSettings.from_env({"DPS_LOG_LEVEL": "debug", "DPS_DEBUG_LOGGERS": "httpx, a.b"})
    assert got == LogSettings(logging.DEBUG, frozenset({"httpx", "a.b"}))
    with pytest.raises(ValueError, match="DPS_LOG_LEVEL"):
        LogSettings.from_env({"DPS_LOG_LEVEL": "loud"})
