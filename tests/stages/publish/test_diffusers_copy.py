"""The Z-Image copy under diffusers' names is exact: every converted pair gives the same weight
change as the fused original, and nothing is lost or added."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from stages.errors import StageFailed
from stages.publish.diffusers_copy import write_copy, z_image_to_diffusers

RANK, DIM = 4, 12


def _lora(gen: torch.Generator) -> dict[str, torch.Tensor]:
    def pair(key: str, fan_in: int, fan_out: int) -> dict[str, torch.Tensor]:
        return {
            f"{key}.lora_A.weight": torch.randn(RANK, fan_in, generator=gen),
            f"{key}.lora_B.weight": torch.randn(fan_out, RANK, generator=gen),
        }

    out: dict[str, torch.Tensor] = {}
    for block in ("layers.0", "noise_refiner.0", "context_refiner.0"):
        out |= pair(f"diffusion_model.{block}.attention.qkv", DIM, 3 * DIM)
        out |= pair(f"diffusion_model.{block}.attention.out", DIM, DIM)
        out |= pair(f"diffusion_model.{block}.feed_forward.w1", DIM, 2 * DIM)
        out |= pair(f"diffusion_model.{block}.adaLN_modulation.0", DIM, 4 * DIM)
    return out


def test_the_split_qkv_gives_the_same_weight_change() -> None:
    lora = _lora(torch.Generator().manual_seed(0))
    out = z_image_to_diffusers(lora)
    for block in ("layers.0", "noise_refiner.0", "context_refiner.0"):
        fused = (
            lora[f"diffusion_model.{block}.attention.qkv.lora_B.weight"]
            @ (lora[f"diffusion_model.{block}.attention.qkv.lora_A.weight"])
        )
        parts = [
            out[f"transformer.{block}.attention.{p}.lora_B.weight"]
            @ out[f"transformer.{block}.attention.{p}.lora_A.weight"]
            for p in ("to_q", "to_k", "to_v")
        ]
        assert torch.equal(torch.cat(parts, dim=0), fused)
        assert torch.equal(
            out[f"transformer.{block}.attention.to_out.0.lora_A.weight"],
            lora[f"diffusion_model.{block}.attention.out.lora_A.weight"],
        )
        assert f"transformer.{block}.feed_forward.w1.lora_B.weight" in out
        assert f"transformer.{block}.adaLN_modulation.0.lora_A.weight" in out
    assert not any(".qkv." in k or ".attention.out." in k for k in out)
    assert len(out) == len(lora) + 3 * 4  # each qkv pair became three pairs
    assert all(k.startswith("transformer.") for k in out)


def test_a_key_without_diffusion_pipes_prefix_is_refused() -> None:
    with pytest.raises(StageFailed, match="lacks diffusion-pipe's"):
        z_image_to_diffusers({"layers.0.attention.qkv.lora_A.weight": torch.zeros(1, 1)})


def test_the_copy_is_written_once_with_the_source_metadata(tmp_path: Path) -> None:
    source = tmp_path / "adapter_model.safetensors"
    save_file(_lora(torch.Generator().manual_seed(1)), str(source), metadata={"format": "pt"})
    dest = tmp_path / "publish" / "diffusers" / "adapter_model.safetensors"
    assert write_copy(source, dest, "z_image") == dest
    converted = load_file(str(dest))
    assert "transformer.layers.0.attention.to_v.lora_B.weight" in converted
    first = dest.stat().st_mtime_ns
    write_copy(source, dest, "z_image")
    assert dest.stat().st_mtime_ns == first  # not converted again
    assert not list(dest.parent.glob(".*.tmp"))


def test_an_unreadable_lora_fails_with_a_clear_message(tmp_path: Path) -> None:
    source = tmp_path / "adapter_model.safetensors"
    source.write_bytes(b"x" * 8)  # a file cut short, or not safetensors at all
    dest = tmp_path / "publish" / "diffusers" / source.name
    with pytest.raises(StageFailed, match="is not a readable safetensors file"):
        write_copy(source, dest, "z_image")
    assert not dest.exists()
