"""The tiny text-to-image denoiser minipipe trains.

Plain torch modules rather than diffusers/transformers: importing those two costs seconds per
process and their configs change between releases, while the test suite starts several
trainer processes. The layer names (`to_q`, `to_k`, `to_v`, `to_out`) mirror diffusers so the
LoRA keys look like those of a real model.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
BUILD_SEED = 20250212
# Linear layers inside the transformer blocks; the LoRA targets (as diffusion-pipe targets every
# nn.Linear inside a model's transformer-block classes).
LORA_TARGETS: tuple[str, ...] = ("to_q", "to_k", "to_v", "to_out", "ff_in", "ff_out")


@dataclass(frozen=True)
class TinyConfig:
    channels: int = 16
    text_dim: int = 32
    max_tokens: int = 32
    vocab_size: int = 257  # UTF-8 bytes + 1, 0 is padding
    num_train_timesteps: int = 1000


def tokenize(caption: str, max_tokens: int) -> torch.Tensor:
    """UTF-8 bytes shifted by one (0 pads): deterministic, needs no vocab download."""
    ids = [b + 1 for b in caption.encode("utf-8")[:max_tokens]]
    ids += [0] * (max_tokens - len(ids))
    return torch.tensor(ids, dtype=torch.long)


class Attention(nn.Module):
    def __init__(self, dim: int, context_dim: int, heads: int = 2) -> None:
        super().__init__()
        self.heads = heads
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_k = nn.Linear(context_dim, dim, bias=False)
        self.to_v = nn.Linear(context_dim, dim, bias=False)
        self.to_out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q = self.to_q(x).view(b, n, self.heads, -1).transpose(1, 2)
        k = self.to_k(context).view(b, context.shape[1], self.heads, -1).transpose(1, 2)
        v = self.to_v(context).view(b, context.shape[1], self.heads, -1).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.to_out(out.transpose(1, 2).reshape(b, n, d))  # type: ignore[no-any-return]


class TransformerBlock(nn.Module):
    """Self-attention, cross-attention on the caption, feed-forward."""

    def __init__(self, dim: int, context_dim: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn1 = Attention(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.attn2 = Attention(dim, context_dim)
        self.norm3 = nn.LayerNorm(dim)
        self.ff_in = nn.Linear(dim, dim * 2)
        self.ff_out = nn.Linear(dim * 2, dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        x = x + self.attn1(h, h)
        x = x + self.attn2(self.norm2(x), context)
        return x + self.ff_out(F.gelu(self.ff_in(self.norm3(x))))  # type: ignore[no-any-return]


class TextEncoder(nn.Module):
    """Byte embeddings plus one transformer block; frozen, like a real text encoder."""

    def __init__(self, cfg: TinyConfig) -> None:
        super().__init__()
        self.embed = nn.Embedding(cfg.vocab_size, cfg.text_dim)
        self.pos = nn.Parameter(torch.randn(cfg.max_tokens, cfg.text_dim) * 0.02)
        self.block = TransformerBlock(cfg.text_dim, cfg.text_dim)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embed(ids) + self.pos
        return self.block(x, x)  # type: ignore[no-any-return]


class Denoiser(nn.Module):
    """A two-level UNet with one transformer block at the low resolution; predicts noise."""

    def __init__(self, cfg: TinyConfig) -> None:
        super().__init__()
        c = cfg.channels
        self.time_in = nn.Linear(c, c * 2)
        self.time_out = nn.Linear(c * 2, c * 2)
        self.conv_in = nn.Conv2d(3, c, 3, padding=1)
        self.down = nn.Conv2d(c, c * 2, 3, stride=2, padding=1)
        self.norm_mid = nn.GroupNorm(4, c * 2)
        self.block = TransformerBlock(c * 2, cfg.text_dim)
        self.up = nn.ConvTranspose2d(c * 2, c, 4, stride=2, padding=1)
        self.conv_out = nn.Conv2d(c * 2, 3, 3, padding=1)
        self.channels = c

    def timestep_embedding(self, t: torch.Tensor) -> torch.Tensor:
        half = self.channels // 2
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / half)
        args = t.float()[:, None] * freqs[None]
        return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)

    def forward(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        dtype = self.conv_in.weight.dtype
        temb = self.time_out(F.silu(self.time_in(self.timestep_embedding(t).to(dtype))))
        h0 = F.silu(self.conv_in(x.to(dtype)))
        h = F.silu(self.down(h0)) + temb[:, :, None, None]
        h = self.norm_mid(h)
        b, ch, hh, ww = h.shape
        seq = self.block(h.flatten(2).transpose(1, 2), context.to(dtype))
        h = seq.transpose(1, 2).reshape(b, ch, hh, ww)
        h = F.silu(self.up(h))
        return self.conv_out(torch.cat([h, h0], dim=1))  # type: ignore[no-any-return]


class TinyModel(nn.Module):
    def __init__(self, cfg: TinyConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.text_encoder = TextEncoder(cfg)
        self.diffusion_model = Denoiser(cfg)


def build_tiny_model(path: Path | str) -> Path:
    """Create the tiny model with a fixed seed and config and save it to `path` (a folder).

    Identical bytes on every call: fixed seed, CPU RNG, safetensors with sorted keys.
    """
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    cfg = TinyConfig()
    gen_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(BUILD_SEED)
        model = TinyModel(cfg)
    finally:
        torch.random.set_rng_state(gen_state)
    tensors = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(tensors, str(folder / WEIGHTS_FILE), metadata={"format": "pt"})
    text = json.dumps({"model_type": "tiny", **asdict(cfg)}, indent=2, sort_keys=True) + "\n"
    (folder / CONFIG_FILE).write_text(text, encoding="utf-8")
    return folder


def load_tiny_model(path: Path | str, dtype: torch.dtype = torch.float32) -> TinyModel:
    """Load a folder written by `build_tiny_model`; raises ValueError naming a bad file."""
    folder = Path(path)
    config_path = folder / CONFIG_FILE
    weights_path = folder / WEIGHTS_FILE
    for needed in (config_path, weights_path):
        if not needed.is_file():
            raise ValueError(f"tiny model folder {folder} lacks {needed.name}")
    raw = json.loads(config_path.read_text(encoding="utf-8"))
    if raw.pop("model_type", None) != "tiny":
        raise ValueError(f"{config_path} is not a tiny model config (model_type != 'tiny')")
    cfg = TinyConfig(**raw)
    model = TinyModel(cfg)
    model.load_state_dict(load_file(str(weights_path)))
    return model.to(dtype)
