"""One LoRA module per model family, named as diffusion-pipe names it, and the base-model file
that module sits in, laid out as the weights stage downloads it.

The GPU-path tests serve these base files from the loopback Hub (real safetensors headers, or
for SDXL real configs of a toy UNet and text encoders) and the stand-in trainer saves the
matching LoRA at the rank and dtype its TOML asks for, so the verify step checks a real file
against real headers. `wrong` names a module the base does not have: a LoRA for another family.

Written without torch (the stand-in trainer starts fast): safetensors files are built here from
their spec (an 8-byte header length, the JSON header, the raw little-endian data).
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass

import numpy as np

# safetensors dtype -> how its bytes are made from float32 values
_DTYPES = ("F32", "F16", "BF16")
SAVE_DTYPES = {"float32": "F32", "float16": "F16", "bfloat16": "BF16"}


def _raw(values: np.ndarray, dtype: str) -> bytes:
    data = np.ascontiguousarray(values, dtype=np.float32)
    if dtype == "F32":
        return data.tobytes()
    if dtype == "F16":
        return data.astype(np.float16).tobytes()
    if dtype == "BF16":  # the top half of each float32, rounded to nearest even
        bits = data.view(np.uint32).astype(np.uint64)
        rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
        return rounded.astype(np.uint16).tobytes()
    raise ValueError(f"dtype {dtype} is not one of {_DTYPES}")


def safetensors_bytes(
    tensors: dict[str, tuple[str, np.ndarray]], metadata: dict[str, str] | None = None
) -> bytes:
    """A safetensors file: `{name: (dtype, float32 values)}`, stored in that dtype."""
    header: dict[str, object] = {"__metadata__": metadata or {"format": "pt"}}
    blobs, offset = [], 0
    for name in sorted(tensors):
        dtype, values = tensors[name]
        raw = _raw(values, dtype)
        header[name] = {
            "dtype": dtype,
            "shape": list(values.shape),
            "data_offsets": [offset, offset + len(raw)],
        }
        blobs.append(raw)
        offset += len(raw)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(blobs)


def raw_safetensors(data: bytes, name: str = "diffusion_model.blob.lora_A.weight") -> bytes:
    """A safetensors file holding `data` as one U8 tensor: real to a header reader, any
    content (the upload tests' payloads)."""
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    header[name] = {"dtype": "U8", "shape": [len(data)], "data_offsets": [0, len(data)]}
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + data


def tensor_data(blob: bytes) -> bytes:
    """A safetensors file's data section: what stays the same when its metadata changes."""
    (size,) = struct.unpack("<Q", blob[:8])
    return blob[8 + size :]


def metadata_of(blob: bytes) -> dict[str, str]:
    (size,) = struct.unpack("<Q", blob[:8])
    meta: dict[str, str] = json.loads(blob[8 : 8 + size]).get("__metadata__", {})
    return meta


def header_only(shapes: dict[str, tuple[int, ...]], dtype: str = "BF16") -> bytes:
    """A base checkpoint whose tensors are zeros (only its header is ever read)."""
    return safetensors_bytes({k: (dtype, np.zeros(s, np.float32)) for k, s in shapes.items()})


@dataclass(frozen=True)
class Sample:
    lora_module: str  # the module's name in diffusion-pipe's LoRA file (no pair suffix)
    out_features: int
    in_features: int
    kohya: bool = False  # lora_down/lora_up + alpha instead of lora_A/lora_B


# by diffusion-pipe's [model] type
SAMPLES: dict[str, Sample] = {
    "flux": Sample("transformer.transformer_blocks.0.attn.to_q", 8, 8),
    "sdxl": Sample(
        "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q", 4, 4, kohya=True
    ),
    "wan": Sample("diffusion_model.blocks.0.self_attn.q", 12, 12),
    "qwen_image": Sample("diffusion_model.transformer_blocks.0.attn.to_q", 16, 16),
    "z_image": Sample("diffusion_model.layers.0.attention.qkv", 24, 8),
    "tiny": Sample("diffusion_model.block.attn1.to_q", 32, 32),
}
# A module no base model here has: what a LoRA for the wrong family holds.
WRONG = Sample("diffusion_model.double_blocks.0.img_attn.qkv", 24, 8)


def lora_bytes(sample: Sample, rank: int, dtype: str, *, nan: bool = False) -> bytes:
    """The sample module's LoRA pair at `rank`, in safetensors dtype `dtype`; `nan`: training
    diverged (one value of the up half is NaN)."""
    down = np.full((rank, sample.in_features), 0.01, np.float32)
    up = np.full((sample.out_features, rank), 0.02, np.float32)
    if nan:
        up[0, 0] = np.nan
    if sample.kohya:
        tensors = {
            f"{sample.lora_module}.lora_down.weight": (dtype, down),
            f"{sample.lora_module}.lora_up.weight": (dtype, up),
            f"{sample.lora_module}.alpha": (dtype, np.array(float(rank), np.float32)),
        }
    else:
        tensors = {
            f"{sample.lora_module}.lora_A.weight": (dtype, down),
            f"{sample.lora_module}.lora_B.weight": (dtype, up),
        }
    return safetensors_bytes(tensors)


# SDXL: the toy UNet and text encoders whose configs stand in for the base repo's (the kohya
# names are diffusers' module paths, built from these configs).
SDXL_UNET_CONFIG = {
    "_class_name": "UNet2DConditionModel",
    "block_out_channels": [2, 4],
    "layers_per_block": 1,
    "sample_size": 32,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"],
    "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D"],
    "attention_head_dim": [2, 4],
    "use_linear_projection": True,
    "addition_embed_type": "text_time",
    "addition_time_embed_dim": 8,
    "transformer_layers_per_block": [1, 1],
    "projection_class_embeddings_input_dim": 80,
    "cross_attention_dim": 64,
    "norm_num_groups": 1,
}


def sdxl_text_config(architecture: str) -> dict[str, object]:
    return {
        "architectures": [architecture],
        "model_type": "clip_text_model",
        "hidden_size": 32,
        "intermediate_size": 37,
        "num_attention_heads": 4,
        "num_hidden_layers": 2,
        "vocab_size": 100,
        "projection_dim": 32,
    }


def base_files(diffusion_pipe_type: str) -> dict[str, bytes]:
    """The base checkpoint file(s) holding the sample module, named relative to the model's
    download folder (SDXL: the configs, relative to the SDXL base repo)."""
    if diffusion_pipe_type == "sdxl":
        return {
            "unet/config.json": json.dumps(SDXL_UNET_CONFIG).encode(),
            "text_encoder/config.json": json.dumps(sdxl_text_config("CLIPTextModel")).encode(),
            "text_encoder_2/config.json": json.dumps(
                sdxl_text_config("CLIPTextModelWithProjection")
            ).encode(),
        }
    sample = SAMPLES[diffusion_pipe_type]
    weight = (sample.out_features, sample.in_features)
    name = sample.lora_module.split(".", 1)[1] + ".weight"
    if diffusion_pipe_type in ("flux", "qwen_image"):
        return {"transformer/diffusion_pytorch_model.safetensors": header_only({name: weight})}
    if diffusion_pipe_type == "wan":
        return {"diffusion_pytorch_model.safetensors": header_only({name: weight})}
    if diffusion_pipe_type == "z_image":  # the Comfy-Org repackaged file, flattened
        return {
            "split_files/diffusion_models/z_image_turbo_bf16.safetensors": header_only(
                {name: weight}
            )
        }
    raise ValueError(f"no base files for {diffusion_pipe_type!r}")
