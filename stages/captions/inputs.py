"""The captions stage's plain inputs: what to caption, the trigger word, the Gemini key."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import SecretStr


@dataclass(frozen=True)
class CaptionInputs:
    images: bool  # caption `<job>/dataset/images/` with JoyCaption (dataset.type images/both)
    videos: bool  # caption `<job>/dataset/videos/` with Gemini (dataset.type videos/both)
    trigger_word: str | None = None
    gemini_api_key: SecretStr | None = None  # required when a video needs a caption
