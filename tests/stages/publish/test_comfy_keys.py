"""Every key of every published LoRA is one ComfyUI's loader maps, checked as data.

The facts (tests/support/comfy_lora_keys.py) are the module names ComfyUI's
`model_lora_keys_unet`/`model_lora_keys_clip` map for each family, read from ComfyUI's source.
For each model type the tiny pipeline's LoRA, in exactly diffusion-pipe's format (built with
the worker's transformers), goes through our verify step and our publish (a local folder),
and each module of the published file must be one ComfyUI maps: a key that is not would be a
`lora key not loaded` line and a part of the LoRA silently missing.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pytest

from orchestrator.catalogue import MODEL_TYPES
from stages.publish.inputs import Destination
from stages.publish.stage import PublishOptions, publish
from stages.verify.base import read_header
from tests.stages.publish.test_card_snippets import BASE_PATH, FAMILY
from tests.support import comfy_lora_keys as comfy
from tests.support.card_inputs import card_inputs
from tests.support.tiny_pipelines.build import RANK, TinyModel, tiny_model, write_base

_BLOCKS = range(64)  # more blocks than any tiny model has; ComfyUI's maps hold every index


def _expand(keys: Iterable[str], indices: Iterable[int]) -> set[str]:
    return {key.format(i=i) for key in keys for i in indices}


def _alias_keys(family: str) -> list[str]:
    return [alias.key for aliases in comfy.LORA_ALIASES[family].values() for alias in aliases]


def _sdxl_unet() -> set[str]:
    """Every SpatialTransformer and ResBlock position of the SDXL UNet, from the block-0
    templates of down_blocks.1.attentions.0 and down_blocks.0.resnets.0."""
    template = "down_blocks_1_attentions_0"
    out: set[str] = set()
    for key in _alias_keys("sdxl_unet"):
        if template in key:
            for _ldm, diffusers_prefix, depth in comfy.SDXL_UNET_ATTENTIONS:
                here = key.replace(template, diffusers_prefix.replace(".", "_"))
                out |= _expand([here], range(depth))
        else:
            for _ldm, diffusers_prefix in comfy.SDXL_UNET_RESNETS:
                out.add(key.replace("down_blocks_0_resnets_0", diffusers_prefix.replace(".", "_")))
    return out


def comfy_mapped(model_type: str) -> set[str]:
    """The LoRA module keys ComfyUI maps for `model_type`'s family."""
    family = FAMILY[model_type]
    if family == "sdxl":
        te = {
            f: _expand(_alias_keys(f), range(comfy.SDXL_CLIP_LAYERS[f]))
            for f in ("sdxl_te1", "sdxl_te2")
        }
        return _sdxl_unet() | te["sdxl_te1"] | te["sdxl_te2"]
    return _expand(_alias_keys(family), _BLOCKS)


def _modules(path: Path) -> set[str]:
    suffixes = (".lora_A.weight", ".lora_B.weight", ".lora_down.weight", ".lora_up.weight")
    out = set()
    for key in read_header(path):
        for suffix in (*suffixes, ".alpha"):
            if key.endswith(suffix):
                out.add(key.removesuffix(suffix))
    return out


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, TinyModel]:
    return {t: tiny_model(tmp_path_factory, FAMILY[t]) for t in MODEL_TYPES}


def test_the_facts_name_the_commit_they_were_read_at() -> None:
    assert len(comfy.COMFY_COMMIT) == 40
    assert set(comfy.LORA_ALIASES) == set(comfy.FAMILIES)
    for family in comfy.FAMILIES:  # every model weight listed has its LoRA keys, and back
        assert set(comfy.LORA_ALIASES[family]) <= set(comfy.MODEL_WEIGHTS[family]), family


@pytest.mark.slow
@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_every_module_of_the_published_lora_is_one_comfyui_maps(
    model_type: str, tiny: dict[str, TinyModel], tmp_path: Path
) -> None:
    model = tiny[model_type]
    models_root = tmp_path / "models"
    write_base(model, models_root / BASE_PATH[model_type])
    out = tmp_path / "out"
    inputs = card_inputs(
        tmp_path / "volume" / "jobs",
        model_type,
        destination=Destination(method="local", local_path=out),
        training_values={"lora_rank": RANK, "save_dtype": "float32", "epochs": 2},
    )
    for name, data in model.lora_files().items():
        (inputs.lora_path.parent / name).write_bytes(data)

    result = publish(inputs, PublishOptions(models_root=models_root))

    folder = out / inputs.job_id
    root = folder / model.lora_file
    comfy_file = folder / result["lora"]["comfyui_file"]
    assert root.read_bytes() == comfy_file.read_bytes()
    published = _modules(comfy_file)
    assert len(published) == model.lora_modules
    not_mapped = sorted(published - comfy_mapped(model_type))
    assert not_mapped == [], f"{model_type}: ComfyUI would not load {not_mapped[:5]}"


def test_the_check_catches_a_key_comfyui_does_not_map() -> None:
    """The transformers 5 spelling of SDXL's text encoder 1 keys, as diffusion-pipe saves them
    on the worker, is not mapped (which is why the publish renames it)."""
    mapped = comfy_mapped("sdxl")
    assert "lora_te1_text_model_encoder_layers_0_self_attn_q_proj" in mapped
    assert "lora_te1_encoder_layers_0_self_attn_q_proj" not in mapped
    assert "transformer.blocks.0.self_attn.q" not in comfy_mapped("wan13")
