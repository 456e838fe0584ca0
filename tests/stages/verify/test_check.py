"""The verify step's check of one LoRA file against its format and its base model's headers:
real safetensors files, written with safetensors' own writer, read back from disk."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from stages.verify import rules
from stages.verify.base import base_modules
from stages.verify.check import Expected, LoraRejected, Verified, verify_lora

RANK = 4
WANT = Expected(rank=RANK, dtype="bfloat16")
BLOCK = "blocks.0.self_attn"


def _base(root: Path, shapes: dict[str, tuple[int, int]], name: str = "model") -> Path:
    folder = root / "Wan" / "base"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"diffusion_pytorch_model-{name}.safetensors"
    save_file({k: torch.zeros(s, dtype=torch.bfloat16) for k, s in shapes.items()}, str(path))
    return path


def _lora(path: Path, pairs: dict[str, tuple[int, int]], **overrides: torch.Tensor) -> Path:
    """diffusion-pipe's PEFT file: `diffusion_model.<module>.lora_A/B.weight` per module."""
    tensors: dict[str, torch.Tensor] = {}
    for module, (out, fan_in) in pairs.items():
        tensors[f"diffusion_model.{module}.lora_A.weight"] = torch.full(
            (RANK, fan_in), 0.01, dtype=torch.bfloat16
        )
        tensors[f"diffusion_model.{module}.lora_B.weight"] = torch.full(
            (out, RANK), 0.02, dtype=torch.bfloat16
        )
    tensors |= overrides
    save_file(tensors, str(path), metadata={"format": "pt"})
    return path


WAN = rules.wan("Wan/base")
SHAPES = {f"{BLOCK}.q": (12, 12), f"{BLOCK}.k": (12, 12), "blocks.0.ffn.0": (32, 12)}


@pytest.fixture
def root(tmp_path: Path) -> Path:
    _base(tmp_path, {f"{k}.weight": v for k, v in SHAPES.items()} | {"head.bias": (1, 12)})
    return tmp_path


def _check(root: Path, lora: Path, want: Expected = WANT) -> Verified:
    base = base_modules(WAN.base, root)
    return verify_lora(lora, WAN.format, base, want, what="Wan (test)")


def test_a_lora_in_the_format_on_modules_the_base_has_passes(root: Path) -> None:
    lora = _lora(root / "lora.safetensors", SHAPES)
    verified = _check(root, lora)
    assert verified.modules == 3
    assert verified.tensors == 6
    assert verified.rank == RANK
    assert verified.dtype == "BF16"
    assert verified.base_modules == 3  # head.bias is no Linear weight


def test_the_base_may_be_sharded_and_keep_comfyui_s_prefix(tmp_path: Path) -> None:
    _base(tmp_path, {f"model.diffusion_model.{BLOCK}.q.weight": (12, 12)}, "00001-of-00002")
    _base(tmp_path, {f"model.diffusion_model.{BLOCK}.k.weight": (12, 12)}, "00002-of-00002")
    lora = _lora(tmp_path / "lora.safetensors", {f"{BLOCK}.q": (12, 12), f"{BLOCK}.k": (12, 12)})
    assert _check(tmp_path, lora).base_files == 2


def _rejected(root: Path, lora: Path, want: Expected = WANT) -> str:
    with pytest.raises(LoraRejected) as caught:
        _check(root, lora, want)
    message = str(caught.value)
    assert message.startswith(f"the trained LoRA {lora.name}")
    assert message.endswith("nothing was published")
    return message


def test_a_module_the_base_does_not_have_is_named_with_the_closest_one(root: Path) -> None:
    lora = _lora(root / "lora.safetensors", {f"{BLOCK}.qq": (12, 12)})
    message = _rejected(root, lora)
    assert f"modules the base model does not have: diffusion_model.{BLOCK}.qq" in message
    assert f"the closest base module is diffusion_model.{BLOCK}.q" in message


def test_a_shape_that_does_not_fit_says_what_the_halves_should_be(root: Path) -> None:
    lora = _lora(root / "lora.safetensors", {"blocks.0.ffn.0": (12, 32)})  # transposed
    message = _rejected(root, lora)
    assert "diffusion_model.blocks.0.ffn.0 is 12x32 (out x in)" in message
    assert "lora_A.weight should be [4, 12] and lora_B.weight [32, 4]" in message


def test_the_rank_must_be_the_one_asked_for(root: Path) -> None:
    lora = _lora(root / "lora.safetensors", SHAPES)
    message = _rejected(root, lora, Expected(rank=16, dtype="bfloat16"))
    assert "rank: diffusion_model.blocks.0" in message
    assert "has rank 4, the request asked for 16" in message
    assert "(and" not in message or "more)" in message


def test_the_dtype_must_be_save_dtype(root: Path) -> None:
    lora = _lora(root / "lora.safetensors", SHAPES)
    message = _rejected(root, lora, Expected(rank=RANK, dtype="float32"))
    assert "is BF16, save_dtype float32 is F32" in message


