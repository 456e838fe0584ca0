"""The `training` section: the seed README's documented fields, and the passthrough keys.

Values left out (or null) mean "the model's default from the catalogue"; the JSON Schema states
the seed README's default for each. Keys the schema does not name pass to diffusion-pipe's TOML
as top-level keys, and the `model` / `adapter` / `optimizer` dicts are merged into those tables
(the rules over them are in `passthrough`, checked by `TrainingRequest`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    model_serializer,
)

from events.redact import mask_keys
from orchestrator.catalogue import BASE_DEFAULTS
from orchestrator.request.fields import (
    Beta,
    ClipMode,
    Dtype,
    FrameBucket,
    LoraDtype,
    OptimizerName,
    check_activation_checkpointing,
)
from stages.training.checkpoints import DEFAULT_KEEP
from stages.training.owned_keys import TABLES


def _default_text(key: str) -> str:
    value = BASE_DEFAULTS[key]
    return json.dumps(list(value) if isinstance(value, tuple) else value)


def _tf(description: str, key: str, **constraints: Any) -> Any:
    """A training field: None means "the catalogue default"; the schema shows the seed default."""
    default = BASE_DEFAULTS[key]
    return Field(
        default=None,
        description=f"{description}. Default: {_default_text(key)} (unset or null means the "
        "model's catalogue default).",
        json_schema_extra={"default": list(default) if isinstance(default, tuple) else default},
        **constraints,
    )


# A resume uses one checkpoint; a hundred is already tens of GB, so more is a mistake.
MAX_KEEP_CHECKPOINTS = 100

# Top-level diffusion-pipe keys that may pass through as they are. Known, so the typo check below


class TrainingConfig(BaseModel):
    """The seed README's documented training fields; other keys pass through to the TOML."""

    model_config = ConfigDict(extra="allow", strict=True, frozen=True, hide_input_in_errors=True)

    epochs: int | None = _tf("Total training epochs", "epochs", ge=1, le=1_000_000)
    learning_rate: float | None = _tf(
        "Optimizer learning rate", "learning_rate", gt=0, allow_inf_nan=False
    )
    batch_size: int | None = _tf("Micro batch size per GPU", "batch_size", ge=1, le=4096)
    gradient_accumulation_steps: int | None = _tf(
        "Steps before weight update", "gradient_accumulation_steps", ge=1, le=4096
    )
    gradient_clipping: float | None = _tf(
        "Max gradient norm (0 disables clipping)", "gradient_clipping", ge=0, allow_inf_nan=False
    )
    warmup_steps: int | None = _tf("LR warmup steps", "warmup_steps", ge=0, le=10_000_000)
    lora_rank: int | None = _tf("Rank of the LoRA matrices", "lora_rank", ge=1, le=1024)
    lora_dtype: LoraDtype | None = _tf("LoRA weight precision", "lora_dtype")
    save_every_n_epochs: int | None = _tf(
        "Save the LoRA every N epochs", "save_every_n_epochs", ge=1, le=1_000_000
    )
    checkpoint_every_n_minutes: int | None = _tf(
        "Save the training state (for resume) every N minutes. The seed README's 120 is lowered "
        "to 20: diffusion-pipe cannot checkpoint on preemption, so up to this much work is lost",
        "checkpoint_every_n_minutes",
        ge=1,
        le=10_000_000,
    )
    keep_checkpoints: int | None = Field(
        default=None,
        ge=1,
        le=MAX_KEEP_CHECKPOINTS,
        description="Complete checkpoints (global_stepN/, for resume) kept per run folder; "
        "older ones are deleted once a newer one is complete, as diffusion-pipe never deletes "
        "any. Saved LoRAs (epochN/, stepN/) are never deleted. Default: the worker's "
        f"DPS_KEEP_CHECKPOINTS ({DEFAULT_KEEP} unless the operator sets it).",
    )
    save_dtype: Dtype | None = _tf("Saved model precision", "save_dtype")
    optimizer_type: OptimizerName | None = _tf("Optimizer class", "optimizer_type")
    optimizer_betas: list[Beta] | None = _tf(
        "Adam beta parameters, a pair in [0, 1)", "optimizer_betas", min_length=2, max_length=2
    )
    optimizer_weight_decay: float | None = _tf(
        "L2 regularization", "optimizer_weight_decay", ge=0, allow_inf_nan=False
    )
    optimizer_eps: float | None = _tf(
        "Numerical stability term", "optimizer_eps", gt=0, allow_inf_nan=False
    )
    video_clip_mode: ClipMode | None = _tf(
        "How to extract clips from videos: single_beginning, single_middle, or "
        "multiple_overlapping (the whole video as overlapping clips, cut by the service)",
        "video_clip_mode",
    )
    frame_buckets: list[FrameBucket] | None = _tf(
        "Frame count buckets (1 is images)", "frame_buckets", min_length=1, max_length=64
    )
    resolution: int | None = _tf("Training resolution in pixels", "resolution", ge=16, le=8192)
    activation_checkpointing: Annotated[
        bool | Literal["unsloth"] | None, BeforeValidator(check_activation_checkpointing)
    ] = _tf('Save VRAM (true, false or "unsloth")', "activation_checkpointing")
    caching_batch_size: int | None = _tf(
        "Latent caching batch size", "caching_batch_size", ge=1, le=4096
    )
    eval_every_n_epochs: int | None = _tf(
        "Evaluation frequency in epochs", "eval_every_n_epochs", ge=1, le=1_000_000
    )
    eval_before_first_step: bool | None = _tf("Evaluate at the start", "eval_before_first_step")

    model: dict[str, Any] | None = Field(
        default=None,
        description="Extra keys for diffusion-pipe's [model] table (e.g. transformer_dtype). "
        "Paths and type are set by the service.",
    )
    adapter: dict[str, Any] | None = Field(
        default=None,
        description="Extra keys for diffusion-pipe's [adapter] table (e.g. dropout). Use "
        "lora_rank / lora_dtype for rank and dtype.",
    )
    optimizer: dict[str, Any] | None = Field(
        default=None,
        description="Extra keys for diffusion-pipe's [optimizer] table. Use the optimizer_* "
        "fields for type, lr, betas, weight_decay and eps.",
    )

    DOCUMENTED: ClassVar[tuple[str, ...]] = tuple(BASE_DEFAULTS)

    @model_serializer(mode="wrap", when_used="json")
    def _json_masked(self, handler: SerializerFunctionWrapHandler) -> Any:
        # JSON dumps hide secrets as SecretStr does: passthrough credentials become "***".
        return mask_keys(handler(self))

    def passthrough(self) -> dict[str, Any]:
        """The undocumented top-level keys, as given."""
        return dict(self.model_extra or {})

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        # Passthrough keys may hold credentials (monitoring.wandb_api_key); never show them.
        masked = {*TABLES, *(self.model_extra or {})}
        for name, value in super().__repr_args__():
            yield name, mask_keys({name: value})[name] if name in masked else value
