"""What a failed run's answer shows: the few lines that say why, without the worker's paths.

The whole output stays in the job's `logs/train.log`; the answer (the job's error, read by users
and apps) gets the exception of the last Python traceback, with the frame that raised it, or,
when there is none, the last lines that are not progress. Paths are cut to what a user can
place: `models/wan/attention.py`, not `/opt/diffusion-pipe/models/wan/attention.py`, and
nothing under the job or volume folders.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from stages.training import log_lines as tl

MAX_LINES = 6
MAX_LINE_CHARS = 300

_FRAME = re.compile(r'^\s*File "(?P<path>[^"]+)", line (?P<line>\d+)(?:, in (?P<func>.+))?$')
# An absolute path; its tail is kept from the last folder a reader recognises.
_ABSOLUTE = re.compile(r"(?<![\w.~-])/(?:[^\s'\":,()\[\]]+/)*[^\s'\":,()\[\]]*")
_KEEP_FROM = ("site-packages", "dist-packages", "lib-dynload")
_NOISE = re.compile(r"^\s*(?:\^+|~+|[~^\s]+)$")  # 3.11's caret lines under a frame


def shorten_path(path: str, roots: Sequence[str] = ()) -> str:
    """`path` relative to the first root that holds it, or from `site-packages/`, or its name."""
    for given in roots:
        root = given.rstrip("/")
        if root and (path == root or path.startswith(root + "/")):
            return path[len(root) + 1 :] or "."
    parts = path.split("/")
    for marker in _KEEP_FROM:
        if marker in parts:
            return "/".join(parts[parts.index(marker) + 1 :]) or marker
    return parts[-1] or path


def scrub(line: str, roots: Sequence[str] = ()) -> str:
    """`line` with every absolute path shortened."""
    line = _ABSOLUTE.sub(lambda m: shorten_path(m[0], roots), line)
    return line if len(line) <= MAX_LINE_CHARS else line[: MAX_LINE_CHARS - 1] + "…"


def _last_traceback(tail: Sequence[str]) -> list[str] | None:
    """The frame that raised and the exception lines of the last traceback, if any."""
    starts = [i for i, line in enumerate(tail) if tl.TRACEBACK_START in line]
    if not starts:
        return None
    block = list(tail[starts[-1] + 1 :])
    frames = [i for i, line in enumerate(block) if _FRAME.match(line)]
    if not frames:
        return [line for line in block if line.strip()][:MAX_LINES] or None
    last = frames[-1]
    frame = _FRAME.match(block[last])
    assert frame is not None
    where = f"at {frame['path']}:{frame['line']}" + (
        f" in {frame['func']}" if frame["func"] else ""
    )
    # After the last frame: its source line, caret lines, then the exception (possibly several
    # lines long) and whatever was printed after it.
    rest = [line for line in block[last + 1 :] if line.strip() and not _NOISE.match(line)]
    source = rest[:1] if rest and rest[0].startswith("    ") else []  # a frame may have none
    exception = rest[len(source) :]
    shown = [*exception[: MAX_LINES - 1], where]
    if source and len(shown) < MAX_LINES:
        shown.append("  " + source[0].strip())
    return shown


def summary(tail: Sequence[str], roots: Sequence[str] = ()) -> list[str]:
    """The few lines that say why a run failed, paths shortened."""
    lines = _last_traceback(tail)
    if lines is None:
        lines = [
            line for line in tail if line.strip() and not isinstance(tl.parse_line(line), tl.Step)
        ][-MAX_LINES:]
    return [scrub(line.rstrip(), roots) for line in lines]
