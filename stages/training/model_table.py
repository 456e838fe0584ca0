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


def model_table(
    diffusion_pipe_type: str, template: Mapping[str, Any], models_root: str
) -> dict[str, Any]:
    """The `[model]` table for weights under `models_root`: the type, then the template."""
    table: dict[str, Any] = {"type": diffusion_pipe_type}
    table.update(fill(template, models_root))
    return table
