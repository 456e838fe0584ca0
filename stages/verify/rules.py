"""How diffusion-pipe names a LoRA per model family, and where its base model's modules are
read from: data, one `LoraRules` per family, referenced by the catalogue.

Formats (reference/lora-formats.md §1, diffusion-pipe 8f83dbf):
- `peft`: `diffusion_model.<module>.lora_A.weight` (rank x in) and `.lora_B.weight` (out x
  rank), no `.alpha` (train.py forces alpha = rank): Wan, Qwen-Image, Z-Image (models/base.py
  save_adapter), and minipipe.
- `diffusers`: the same pairs under `transformer.` (FluxPipeline.save_lora_weights): Flux.
- `kohya`: `lora_unet_`/`lora_te1_`/`lora_te2_` + the diffusers module path with `_` for `.`,
  `.lora_down.weight`/`.lora_up.weight` and a scalar `.alpha` (diffusers'
  convert_state_dict_to_kohya): SDXL.

Bases:
- `headers`: the modules are read from the base checkpoint's safetensors headers (no weights
  loaded): every 2-D `<name>.weight`, with one of `strip` removed from the front, is the module
  `<lora_prefix><name>` of shape (out, in). `alternatives` name a module's other spelling in a
  checkpoint laid out otherwise (Z-Image: ComfyUI's fused `attention.qkv` is `to_q`+`to_k`+`to_v`
  in the diffusers layout; the LoRA's rows are then their sum).
- `configs`: SDXL's kohya names are diffusers' module paths, which exist only after diffusers
  converts the original-format checkpoint. The modules come from the configs diffusers'
  `from_single_file` reads for it (the SDXL base repo's `unet`, `text_encoder`,
  `text_encoder_2` config.json, downloaded beside the checkpoint): the models diffusion-pipe
  trains are built from them, on the meta device (no memory, no weights).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True, slots=True)
class LoraFormat:
    name: str
    prefixes: tuple[str, ...]  # every key starts with one of these
    down: str  # the rank x in half of a pair
    up: str  # the out x rank half
    alpha: bool  # a scalar `<module>.alpha` may sit beside the pair


PEFT = LoraFormat("peft", ("diffusion_model.",), "lora_A.weight", "lora_B.weight", alpha=False)
DIFFUSERS = LoraFormat(
    "diffusers", ("transformer.",), "lora_A.weight", "lora_B.weight", alpha=False
)
KOHYA = LoraFormat(
    "kohya",
    ("lora_unet_", "lora_te1_", "lora_te2_"),
    "lora_down.weight",
    "lora_up.weight",
    alpha=True,
)


@dataclass(frozen=True, slots=True)
class ConfigPart:
    """One model built from a config: its config file (a glob under the models root) and the
    prefix its module paths take in the kohya file."""

    config: str
    lora_prefix: str
    library: Literal["diffusers", "transformers"]
    # Put before a module path that lacks it (transformers 5's CLIPTextModel dropped the
    # `text_model.` level that its checkpoints, kohya files and ComfyUI still name).
    module_prefix: str = ""


@dataclass(frozen=True, slots=True)
class BaseLayout:
    kind: Literal["headers", "configs"]
    # headers: globs of the checkpoint files, relative to the models root
    files: tuple[str, ...] = ()
    strip: tuple[str, ...] = ()  # key prefixes of the checkpoint, tried longest first
    lora_prefix: str = ""
    # (a module name's ending, the endings it may have in the checkpoint instead)
    alternatives: tuple[tuple[str, tuple[str, ...]], ...] = ()
    parts: tuple[ConfigPart, ...] = ()  # configs


@dataclass(frozen=True, slots=True)
class LoraRules:
    """What a family's LoRA file looks like and what its base model is read from.

    `renames`: key prefixes the published file spells otherwise than the trainer may save
    them, so that the tools users load it with map every key (applied to the header only)."""

    format: LoraFormat
    base: BaseLayout
    renames: tuple[tuple[str, str], ...] = ()


# Checkpoints saved from ComfyUI or repackaged for it may keep the full model's prefix.
_COMFY_STRIP = ("model.diffusion_model.", "diffusion_model.")

FLUX = LoraRules(
    DIFFUSERS,
    BaseLayout("headers", files=("flux/transformer/*.safetensors",), lora_prefix="transformer."),
)
# Where the weights stage puts the SDXL base repo's configs (weights.sources.hub_cache_files).
_SDXL_CONFIGS = "hub/models--stabilityai--stable-diffusion-xl-base-1.0/snapshots/*"
# diffusion-pipe names SDXL's kohya keys after the PEFT module paths. Under transformers 5
# (the worker's lock), CLIPTextModel's paths lack `text_model.`, so text encoder 1's keys come
# out `lora_te1_encoder_layers_N_...`; ComfyUI (comfy/lora.py model_lora_keys_clip) and the
# kohya tools map only `lora_te1_text_model_encoder_layers_N_...`, and diffusers loads both.
SDXL = LoraRules(
    KOHYA,
    BaseLayout(
        "configs",
        parts=(
            ConfigPart(f"{_SDXL_CONFIGS}/unet/config.json", "lora_unet_", "diffusers"),
            ConfigPart(
                f"{_SDXL_CONFIGS}/text_encoder/config.json",
                "lora_te1_",
                "transformers",
                module_prefix="text_model.",
            ),
            ConfigPart(f"{_SDXL_CONFIGS}/text_encoder_2/config.json", "lora_te2_", "transformers"),
        ),
    ),
    renames=(("lora_te1_encoder_", "lora_te1_text_model_encoder_"),),
)


def wan(folder: str) -> LoraRules:
    """Wan 2.1's official checkpoint (original names, one file or shards) under `folder`."""
    return LoraRules(
        PEFT,
        BaseLayout(
            "headers",
            files=(f"{folder}/diffusion_pytorch_model*.safetensors",),
            strip=_COMFY_STRIP,
            lora_prefix="diffusion_model.",
        ),
    )


QWEN_IMAGE = LoraRules(
    PEFT,
    BaseLayout(
        "headers",
        files=("Qwen-Image/transformer/*.safetensors",),
        strip=_COMFY_STRIP,
        lora_prefix="diffusion_model.",
    ),
)
Z_IMAGE = LoraRules(
    PEFT,
    BaseLayout(
        "headers",
        files=("z_image/z_image_turbo_bf16.safetensors",),
        strip=_COMFY_STRIP,
        lora_prefix="diffusion_model.",
        alternatives=(
            (".attention.qkv", (".attention.to_q", ".attention.to_k", ".attention.to_v")),
            (".attention.out", (".attention.to_out.0",)),
        ),
    ),
)
TINY = LoraRules(
    PEFT,
    BaseLayout(
        "headers",
        files=("tiny/model.safetensors",),
        strip=("diffusion_model.",),
        lora_prefix="diffusion_model.",
    ),
)
