"""Tiny random diffusers pipelines, one per model family, each with a LoRA as diffusion-pipe
saves it.

Every component is the real diffusers/transformers class at toy size, built from a small config
(no download; the tokenizers come from a vocabulary written here) and saved with
`save_pretrained`, so a folder loads with `<Pipeline>.from_pretrained` like the real Hub repo.
The shapes follow diffusers' own pipeline tests (tests/pipelines/<family>/).

Beside each pipeline, `lora/` holds what diffusion-pipe saves in `epochN/` for that family
(reference/lora-formats.md): Flux a diffusers file `pytorch_lora_weights.safetensors` with
`transformer.` keys; SDXL a kohya `lora.safetensors` (`lora_unet_`, `lora_te1_`, `lora_te2_`);
Wan, Qwen-Image and Z-Image `adapter_model.safetensors` with `diffusion_model.` keys in the names
of the model object diffusion-pipe trains (original Wan, diffusers Qwen, ComfyUI NextDiT) plus
`adapter_config.json`. The LoRA weights are random and non-zero: a loaded LoRA changes the output.

`tiny_model(tmp_path_factory, family)` builds a family once per test session; `build(family,
dest)` builds into any folder.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import diffusers
import diffusers.utils.state_dict_utils
import peft
import pytest
import torch
import transformers
from safetensors.torch import save_file
from torch import nn

# diffusers and transformers' model classes, untyped for mypy: used through Any.
D: Any = diffusers
T: Any = transformers
# contract/ holds scripts for the trainer's venv, not a package: its tiny Flux is loaded by path.
_spec = importlib.util.spec_from_file_location(
    "contract_tiny_flux", Path(__file__).resolve().parents[3] / "contract" / "tiny_flux.py"
)
assert _spec is not None
assert _spec.loader is not None
tiny_flux: Any = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tiny_flux)
_bytes_to_unicode: Any = importlib.import_module(
    "transformers.convert_slow_tokenizer"
).bytes_to_unicode

RANK = 4
SEED = 0
FAMILIES = ("flux", "sdxl", "wan_t2v", "wan_i2v", "qwen_image", "z_image")
_DONE = "tiny-pipeline.json"  # written last: a folder without it is an interrupted build


@dataclass(frozen=True)
class TinyModel:
    family: str
    pipeline_class: str  # the diffusers class that loads `pipeline_dir`
    pipeline_dir: Path  # a save_pretrained folder, laid out like the Hub repo
    lora_dir: Path  # the LoRA file (and adapter_config.json) as diffusion-pipe saves them
    lora_file: str
    lora_modules: int  # how many modules the file holds a LoRA pair for (the trained modules)

    @property
    def lora_path(self) -> Path:
        return self.lora_dir / self.lora_file

    def repo_files(self) -> dict[str, bytes]:
        """The pipeline folder as `{path: bytes}`, for `FakeHub.add_repo`."""
        return _files(self.pipeline_dir)

    def lora_files(self) -> dict[str, bytes]:
        return _files(self.lora_dir)


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


# --- tokenizers: built from a vocabulary written here ---------------------------------------


# CLIP BPE and T5 unigram over single characters: the contract test's tiny Flux tokenizers.
clip_tokenizer = tiny_flux.clip_tokenizer
t5_tokenizer = tiny_flux.t5_tokenizer


# Qwen's chat format; Z-Image's pipeline renders the prompt through the tokenizer's template.
_QWEN_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def qwen_tokenizer() -> Any:
    """Byte-level BPE over the 256 byte symbols with no merges, plus Qwen's chat tokens."""
    tokens = [
        *_bytes_to_unicode().values(),
        "<|endoftext|>",
        "<|im_start|>",
        "<|im_end|>",
    ]
    tokenizer = T.Qwen2Tokenizer(
        vocab={t: i for i, t in enumerate(tokens)},
        merges=[],
        unk_token=None,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        model_max_length=1024,
    )
    tokenizer.chat_template = _QWEN_TEMPLATE
    return tokenizer


# --- LoRA state dicts ------------------------------------------------------------------------


def _linears(module: nn.Module, prefix: str = "") -> Iterator[tuple[str, nn.Linear]]:
    for name, sub in module.named_modules(prefix=prefix):
        if isinstance(sub, nn.Linear):
            yield name, sub


def _pair(gen: torch.Generator, in_features: int, out_features: int) -> tuple[torch.Tensor, ...]:
    a = torch.randn(RANK, in_features, generator=gen) * 0.1
    b = torch.randn(out_features, RANK, generator=gen) * 0.1
    return a, b