def test_an_unknown_dtype_name_is_not_checked(root: Path) -> None:
    lora = _lora(root / "lora.safetensors", SHAPES)
    assert _check(root, lora, Expected(rank=RANK, dtype="float8_e4m3fn")).dtype == "BF16"


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_nan_or_inf_in_any_tensor_is_training_that_diverged(root: Path, bad: float) -> None:
    up = torch.full((12, RANK), 0.02, dtype=torch.bfloat16)
    up[3, 1] = bad
    lora = _lora(
        root / "lora.safetensors", SHAPES, **{f"diffusion_model.{BLOCK}.q.lora_B.weight": up}
    )
    message = _rejected(root, lora)
    assert "NaN or Inf values (training diverged: try a lower learning_rate)" in message
    assert f"diffusion_model.{BLOCK}.q.lora_B.weight has 1 of 48" in message


def test_large_finite_values_whose_sum_overflows_float32_pass(root: Path) -> None:
    big = torch.full((12, RANK), 3.0e38, dtype=torch.float32).to(torch.bfloat16)
    assert torch.isfinite(big).all()
    lora = _lora(
        root / "lora.safetensors", SHAPES, **{f"diffusion_model.{BLOCK}.q.lora_B.weight": big}
    )
    _check(root, lora)


def test_half_a_pair_is_named_with_the_half_that_is_missing(root: Path) -> None:
    lora = _lora(root / "lora.safetensors", SHAPES)
    from safetensors.torch import load_file  # noqa: PLC0415

    tensors = load_file(str(lora))
    del tensors[f"diffusion_model.{BLOCK}.k.lora_B.weight"]
    save_file(tensors, str(lora))
    message = _rejected(root, lora)
    assert f"incomplete pairs: diffusion_model.{BLOCK}.k.lora_B.weight is missing" in message


@pytest.mark.parametrize(
    "key",
    [
        f"diffusion_model.{BLOCK}.q.lora_A.default.weight",  # PEFT's adapter name left in
        f"diffusion_model.{BLOCK}.q.alpha",  # no alpha in diffusion-pipe's PEFT files
        f"diffusion_model.{BLOCK}.q.lora_down.weight",  # kohya's names in a PEFT file
    ],
)
def test_a_key_that_is_not_a_pair_half_of_the_format_is_refused(root: Path, key: str) -> None:
    lora = _lora(root / "lora.safetensors", SHAPES, **{key: torch.zeros(RANK, 12)})
    message = _rejected(root, lora)
    assert f"keys that are not LoRA pairs: {key}" in message


def test_a_key_without_the_prefix_is_refused_with_the_prefix_it_needs(root: Path) -> None:
    key = f"transformer.{BLOCK}.q.lora_A.weight"
    lora = _lora(root / "lora.safetensors", SHAPES, **{key: torch.zeros(RANK, 12)})
    message = _rejected(root, lora)
    assert f"{key} (peft-format keys start with 'diffusion_model.')" in message


def test_a_file_that_is_not_safetensors_or_is_empty_is_refused(root: Path) -> None:
    junk = root / "junk.safetensors"
    junk.write_bytes(b"\0" * 16)
    assert "not a readable safetensors file" in _rejected(root, junk)
    empty = root / "empty.safetensors"
    save_file({}, str(empty))
    assert "holds no tensors" in _rejected(root, empty)


def test_a_missing_or_unreadable_base_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(Exception, match=r"base model's files \(Wan/base/diffusion_pytorch"):
        base_modules(WAN.base, tmp_path)
    folder = tmp_path / "Wan" / "base"
    folder.mkdir(parents=True)
    (folder / "diffusion_pytorch_model.safetensors").write_bytes(b"not one")
    with pytest.raises(Exception, match="base model file Wan/base/diffusion_pytorch_model"):
        base_modules(WAN.base, tmp_path)


def test_z_image_s_fused_qkv_fits_a_checkpoint_in_either_layout(tmp_path: Path) -> None:
    """ComfyUI's NextDiT keeps one `attention.qkv` (3d x d); a diffusers-layout checkpoint has
    to_q, to_k and to_v: the fused LoRA fits their summed rows either way."""
    layers = "layers.0.attention"
    comfy = {f"{layers}.qkv.weight": (24, 8), f"{layers}.out.weight": (8, 8)}
    split = {f"{layers}.to_{p}.weight": (8, 8) for p in "qkv"} | {
        f"{layers}.to_out.0.weight": (8, 8)
    }
    for layout in (comfy, split):
        folder = tmp_path / str(len(layout)) / "z_image"
        folder.mkdir(parents=True)
        save_file(
            {k: torch.zeros(s) for k, s in layout.items()},
            str(folder / "z_image_turbo_bf16.safetensors"),
        )
        lora = _lora(
            tmp_path / "lora.safetensors", {f"{layers}.qkv": (24, 8), f"{layers}.out": (8, 8)}
        )
        base = base_modules(rules.Z_IMAGE.base, folder.parent)
        assert verify_lora(lora, rules.Z_IMAGE.format, base, WANT).modules == 2


def test_a_lora_whose_save_was_cut_short_is_named_so(root: Path) -> None:
    lora = _lora(root / "lora.safetensors", SHAPES)
    data = lora.read_bytes()
    lora.write_bytes(data[: len(data) - 100])  # a worker killed while the file was written
    message = _rejected(root, lora)
    assert "lies past the end of the file: a save cut short?" in message
