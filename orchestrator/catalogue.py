"""The model catalogue: one frozen entry per `model_type`, declared once as data.

Everything that differs between models (the diffusion-pipe `[model] type`, which media a model
trains on, the file name of the saved LoRA, the training defaults) lives here, so the request
schema, the TOML writer and the docs read one table instead of scattering `if model_type == ...`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal

Medium = Literal["images", "videos"]

IMAGES: frozenset[Medium] = frozenset({"images"})
VIDEOS: frozenset[Medium] = frozenset({"videos"})
IMAGES_AND_VIDEOS: frozenset[Medium] = frozenset({"images", "videos"})

# The seed README's documented training defaults (its "Training Configuration" tables), in the
# README's order. Every model starts from these; an entry's `overrides` replace single keys.
# Sequences are tuples so the shared table cannot be mutated through one entry.
BASE_DEFAULTS: Mapping[str, Any] = MappingProxyType(
    {
        "epochs": 100,
        "learning_rate": 2e-5,
        "batch_size": 1,
        "gradient_accumulation_steps": 4,
        "gradient_clipping": 1.0,
        "warmup_steps": 100,
        "lora_rank": 32,
        "lora_dtype": "bfloat16",
        "save_every_n_epochs": 10,
        "checkpoint_every_n_minutes": 120,
        "save_dtype": "bfloat16",
        "optimizer_type": "adamw_optimi",
        "optimizer_betas": (0.9, 0.99),
        "optimizer_weight_decay": 0.01,
        "optimizer_eps": 1e-8,
        "video_clip_mode": "single_middle",
        "frame_buckets": (1, 33),
        "resolution": 1024,
        "activation_checkpointing": True,
        "caching_batch_size": 1,
        "eval_every_n_epochs": 1,
        "eval_before_first_step": True,
    }
)


@dataclass(frozen=True, slots=True)
class ModelEntry:
    model_type: str
    display_name: str
    diffusion_pipe_type: str  # the `[model] type` value diffusion-pipe dispatches on
    gated: bool  # the weights need a Hugging Face token whose account accepted a licence
    media: frozenset[Medium]
    lora_file: str  # the file name diffusion-pipe saves the adapter under
    defaults: Mapping[str, Any]  # BASE_DEFAULTS with this entry's overrides applied

    @property
    def trains_images(self) -> bool:
        return "images" in self.media

    @property
    def trains_videos(self) -> bool:
        return "videos" in self.media


def _entry(
    model_type: str,
    display_name: str,
    diffusion_pipe_type: str,
    *,
    media: frozenset[Medium],
    lora_file: str = "adapter_model.safetensors",
    gated: bool = False,
    overrides: Mapping[str, Any] | None = None,
) -> ModelEntry:
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(BASE_DEFAULTS))
    if unknown:  # a misspelt override would otherwise be a silent no-op
        raise ValueError(f"{model_type}: overrides for unknown training keys {unknown}")
    return ModelEntry(
        model_type=model_type,
        display_name=display_name,
        diffusion_pipe_type=diffusion_pipe_type,
        gated=gated,
        media=media,
        lora_file=lora_file,
        defaults=MappingProxyType({**BASE_DEFAULTS, **overrides}),
    )


_ENTRIES: tuple[ModelEntry, ...] = (
    _entry(
        "flux",
        "Flux",
        "flux",
        media=IMAGES,
        lora_file="pytorch_lora_weights.safetensors",
        gated=True,  # black-forest-labs/FLUX.1-dev is licence-gated
    ),
    _entry("sdxl", "SDXL", "sdxl", media=IMAGES, lora_file="lora.safetensors"),
    _entry("wan13", "Wan 1.3B", "wan", media=IMAGES_AND_VIDEOS),
    _entry("wan14b_t2v", "Wan 14B T2V", "wan", media=IMAGES_AND_VIDEOS),
    # diffusion-pipe asserts that i2v trains on videos only (the first frame is the condition).
    _entry("wan14b_i2v", "Wan 14B I2V", "wan", media=VIDEOS),
    _entry("qwen", "Qwen Image", "qwen_image", media=IMAGES),
    _entry("z_image_turbo", "Z Image Turbo", "z_image", media=IMAGES),
    # Not a public model: a tiny CPU model (minipipe) for tests and local runs. Its defaults are
    # shrunk so an end-to-end CPU run takes seconds, not hours.
    _entry(
        "tiny",
        "Tiny (minipipe, CPU)",
        "tiny",
        media=IMAGES_AND_VIDEOS,
        overrides={
            "epochs": 2,
            "resolution": 64,
            "lora_rank": 4,
            "warmup_steps": 0,
            "gradient_accumulation_steps": 1,
            "save_every_n_epochs": 1,
        },
    ),
)

CATALOGUE: Mapping[str, ModelEntry] = MappingProxyType({e.model_type: e for e in _ENTRIES})

# The seven models the seed README promises, in its order. Error messages list only these.
MODEL_TYPES: tuple[str, ...] = (
    "flux",
    "sdxl",
    "wan13",
    "wan14b_t2v",
    "wan14b_i2v",
    "qwen",
    "z_image_turbo",
)
# Everything the request accepts: the public models plus the CPU test model.
ALL_MODEL_TYPES: tuple[str, ...] = (*MODEL_TYPES, "tiny")


class UnknownModelTypeError(ValueError):
    """`model_type` names no catalogue entry."""

    def __init__(self, model_type: object) -> None:
        self.model_type = model_type
        shown = str(model_type)[:60]
        super().__init__(
            f'model_type "{shown}" is not implemented; use one of: {", ".join(MODEL_TYPES)}'
        )


def get_model(model_type: str) -> ModelEntry:
    """The catalogue entry for `model_type`; raises UnknownModelTypeError (a ValueError)."""
    try:
        return CATALOGUE[model_type]
    except (KeyError, TypeError):  # TypeError: an unhashable value from a malformed request
        raise UnknownModelTypeError(model_type) from None