def _peft_pairs(named: list[tuple[str, int, int]], gen: torch.Generator) -> dict[str, torch.Tensor]:
    """`<name>.lora_A.weight` (rank x in) and `<name>.lora_B.weight` (out x rank) per module."""
    out: dict[str, torch.Tensor] = {}
    for name, fan_in, fan_out in named:
        a, b = _pair(gen, fan_in, fan_out)
        out[f"{name}.lora_A.weight"], out[f"{name}.lora_B.weight"] = a, b
    return out


def _adapter_config(target_modules: list[str]) -> dict[str, Any]:
    """What `peft.LoraConfig(...).save_pretrained` writes for diffusion-pipe's config
    (models/base.py configure_adapter: r, lora_alpha = r, dropout, bias none, the targets)."""

    config: Any = peft.LoraConfig(
        r=RANK, lora_alpha=RANK, lora_dropout=0.0, bias="none", target_modules=target_modules
    )
    out: dict[str, Any] = json.loads(json.dumps(config.to_dict(), default=sorted))
    return out


def _save_peft(dest: Path, named: list[tuple[str, int, int]], gen: torch.Generator) -> int:
    """diffusion-pipe's PEFT save (models/base.py save_adapter): adapter_config.json, and the
    weights with a `diffusion_model.` prefix in adapter_model.safetensors."""
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "adapter_config.json").write_text(
        json.dumps(_adapter_config([n for n, _, _ in named]), indent=2)
    )
    sd = {f"diffusion_model.{k}": v for k, v in _peft_pairs(named, gen).items()}
    save_file(sd, dest / "adapter_model.safetensors", metadata={"format": "pt"})
    return len(named)


def _shape(linear: nn.Linear) -> tuple[int, int]:
    return linear.in_features, linear.out_features


# --- the families ----------------------------------------------------------------------------


def _flux(dest: Path, gen: torch.Generator) -> tuple[str, str, int]:
    pipe = tiny_flux.pipeline()  # the contract test's tiny Flux, which the real trainer loads
    pipe.save_pretrained(dest / "pipeline")
    transformer = pipe.transformer
    # diffusion-pipe: every Linear in the Flux blocks (models/flux.py adapter_target_modules),
    # saved with D.FluxPipeline.save_lora_weights(transformer_lora_layers=...) (flux.py:231-235).
    blocks = [*transformer.transformer_blocks, *transformer.single_transformer_blocks]
    names = {id(b): n for n, b in transformer.named_modules()}
    named = [
        (name, *_shape(lin)) for block in blocks for name, lin in _linears(block, names[id(block)])
    ]
    layers = _peft_pairs(named, gen)
    D.FluxPipeline.save_lora_weights(dest / "lora", transformer_lora_layers=layers)
    return "FluxPipeline", "pytorch_lora_weights.safetensors", len(named)


def _sdxl(dest: Path, gen: torch.Generator) -> tuple[str, str, int]:

    unet = D.UNet2DConditionModel(
        block_out_channels=(2, 4),
        layers_per_block=2,
        sample_size=32,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 2),
        projection_class_embeddings_input_dim=80,  # 6 * 8 + 32
        cross_attention_dim=64,
        norm_num_groups=1,
    )
    vae = D.AutoencoderKL(
        block_out_channels=[32, 64],
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
        up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"],
        latent_channels=4,
        sample_size=128,
    )
    tok = clip_tokenizer()
    te_config = T.CLIPTextConfig(
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
        hidden_size=32,
        intermediate_size=37,
        num_attention_heads=4,
        num_hidden_layers=2,
        vocab_size=len(tok),
        hidden_act="gelu",
        projection_dim=32,
    )
    text_encoder = T.CLIPTextModel(te_config)
    text_encoder_2 = T.CLIPTextModelWithProjection(te_config)
    D.StableDiffusionXLPipeline(
        unet=unet,
        scheduler=D.EulerDiscreteScheduler(
            beta_start=0.00085,
            beta_end=0.012,
            steps_offset=1,
            beta_schedule="scaled_linear",
            timestep_spacing="leading",
        ),
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tok,
        text_encoder_2=text_encoder_2,
        tokenizer_2=tok,
    ).save_pretrained(dest / "pipeline")
    # diffusion-pipe (models/sdxl.py configure_adapter / save_adapter): every Linear in the
    # UNet's down, mid and up blocks and in both text encoders, PEFT names prefixed `unet.`,
    # `text_encoder.`, `text_encoder_2.`, then convert_state_dict_to_kohya.
    named: list[tuple[str, int, int]] = []
    for prefix, part in (
        ("unet.down_blocks", unet.down_blocks),
        ("unet.mid_block", unet.mid_block),
        ("unet.up_blocks", unet.up_blocks),
        ("text_encoder", text_encoder),
        ("text_encoder_2", text_encoder_2),
    ):
        named += [(n, *_shape(lin)) for n, lin in _linears(part, prefix)]
    kohya = D.utils.state_dict_utils.convert_state_dict_to_kohya(_peft_pairs(named, gen))
    (dest / "lora").mkdir(parents=True, exist_ok=True)
    save_file(kohya, dest / "lora" / "lora.safetensors", metadata={"format": "pt"})
    return "StableDiffusionXLPipeline", "lora.safetensors", len(named)


def _umt5_encoder(vocab: int, width: int) -> Any:
    """Wan's text encoder class (UMT5, as in the Wan-AI -Diffusers repos)."""

    config = T.UMT5Config(
        vocab_size=vocab,
        d_model=width,
        d_kv=8,
        d_ff=37,
        num_layers=2,
        num_heads=4,
        relative_attention_num_buckets=8,
        pad_token_id=0,
        eos_token_id=1,
    )
    return T.UMT5EncoderModel(config).eval()


# diffusers WanTransformer3DModel names -> the original Wan names diffusion-pipe trains
# (models/wan/wan.py, WanAttentionBlock): attn1 self_attn, attn2 cross_attn, ffn.net.0.proj ffn.0.
_WAN_NAMES = (
    (r"\.attn1\.", ".self_attn."),
    (r"\.attn2\.", ".cross_attn."),
    (r"\.to_q$", ".q"),
    (r"\.to_k$", ".k"),
    (r"\.to_v$", ".v"),
    (r"\.to_out\.0$", ".o"),
    (r"\.add_k_proj$", ".k_img"),
    (r"\.add_v_proj$", ".v_img"),
    (r"\.ffn\.net\.0\.proj$", ".ffn.0"),
    (r"\.ffn\.net\.2$", ".ffn.2"),
)


def _wan_name(diffusers_name: str) -> str:
    for pattern, repl in _WAN_NAMES:
        diffusers_name = re.sub(pattern, repl, diffusers_name)
    return diffusers_name


def _wan(dest: Path, gen: torch.Generator, *, i2v: bool) -> tuple[str, str, int]:

    vae = D.AutoencoderKLWan(
        base_dim=3,
        z_dim=16,
        dim_mult=[1, 1, 1, 1],
        num_res_blocks=1,
        temperal_downsample=[False, True, True],
    )
    tok = t5_tokenizer()
    text_encoder = _umt5_encoder(len(tok), 32)
    transformer = D.WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=12,
        in_channels=36 if i2v else 16,
        out_channels=16,
        text_dim=32,
        freq_dim=256,
        ffn_dim=32,
        num_layers=2,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        rope_max_seq_len=32,
        # Wan 2.1 I2V projects the CLIP image tokens with separate k/v (added_kv_proj_dim), which
        # diffusion-pipe trains as cross_attn.k_img / v_img.
        image_dim=4 if i2v else None,
        added_kv_proj_dim=24 if i2v else None,
    )
    parts: dict[str, Any] = dict(
        transformer=transformer,
        vae=vae,
        scheduler=D.FlowMatchEulerDiscreteScheduler(shift=3.0),
        text_encoder=text_encoder,
        tokenizer=tok,
    )
    if i2v:
        parts["image_encoder"] = T.CLIPVisionModel(
            T.CLIPVisionConfig(
                hidden_size=4,
                projection_dim=4,
                num_hidden_layers=2,
                num_attention_heads=2,
                image_size=32,
                intermediate_size=16,
                patch_size=1,
            )
        )
        # The PIL processor: the default CLIPImageProcessor needs torchvision.
        parts["image_processor"] = T.CLIPImageProcessorPil(crop_size=32, size=32)
    cls = D.WanImageToVideoPipeline if i2v else D.WanPipeline
    cls(**parts).save_pretrained(dest / "pipeline")
    # Every Linear of each block (adapter_target_modules = ['WanAttentionBlock']).
    named = [(_wan_name(n), *_shape(lin)) for n, lin in _linears(transformer.blocks, "blocks")]
    return cls.__name__, "adapter_model.safetensors", _save_peft(dest / "lora", named, gen)


