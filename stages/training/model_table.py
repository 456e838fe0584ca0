"""diffusion-pipe's `[model]` table: a catalogue template whose paths are filled in per volume.

The catalogue writes each weight path as a `ModelPath` relative to the models root; `fill` makes
them absolute when the config is rendered, so one template serves every volume.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any


@dataclass(frozen=True, slots=True)
class ModelPath:
    """A `[model]` table value that is a path under the models root, filled in at render time."""

    rel: str


def fill(value: Any, models_root: str) -> Any:
    """A deep copy of a `[model]` template with every ModelPath made absolute."""
    if isinstance(value, ModelPath):
        return str(PurePosixPath(models_root) / value.rel)
    if isinstance(value, Mapping):
        return {k: fill(v, models_root) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [fill(v, models_root) for v in value]
    return value


# The `[model]` key that holds the diffusion model's own dtype (e.g. "float8") differs by model
# family: flux, wan and qwen_image read `transformer_dtype`; ComfyUI-based models (z_image) read
# `diffusion_model_dtype` (models/base.py:664) and would silently ignore `transformer_dtype`.
TRANSFORMER_DTYPE = "transformer_dtype"
DIFFUSION_MODEL_DTYPE = "diffusion_model_dtype"
_DTYPE_KEYS = frozenset({TRANSFORMER_DTYPE, DIFFUSION_MODEL_DTYPE})
_READS: dict[str, str] = {
    "flux": TRANSFORMER_DTYPE,
    "wan": TRANSFORMER_DTYPE,
    "qwen_image": TRANSFORMER_DTYPE,
    "z_image": DIFFUSION_MODEL_DTYPE,
}


def model_key(diffusion_pipe_type: str, key: str) -> str:
    """The `[model]` key diffusion-pipe reads for a request's `training.model` key: either
    spelling of the diffusion model's dtype becomes the one this model type reads."""
    if key in _DTYPE_KEYS:
        return _READS.get(diffusion_pipe_type, key)
    return key


def model_table(
    diffusion_pipe_type: str, template: Mapping[str, Any], models_root: str
) -> dict[str, Any]:
    """The `[model]` table for weights under `models_root`: the type, then the template."""
    table: dict[str, Any] = {"type": diffusion_pipe_type}
    table.update(fill(template, models_root))
    return table
