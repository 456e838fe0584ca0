"""Caption text rules shared by the dataset and captioning stages: the trigger word.

`apply_trigger(caption, trigger)` gives `"<trigger>, <caption>"` (the template's form, peers.md
§1.4) unless the caption already starts with the trigger, so applying it twice is harmless: a job
delivered again, or a caption that the user wrote with the trigger, is left as it is.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

from events.atomic import fsync_dir

_EDGE = " \t\r\n,.;:!?-_\"'()[]{}"


def _norm(text: str) -> str:
    return " ".join(text.strip(_EDGE).lower().split())


def has_trigger(caption: str, trigger: str) -> bool:
    """Does `caption` already start with `trigger` (case-insensitive, as a whole word)?"""
    want = _norm(trigger)
    head = " ".join(caption.lstrip(_EDGE).lower().split())
    if not want or not head.startswith(want):
        return False
    rest = head[len(want) :]
    return not rest or not rest[0].isalnum()  # "ohwx" must not match "ohwxman"


def apply_trigger(caption: str, trigger: str | None) -> str:
    """`"<trigger>, <caption>"`, or the caption unchanged when it already starts with it."""
    text = caption.strip()
    word = (trigger or "").strip()
    if not word or has_trigger(text, word):
        return text if word else caption
    return f"{word}, {text}" if text else word


def apply_trigger_to_dir(folder: Path, trigger: str | None) -> int:
    """Apply the trigger to every `*.txt` caption in `folder` (write temp + rename each);
    returns how many changed. Captions that are not UTF-8 are left alone."""
    if not trigger or not folder.is_dir():
        return 0
    changed = 0
    for path in sorted(folder.glob("*.txt")):
        try:
            old = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        new = apply_trigger(old, trigger)
        if new == old:
            continue
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
        tmp.write_text(new, encoding="utf-8")
        os.replace(tmp, path)
        changed += 1
    if changed:
        fsync_dir(folder)  # one directory sync for the batch: each rename is atomic already
    return changed
