"""The diffusion model's dtype lands under the `[model]` key the model's diffusion-pipe code reads.

flux, wan and qwen_image read `transformer_dtype`; z_image is a ComfyPipeline model and reads
`diffusion_model_dtype` (models/base.py:664), so a `transformer_dtype` written for it would be
silently ignored and the model would train at full precision.
"""

from __future__ import annotations

import tomllib
from typing import Any

import pytest

from orchestrator.catalogue import get_model
from orchestrator.plan import trainer_spec
from orchestrator.request import parse_request
from stages.errors import ConfigError
from stages.training.config import render
from tests.support.golden import GOLDEN_PATHS


def _model_table(model_type: str, model: dict[str, Any]) -> dict[str, Any]:
    """The `[model]` table of the rendered main TOML for a request with `training.model`."""
    body = {
        "model_type": model_type,
        "dataset": {"type": "precaptioned", "images_url": "https://example.com/i.zip"},
        "training": {"model": model},
        "api_keys": {"huggingface_token": "hf_test"},  # Flux is gated
    }
    configs = render(trainer_spec(parse_request(body)), GOLDEN_PATHS)
    table: dict[str, Any] = tomllib.loads(configs.main_toml())["model"]
    return table


@pytest.mark.parametrize("given", ["transformer_dtype", "diffusion_model_dtype"])
def test_z_image_gets_diffusion_model_dtype(given: str) -> None:
    table = _model_table("z_image_turbo", {given: "float8"})
    assert table["diffusion_model_dtype"] == "float8"
    assert "transformer_dtype" not in table
    assert table["dtype"] == "bfloat16"  # the catalogue's dtype stays


@pytest.mark.parametrize("model_type", ["flux", "wan13", "qwen"])
@pytest.mark.parametrize("given", ["transformer_dtype", "diffusion_model_dtype"])
def test_the_others_get_transformer_dtype(model_type: str, given: str) -> None:
    table = _model_table(model_type, {given: "bfloat16"})
    assert table["transformer_dtype"] == "bfloat16"  # overrides flux/qwen's float8 default
    assert "diffusion_model_dtype" not in table


def test_the_catalogue_default_for_z_image_sets_neither_key() -> None:
    """As diffusion-pipe's example (docs/supported_models.md): bf16, fp8 left commented out."""
    table = _model_table("z_image_turbo", {})
    assert table["dtype"] == "bfloat16"
    assert not {"transformer_dtype", "diffusion_model_dtype"} & set(table)
    assert "transformer_dtype" not in get_model("z_image_turbo").model_template


def test_both_spellings_at_once_are_refused_naming_the_field() -> None:
    with pytest.raises(ConfigError) as exc:
        _model_table("z_image_turbo", {"transformer_dtype": "float8", "diffusion_model_dtype": "x"})
    assert exc.value.field == "training.model.diffusion_model_dtype"
    assert "give one" in str(exc.value)


def test_other_model_keys_pass_through_unchanged() -> None:
    table = _model_table("z_image_turbo", {"timestep_sample_method": "logit_normal"})
    assert table["timestep_sample_method"] == "logit_normal"
