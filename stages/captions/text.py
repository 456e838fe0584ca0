"""Caption files and the trigger word, shared by the dataset stage and both captioners.

`apply_trigger(caption, trigger)` gives `"<trigger>, <caption>"` (the template's form, peers.md
§1.4) unless the caption already starts with the trigger, so applying it twice is harmless: a job
delivered again, or a caption that the user wrote with the trigger, is left as it is. The same
rule serves captions that came with the data (`stages.dataset`) and the ones JoyCaption and
Gemini write (`write_caption`: one line, the trigger in front, written atomically).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

from events.atomic import write_atomic

Progress = Callable[[int, int], None]  # (done, total) of the media that need a caption

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


# --- caption files ------------------------------------------------------------------------------


def caption_path(media: Path) -> Path:
    """diffusion-pipe reads a media file's caption from the same-stem `.txt` beside it."""
    return media.with_suffix(".txt")


def has_caption(media: Path) -> bool:
    # Any existing file counts: a precaptioned or earlier-attempt caption is never overwritten,
    # and write_atomic guarantees a crash leaves no half-written one.
    return caption_path(media).is_file()


def clean_caption(text: str) -> str:
    """One line: diffusion-pipe treats the whole file as the caption; newlines help nobody."""
    return " ".join(text.split())


def with_trigger(caption: str, trigger: str | None) -> str:
    """A generated caption as it is written: one line, the trigger in front once."""
    return apply_trigger(clean_caption(caption), trigger)


def write_caption(media: Path, caption: str, trigger: str | None) -> Path:
    target = caption_path(media)
    write_atomic(target, with_trigger(caption, trigger) + "\n")
    return target


def list_media(folder: Path, extensions: Iterable[str]) -> list[Path]:
    """Media files under `folder` (recursively, hidden names skipped), in a stable order."""
    if not folder.is_dir():
        return []
    wanted = {e.lower() for e in extensions}
    return sorted(
        p
        for p in folder.rglob("*")
        if p.is_file()
        and p.suffix.lower() in wanted
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )
