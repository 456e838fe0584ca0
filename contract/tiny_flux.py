"""A tiny random Flux in diffusers layout, the folder `[model].diffusers_path` points at.

`python contract/tiny_flux.py DEST` in the contract venv (diffusers and transformers are the
trainer's, not ours). Every component is the real class with small shapes: the trainer loads it
with `FluxPipeline.from_pretrained` as it would FLUX.1-dev. The tokenizers are built from a
small vocabulary (nothing is downloaded) and carry `model_max_length`, which the pipeline reads
for the prompt length.
"""

from __future__ import annotations

import string
import sys
from pathlib import Path
from typing import Any

import diffusers
import torch
from transformers import (
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTokenizer,
    T5Config,
    T5EncoderModel,
    T5Tokenizer,
)

CLIP_LENGTH = 77  # Flux's CLIP prompt length
# diffusers' classes are untyped for mypy: used through Any.
_D: Any = diffusers
AutoencoderKL = _D.AutoencoderKL
FlowMatchEulerDiscreteScheduler = _D.FlowMatchEulerDiscreteScheduler
FluxPipeline = _D.FluxPipeline
FluxTransformer2DModel = _D.FluxTransformer2DModel

T5_LENGTH = 512  # FluxPipeline's default max_sequence_length
WIDTH = 32  # text encoders' hidden size: the transformer's joint and pooled dimensions


def clip_tokenizer() -> CLIPTokenizer:
    """Byte-level BPE over printable characters, with no merges: one token per character."""
    chars = [c for c in string.printable if not c.isspace()]
    tokens = ["<|startoftext|>", "<|endoftext|>", *chars, *(f"{c}</w>" for c in chars)]
    vocab = {token: i for i, token in enumerate(tokens)}
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=CLIP_LENGTH)


def t5_tokenizer() -> T5Tokenizer:
    """A unigram vocabulary of single characters (plus the word marker)."""
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -1.0)]
    pieces += [(c, -2.0) for c in string.ascii_letters + string.digits + string.punctuation]
    return T5Tokenizer(vocab=pieces, extra_ids=0, model_max_length=T5_LENGTH)


def build(dest: Path) -> Path:
    torch.manual_seed(0)
    pipeline().save_pretrained(dest)
    return dest


def pipeline() -> Any:
    """The tiny FluxPipeline, not saved (tests/support/tiny_pipelines trains its LoRA on it)."""
    clip_tok, t5_tok = clip_tokenizer(), t5_tokenizer()
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(clip_tok),
            hidden_size=WIDTH,
            intermediate_size=37,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=CLIP_LENGTH,
            projection_dim=WIDTH,
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
        )
    )
    text_encoder_2 = T5EncoderModel(
        T5Config(
            vocab_size=len(t5_tok),
            d_model=WIDTH,
            d_kv=8,
            d_ff=37,
            num_layers=2,
            num_heads=4,
            relative_attention_num_buckets=8,
            pad_token_id=0,
            eos_token_id=1,
        )
    )
    # Four blocks: the VAE's scale factor stays 8, as Flux's.
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 8, 8, 8),
        layers_per_block=1,
        latent_channels=16,
        norm_num_groups=4,
        sample_size=64,
        scaling_factor=0.3611,
        shift_factor=0.1159,
        use_quant_conv=False,
        use_post_quant_conv=False,
    )
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=64,  # 16 latent channels packed 2x2
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=WIDTH,
        pooled_projection_dim=WIDTH,
        guidance_embeds=True,
        axes_dims_rope=(4, 6, 6),
    )
    return FluxPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True),
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=clip_tok,
        text_encoder_2=text_encoder_2,
        tokenizer_2=t5_tok,
        transformer=transformer,
    )


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python contract/tiny_flux.py DEST")
    print(build(Path(sys.argv[1])))
