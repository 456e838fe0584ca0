"""A copy of the LoRA under diffusers' module names, for models whose saved file diffusers'
loader only half applies.

Z-Image: diffusion-pipe trains ComfyUI's NextDiT, so its file carries ComfyUI's names: a fused
`attention.qkv` and a bare `attention.out`. diffusers' converter
(`_convert_non_diffusers_z_image_lora_to_diffusers`, 0.42) strips the `diffusion_model.` prefix
but maps neither, and drops every attention LoRA with only an "unexpected keys" warning. The copy
renames `attention.out` to `attention.to_out.0` and splits the fused `qkv` exactly: `to_q`,
`to_k` and `to_v` share its `lora_A` (r x d), each takes its third of `lora_B` (3d x r -> d x r),
because B·A splits by rows. Every key gets diffusers' `transformer.` prefix. The original stays
the published LoRA (ComfyUI's format, the seed's URL); the copy sits in `diffusers/` beside it,
so a repo keeps one top-level .safetensors for `load_lora_weights(repo)` to pick.

The copy is written under the job's folder (`publish/diffusers/`), once per source file.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from safetensors import SafetensorError, safe_open

from stages.errors import StageFailed

if TYPE_CHECKING:
    import torch

FOLDER = "diffusers"  # where the copy goes, at the destination and under <job>/publish/
PREFIX = "diffusion_model."
_QKV = re.compile(r"^(?P<module>.+\.attention)\.qkv\.(?P<part>lora_[AB])\.weight$")
_OUT = re.compile(r"^(?P<module>.+\.attention)\.out\.(?P<part>lora_[AB]\.weight)$")


def z_image_to_diffusers(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """diffusion-pipe's Z-Image LoRA (ComfyUI names) with diffusers' names; see the module doc."""
    out: dict[str, torch.Tensor] = {}
    for key, tensor in tensors.items():
        if not key.startswith(PREFIX):
            raise StageFailed(f"Z-Image LoRA key {key!r} lacks diffusion-pipe's {PREFIX!r} prefix")
        name = key.removeprefix(PREFIX)
        fused = _QKV.match(name)
        if fused is not None:
            base, part = f"transformer.{fused['module']}", fused["part"]
            if part == "lora_A":
                for proj in ("to_q", "to_k", "to_v"):
                    out[f"{base}.{proj}.lora_A.weight"] = tensor.clone()
                continue
            rows = tensor.shape[0]
            if rows % 3:
                raise StageFailed(f"{key}: {rows} rows do not split into q, k and v")
            for proj, third in zip(("to_q", "to_k", "to_v"), tensor.chunk(3, dim=0), strict=True):
                out[f"{base}.{proj}.lora_B.weight"] = third.contiguous()
            continue
        plain = _OUT.match(name)
        if plain is not None:
            name = f"{plain['module']}.to_out.0.{plain['part']}"
        out[f"transformer.{name}"] = tensor
    return out


def copy_name(lora_name: str) -> str:
    """The copy's path at the destination, beside the LoRA it converts."""
    return f"{FOLDER}/{lora_name}"


def diffusers_file(lora_name: str, converter: str | None) -> str:
    """The file diffusers loads: the LoRA itself, or its copy when the model has a converter."""
    return lora_name if converter is None else copy_name(lora_name)


CONVERTERS: dict[str, Callable[[Mapping[str, torch.Tensor]], dict[str, torch.Tensor]]] = {
    "z_image": z_image_to_diffusers,
}


def write_copy(source: Path, dest: Path, converter: str) -> Path:
    """`dest`: `source` converted by `CONVERTERS[converter]`, written atomically; kept when it
    is newer than `source` (a delivery that publishes again converts nothing)."""
    from safetensors.torch import load_file, save_file  # noqa: PLC0415

    if dest.is_file() and dest.stat().st_mtime_ns >= source.stat().st_mtime_ns:
        return dest
    try:
        with safe_open(str(source), framework="pt") as handle:
            metadata = handle.metadata() or {}
        tensors = load_file(str(source))
    except (SafetensorError, OSError) as exc:
        raise StageFailed(
            f"the trained LoRA {source.name} is not a readable safetensors file ({exc}); "
            "nothing was published"
        ) from None
    converted = CONVERTERS[converter](tensors)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp")
    save_file(converted, str(tmp), metadata={**metadata, "converted_from": "diffusion-pipe"})
    os.replace(tmp, dest)
    return dest