def _qwen_image(dest: Path, gen: torch.Generator) -> tuple[str, str, int]:

    transformer = D.QwenImageTransformer2DModel(
        patch_size=2,
        in_channels=16,
        out_channels=4,
        num_layers=2,
        attention_head_dim=16,
        num_attention_heads=3,
        joint_attention_dim=16,
        guidance_embeds=False,
        axes_dims_rope=(8, 4, 4),
    )
    vae = D.AutoencoderKLQwenImage(
        base_dim=24,
        z_dim=4,
        dim_mult=[1, 2, 4],
        num_res_blocks=1,
        temperal_downsample=[False, True],
        latents_mean=[0.0] * 4,
        latents_std=[1.0] * 4,
    )
    tok = qwen_tokenizer()
    config = T.Qwen2_5_VLConfig(
        text_config={
            "hidden_size": 16,
            "intermediate_size": 16,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "num_key_value_heads": 2,
            "rope_scaling": {"mrope_section": [1, 1, 2], "rope_type": "default", "type": "default"},
            "rope_theta": 1000000.0,
            "vocab_size": len(tok),
            "bos_token_id": tok.pad_token_id,  # ids inside the tiny vocabulary
            "eos_token_id": tok.eos_token_id,
        },
        vision_config={
            "depth": 2,
            "hidden_size": 16,
            "intermediate_size": 16,
            "num_heads": 2,
            "out_hidden_size": 16,
        },
        hidden_size=16,
        vocab_size=len(tok),
    )
    D.QwenImagePipeline(
        transformer=transformer,
        vae=vae,
        scheduler=D.FlowMatchEulerDiscreteScheduler(),
        text_encoder=T.Qwen2_5_VLForConditionalGeneration(config).eval(),
        tokenizer=tok,
    ).save_pretrained(dest / "pipeline")
    # diffusion-pipe trains diffusers' own class: its names, every Linear of each block.
    named = [
        (n, *_shape(lin))
        for n, lin in _linears(transformer.transformer_blocks, "transformer_blocks")
    ]
    return "QwenImagePipeline", "adapter_model.safetensors", _save_peft(dest / "lora", named, gen)


def _z_image_name(diffusers_name: str) -> str | None:
    """ComfyUI NextDiT's name for a diffusers ZImageTransformer2DModel Linear: q/k/v are one fused
    `attention.qkv` (reported on to_q; None for to_k/to_v), `to_out.0` is `attention.out`."""
    if diffusers_name.endswith((".attention.to_k", ".attention.to_v")):
        return None
    if diffusers_name.endswith(".attention.to_q"):
        return diffusers_name.removesuffix("to_q") + "qkv"
    return re.sub(r"\.attention\.to_out\.0$", ".attention.out", diffusers_name)


def _z_image(dest: Path, gen: torch.Generator) -> tuple[str, str, int]:

    transformer = D.ZImageTransformer2DModel(
        all_patch_size=(2,),
        all_f_patch_size=(1,),
        in_channels=16,
        dim=32,
        n_layers=2,
        n_refiner_layers=1,
        n_heads=2,
        n_kv_heads=2,
        norm_eps=1e-5,
        qk_norm=True,
        cap_feat_dim=16,
        rope_theta=256.0,
        t_scale=1000.0,
        axes_dims=[8, 4, 4],
        axes_lens=[256, 32, 32],
    )
    with torch.no_grad():  # created with torch.empty: fixed so the output is never NaN
        transformer.x_pad_token.copy_(torch.ones_like(transformer.x_pad_token))
        transformer.cap_pad_token.copy_(torch.ones_like(transformer.cap_pad_token))
    vae = D.AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
        up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"],
        block_out_channels=[32, 64],
        layers_per_block=1,
        latent_channels=16,
        norm_num_groups=32,
        sample_size=32,
        scaling_factor=0.3611,
        shift_factor=0.1159,
    )
    tok = qwen_tokenizer()
    text_encoder = T.Qwen3Model(
        T.Qwen3Config(
            hidden_size=16,
            intermediate_size=16,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=2,
            vocab_size=len(tok),
            max_position_embeddings=512,
        )
    ).eval()
    D.ZImagePipeline(
        transformer=transformer,
        vae=vae,
        scheduler=D.FlowMatchEulerDiscreteScheduler(),
        text_encoder=text_encoder,
        tokenizer=tok,
    ).save_pretrained(dest / "pipeline")
    # diffusion-pipe trains ComfyUI's NextDiT (adapter_target_modules = ['JointTransformerBlock'],
    # the blocks of layers, noise_refiner and context_refiner): ComfyUI's names.
    named: list[tuple[str, int, int]] = []
    for part in ("layers", "noise_refiner", "context_refiner"):
        for n, lin in _linears(getattr(transformer, part), part):
            comfy = _z_image_name(n)
            if comfy is None:
                continue
            fan_in, fan_out = _shape(lin)
            named.append((comfy, fan_in, 3 * fan_out if comfy.endswith(".qkv") else fan_out))
    return "ZImagePipeline", "adapter_model.safetensors", _save_peft(dest / "lora", named, gen)


