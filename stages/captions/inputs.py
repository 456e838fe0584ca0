"""The captions stage's plain inputs: what to caption, the trigger word, the Gemini key and
model."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import SecretStr

# A pinned model id, not an alias such as gemini-flash-latest: an alias moves to a new model
# (new behaviour, new quotas) without a release of ours, and the old ports died on model ids
# Google later shut down. Requests choose another with dataset.gemini_model.
DEFAULT_GEMINI_MODEL = "gemini-2.5-flash"


@dataclass(frozen=True)
class CaptionInputs:
    images: bool  # caption `<job>/dataset/images/` with JoyCaption (dataset.type images/both)
    videos: bool  # caption `<job>/dataset/videos/` with Gemini (dataset.type videos/both)
    trigger_word: str | None = None
    gemini_api_key: SecretStr | None = None  # required when a video needs a caption
    gemini_model: str = DEFAULT_GEMINI_MODEL  # dataset.gemini_model, without "models/"
