"""The rules between fields: what a dataset type needs, what a model trains on, which keys a
caption or a gated model or an output method requires.

Each rule reads raw (possibly invalid) input and looks only at presence and at values that are
valid in themselves, so a field that is malformed is reported once, by its own validation, not
again here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from orchestrator.catalogue import CATALOGUE, ModelEntry
from orchestrator.errors import Problem
from orchestrator.request.fields import DATASET_TYPES

_GATED_HINT: Mapping[str, str] = {
    "flux": "the FLUX.1-dev licence at https://huggingface.co/black-forest-labs/FLUX.1-dev",
}


def _section(data: Mapping[Any, Any], key: str) -> Mapping[Any, Any]:
    value = data.get(key)
    return value if isinstance(value, Mapping) else {}


@dataclass(frozen=True)
class _Raw:
    """The parts of a raw request the rules read."""

    entry: ModelEntry | None
    kind: str | None  # dataset.type, when it is a valid one
    has_images: bool
    has_videos: bool
    api_keys: Mapping[Any, Any]
    output: Mapping[Any, Any]

    @classmethod
    def of(cls, data: Mapping[Any, Any]) -> _Raw:
        raw_type = data.get("model_type")
        dataset = _section(data, "dataset")
        return cls(
            entry=CATALOGUE.get(raw_type) if isinstance(raw_type, str) else None,
            kind=dataset.get("type") if dataset.get("type") in DATASET_TYPES else None,
            has_images=dataset.get("images_url") is not None,
            has_videos=dataset.get("videos_url") is not None,
            api_keys=_section(data, "api_keys"),
            output=_section(data, "output"),
        )

    @property
    def images_ok(self) -> bool:
        return self.entry is None or self.entry.trains_images

    @property
    def videos_ok(self) -> bool:
        return self.entry is None or self.entry.trains_videos


def cross_field_problems(data: Mapping[Any, Any]) -> list[Problem]:
    """Every rule that spans fields, over raw input, in the order a user reads them."""
    raw = _Raw.of(data)
    return [
        *_dataset_urls(raw),
        *_media_the_model_trains_on(raw),
        *_caption_key(raw),
        *_gated_token(raw),
        *_output_fields(raw),
        *_resume_fields(data),
    ]


def _dataset_urls(raw: _Raw) -> list[Problem]:
    problems: list[Problem] = []
    if raw.kind == "images" and not raw.has_images and raw.images_ok:
        problems.append(("dataset.images_url", 'required when dataset.type is "images"'))
    if raw.kind == "videos" and not raw.has_videos and raw.videos_ok:
        problems.append(("dataset.videos_url", 'required when dataset.type is "videos"'))
    if raw.kind in ("precaptioned", "both") and not raw.has_images and not raw.has_videos:
        problems.append(("dataset.images_url", f"{raw.kind} needs images_url or videos_url"))
    return problems


def _media_the_model_trains_on(raw: _Raw) -> list[Problem]:
    problems: list[Problem] = []
    if raw.entry is not None and not raw.images_ok:
        message = f"{raw.entry.model_type} trains on videos only"
        if raw.kind == "images":
            problems.append(("dataset.type", message))
        elif raw.has_images:
            problems.append(("dataset.images_url", message))
    if raw.entry is not None and not raw.videos_ok:
        message = f"{raw.entry.display_name} trains on images only"
        if raw.has_videos:
            problems.append(("dataset.videos_url", message))
        elif raw.kind == "videos":
            problems.append(("dataset.type", message))
    return problems


def _caption_key(raw: _Raw) -> list[Problem]:
    captions_videos = raw.kind == "videos" or (raw.kind == "both" and raw.has_videos)
    if captions_videos and raw.videos_ok and raw.api_keys.get("gemini_api_key") is None:
        return [
            (
                "api_keys.gemini_api_key",
                'required to caption videos (dataset.type "videos" or "both" with videos_url)',
            )
        ]
    return []


def _gated_token(raw: _Raw) -> list[Problem]:
    entry = raw.entry
    if (
        entry is None
        or not entry.gated
        or raw.api_keys.get("huggingface_token") is not None
        or _section(raw.output, "huggingface").get("token") is not None  # it may download too
    ):
        return []
    hint = _GATED_HINT.get(entry.model_type, f"the {entry.display_name} licence")
    return [
        (
            "api_keys.huggingface_token",
            f"{entry.display_name} is a gated model; give a Hugging Face token whose "
            f"account accepted {hint}",
        )
    ]


def _resume_fields(data: Mapping[Any, Any]) -> list[Problem]:
    if data.get("resume_from_lora") is True and data.get("resume_from") is None:
        return [("resume_from_lora", "needs resume_from: the job whose LoRA to start from")]
    return []


def _output_fields(raw: _Raw) -> list[Problem]:
    problems: list[Problem] = []
    method = raw.output.get("method", "auto")
    if method == "huggingface" and _section(raw.output, "huggingface").get("token") is None:
        problems.append(
            ("output.huggingface.token", 'required when output.method is "huggingface"')
        )
    if method == "s3":
        s3 = _section(raw.output, "s3")
        for key in ("bucket", "access_key", "secret_key"):
            if s3.get(key) is None:
                problems.append((f"output.s3.{key}", 'required when output.method is "s3"'))
    return problems