# --- the base checkpoint the worker verifies the LoRA against ---------------------------------


def _split_param(name: str) -> tuple[str, str]:
    module, _, param = name.rpartition(".")
    return module, param


def _renamed(tensors: dict[str, torch.Tensor], rename: Callable[[str], str]) -> dict[str, Any]:
    out = {}
    for name, tensor in tensors.items():
        module, param = _split_param(name)
        out[f"{rename(module)}.{param}"] = tensor
    return out


def _comfy_z_image(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """ComfyUI NextDiT's names: to_q, to_k and to_v fused into attention.qkv, to_out.0 is out."""
    out: dict[str, torch.Tensor] = {}
    for name, tensor in tensors.items():
        module, param = _split_param(name)
        if module.endswith((".attention.to_k", ".attention.to_v")):
            continue
        if module.endswith(".attention.to_q"):
            stem = module.removesuffix("to_q")
            parts = [tensors[f"{stem}to_{p}.{param}"] for p in "qkv"]
            out[f"{stem}qkv.{param}"] = torch.cat(parts, dim=0)
            continue
        out[f"{_z_image_name(module)}.{param}"] = tensor
    return out


def write_base(model: TinyModel, dest: Path) -> None:
    """The tiny pipeline's denoiser as the worker holds its family's base model: the weights
    file `dest` under the real checkpoint's names (diffusers' for Flux and Qwen-Image, original
    Wan's, ComfyUI NextDiT's for Z-Image), or for SDXL the folder `dest` with the UNet's and the
    text encoders' configs (the kohya names are built from them)."""
    from safetensors.torch import load_file  # noqa: PLC0415

    if model.family == "sdxl":
        for part in ("unet", "text_encoder", "text_encoder_2"):
            (dest / part).mkdir(parents=True, exist_ok=True)
            (dest / part / "config.json").write_bytes(
                (model.pipeline_dir / part / "config.json").read_bytes()
            )
        return
    tensors = load_file(
        str(model.pipeline_dir / "transformer" / "diffusion_pytorch_model.safetensors")
    )
    if model.family.startswith("wan"):
        tensors = _renamed(tensors, _wan_name)
    elif model.family == "z_image":
        tensors = _comfy_z_image(tensors)
    dest.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(dest))


_BUILDERS: dict[str, Callable[[Path, torch.Generator], tuple[str, str, int]]] = {
    "flux": _flux,
    "sdxl": _sdxl,
    "wan_t2v": lambda d, g: _wan(d, g, i2v=False),
    "wan_i2v": lambda d, g: _wan(d, g, i2v=True),
    "qwen_image": _qwen_image,
    "z_image": _z_image,
}


def build(family: str, dest: Path) -> TinyModel:
    """Build `family`'s tiny pipeline into `dest/pipeline` and its LoRA into `dest/lora`."""
    if family not in _BUILDERS:
        raise ValueError(f"unknown family {family!r}; one of {FAMILIES}")
    torch.manual_seed(SEED)
    gen = torch.Generator().manual_seed(SEED)
    pipeline_class, lora_file, modules = _BUILDERS[family](dest, gen)
    meta = {"pipeline_class": pipeline_class, "lora_file": lora_file, "lora_modules": modules}
    (dest / _DONE).write_text(json.dumps(meta))
    return _load(family, dest)


def _load(family: str, dest: Path) -> TinyModel:
    meta = json.loads((dest / _DONE).read_text())
    return TinyModel(
        family=family,
        pipeline_class=meta["pipeline_class"],
        pipeline_dir=dest / "pipeline",
        lora_dir=dest / "lora",
        lora_file=meta["lora_file"],
        lora_modules=meta["lora_modules"],
    )


def tiny_model(tmp_path_factory: pytest.TempPathFactory, family: str) -> TinyModel:
    """`family`'s tiny pipeline, built at most once per test session (under the session's
    base temp folder, so every test module shares it)."""
    dest = tmp_path_factory.getbasetemp() / "tiny_pipelines" / family
    if (dest / _DONE).is_file():
        return _load(family, dest)
    return build(family, dest)
