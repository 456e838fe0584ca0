"""The verify step on a Wan 14B-sized job: a 1 GB LoRA against a 30 GB base, headers only.

The base is laid out as the worker holds Wan 2.1 14B (six `diffusion_pytorch_model-*`
shards, 40 blocks of dim 5120 and FFN 13824, every weight, bias and norm of the blocks: about
28 GB of bfloat16), written as sparse files: real safetensors headers, data offsets to match,
no data on disk (nothing reads it). The LoRA is real: rank 128 on each block's ten Linears, in
bfloat16, about 1.1 GB of random values, in diffusion-pipe's PEFT format.

Measured in the same run, each the median of 5 rounds after a warm-up (the page cache holds
the LoRA, as it does on the worker right after training saved it):

- headers: `base_modules` + `verify_lora(values=False)` (every key paired, rank, dtype, shape
  against the base) against reading the same headers with safetensors directly (`safe_open`,
  every key's shape and dtype, the LoRA and the six shards). Goal <= 1.2.
- with values: the whole check (`verify_lora`, the NaN/Inf scan included) against safetensors
  directly reading the headers and checking every tensor with `torch.isfinite(t).all()`.

Standalone: `.venv/bin/python -m bench.verify_bench`.
"""

from __future__ import annotations

import json
import statistics
import struct
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from bench.table import Result, secs
from stages.verify import rules
from stages.verify.base import base_modules
from stages.verify.check import Expected, verify_lora

BLOCKS, DIM, FFN, RANK, SHARDS = 40, 5120, 13824, 128, 6
FOLDER = "Wan/Wan2.1-T2V-14B"
ROUNDS = 5
GOAL = 1.2


def _block_tensors(i: int) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for attn in ("self_attn", "cross_attn"):
        for proj in "qkvo":
            out[f"blocks.{i}.{attn}.{proj}.weight"] = [DIM, DIM]
            out[f"blocks.{i}.{attn}.{proj}.bias"] = [DIM]
        out[f"blocks.{i}.{attn}.norm_q.weight"] = [DIM]
        out[f"blocks.{i}.{attn}.norm_k.weight"] = [DIM]
    out[f"blocks.{i}.ffn.0.weight"] = [FFN, DIM]
    out[f"blocks.{i}.ffn.0.bias"] = [FFN]
    out[f"blocks.{i}.ffn.2.weight"] = [DIM, FFN]
    out[f"blocks.{i}.ffn.2.bias"] = [DIM]
    out[f"blocks.{i}.norm3.weight"] = [DIM]
    out[f"blocks.{i}.modulation"] = [1, 6, DIM]
    return out


def _sparse_shard(path: Path, shapes: dict[str, list[int]]) -> int:
    """A safetensors file whose header is real and whose data is a hole; its size."""
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, shape in shapes.items():
        size = 2 * int(torch.tensor(shape).prod())
        header[name] = {"dtype": "BF16", "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with path.open("wb") as fh:
        fh.write(struct.pack("<Q", len(text)) + text)
        fh.truncate(8 + len(text) + offset)
    return 8 + len(text) + offset


def build(root: Path) -> tuple[Path, list[Path], int]:
    """(the LoRA, the base shards, the base's size)."""
    folder = root / FOLDER
    folder.mkdir(parents=True)
    per = BLOCKS // SHARDS + 1
    shards, total = [], 0
    for n in range(SHARDS):
        shapes: dict[str, list[int]] = {}
        for i in range(n * per, min(BLOCKS, (n + 1) * per)):
            shapes |= _block_tensors(i)
        path = folder / f"diffusion_pytorch_model-{n + 1:05d}-of-{SHARDS:05d}.safetensors"
        total += _sparse_shard(path, shapes)
        shards.append(path)
    gen = torch.Generator().manual_seed(0)
    lora: dict[str, torch.Tensor] = {}
    for i in range(BLOCKS):
        for name, shape in _block_tensors(i).items():
            if len(shape) != 2:
                continue
            module = "diffusion_model." + name.removesuffix(".weight")
            out_f, in_f = shape
            lora[f"{module}.lora_A.weight"] = torch.randn(RANK, in_f, generator=gen).to(
                torch.bfloat16
            )
            lora[f"{module}.lora_B.weight"] = torch.randn(out_f, RANK, generator=gen).to(
                torch.bfloat16
            )
    path = root / "adapter_model.safetensors"
    save_file(lora, str(path), metadata={"format": "pt"})
    return path, shards, total


def _median(fn: Callable[[], object]) -> tuple[float, float]:
    """(wall, CPU) seconds, each the median of ROUNDS after one warm-up call."""
    fn()
    walls, cpus = [], []
    for _ in range(ROUNDS):
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return statistics.median(walls), statistics.median(cpus)


def _read_headers(paths: list[Path]) -> int:
    count = 0
    for path in paths:
        with safe_open(str(path), framework="pt") as handle:
            for key in handle.keys():  # noqa: SIM118
                part = handle.get_slice(key)
                part.get_shape()
                part.get_dtype()
                count += 1
    return count


def _direct_values(lora: Path, shards: list[Path]) -> bool:
    _read_headers([lora, *shards])
    with safe_open(str(lora), framework="pt") as handle:
        return all(bool(torch.isfinite(handle.get_tensor(k)).all()) for k in handle.keys())  # noqa: SIM118


def run() -> list[Result]:
    rule = rules.wan(FOLDER)
    want = Expected(rank=RANK, dtype="bfloat16")
    with tempfile.TemporaryDirectory(prefix="dps-verify-bench-") as tmp:
        root = Path(tmp)
        lora, shards, base_size = build(root)
        lora_gb, base_gb = lora.stat().st_size / 1e9, base_size / 1e9

        def ours(values: bool) -> Callable[[], object]:
            return lambda: verify_lora(
                lora, rule.format, base_modules(rule.base, root), want, values=values
            )

        head_ours, head_ours_cpu = _median(ours(values=False))
        head_base, _ = _median(lambda: _read_headers([lora, *shards]))
        full_ours, full_ours_cpu = _median(ours(values=True))
        full_base, _ = _median(lambda: _direct_values(lora, shards))
    size = f"{lora_gb:.2f} GB LoRA, {base_gb:.1f} GB base"
    return [
        Result(
            "verify: headers, key/rank/dtype/shape check",
            f"{head_ours * 1e3:.1f} ms ({head_ours_cpu * 1e3:.1f} ms CPU)",
            f"{head_base * 1e3:.1f} ms safetensors headers",
            head_ours / head_base,
            GOAL,
            f"{size} ({BLOCKS * 10} modules, {SHARDS} shards)",
        ),
        Result(
            "verify: with the NaN/Inf scan",
            f"{secs(full_ours)} ({full_ours_cpu:.2f} s CPU)",
            f"{secs(full_base)} headers + isfinite().all()",
            full_ours / full_base,
            GOAL,
            f"{size}; scan at {lora_gb / max(full_ours - head_ours, 1e-9):.1f} GB/s",
        ),
    ]


if __name__ == "__main__":
    from bench.table import publish

    publish(run(), Path(tempfile.gettempdir()) / "dps-bench-verify.md")
    sys.exit(0)
