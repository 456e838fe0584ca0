"""The base model's modules, as a LoRA names them: read from safetensors headers or built from
configs on the meta device, never by loading weights. See `stages.verify.rules`."""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from stages.errors import StageFailed
from stages.verify.rules import BaseLayout, ConfigPart

Shape = tuple[int, int]  # a Linear weight's (out, in)


@dataclass(frozen=True)
class BaseModules:
    """Module name (the LoRA's spelling) -> weight shape, and what they were read from."""

    shapes: Mapping[str, Shape]
    files: tuple[str, ...]  # relative to the models root
    alternatives: tuple[tuple[str, tuple[str, ...]], ...] = ()

    def shape(self, module: str) -> Shape | None:
        """`module`'s (out, in); a module spelt otherwise in the checkpoint (`alternatives`)
        has the rows of its parts, which must agree on `in`."""
        found = self.shapes.get(module)
        if found is not None:
            return found
        for ending, others in self.alternatives:
            if not module.endswith(ending):
                continue
            stem = module.removesuffix(ending)
            parts = [self.shapes.get(stem + other) for other in others]
            if all(p is not None for p in parts) and len({p[1] for p in parts if p}) == 1:
                return (sum(p[0] for p in parts if p), parts[0][1] if parts[0] else 0)
        return None


_MAX_HEADER = 100_000_000  # safetensors' own limit on a header's size


def raw_header(fh: BinaryIO, name: str, file_size: int) -> tuple[dict[str, Any], int]:
    """A safetensors header as the format defines it (an 8-byte little-endian length, then a
    JSON object) and the data section's start, read from `fh` at its start. Checked: the
    length, the JSON, and that every tensor's data lies inside the file (a save cut short)."""

    def bad(why: str) -> StageFailed:
        return StageFailed(f"{name} is not a readable safetensors file ({why})")

    raw = fh.read(8)
    size = struct.unpack("<Q", raw)[0] if len(raw) == 8 else -1
    if not 0 < size <= min(_MAX_HEADER, file_size - 8):
        raise bad("no header")
    try:
        header = json.loads(fh.read(size))
    except ValueError:
        raise bad("the header is not JSON") from None
    if not isinstance(header, dict):
        raise bad("the header is not a JSON object")
    data = file_size - 8 - size
    try:
        end = max(
            (v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0
        )
    except (TypeError, KeyError, IndexError):
        raise bad("a tensor without data_offsets") from None
    if end > data:  # name the first tensor that does not fit
        key = next(
            k for k, v in header.items() if k != "__metadata__" and v["data_offsets"][1] > data
        )
        raise bad(f"tensor {key} lies past the end of the file: a save cut short?")
    return header, 8 + size


def read_header(path: Path) -> dict[str, tuple[str, list[int]]]:
    """`{tensor: (dtype, shape)}` from a safetensors file's header (no tensor is read)."""
    try:
        with path.open("rb") as fh:
            header, _ = raw_header(fh, path.name, os.fstat(fh.fileno()).st_size)
    except OSError as exc:
        raise StageFailed(f"{path.name} is not a readable safetensors file ({exc})") from None
    header.pop("__metadata__", None)
    try:
        return {k: (v["dtype"], v["shape"]) for k, v in header.items()}
    except (TypeError, KeyError):
        raise StageFailed(f"{path.name} is not a readable safetensors file (a bad entry)") from None


def base_modules(layout: BaseLayout, root: Path) -> BaseModules:
    """The base model's modules under the models root `root`, as `layout` says to read them."""
    if layout.kind == "configs":
        return _from_configs(layout.parts, root)
    return _from_headers(layout, root)


def _matches(root: Path, patterns: Iterable[str]) -> list[Path]:
    return sorted({p for pattern in patterns for p in root.glob(pattern) if p.is_file()})


def _missing(root: Path, patterns: Iterable[str]) -> StageFailed:
    return StageFailed(
        f"the base model's files ({', '.join(patterns)}) are not under {root}, so the LoRA "
        "cannot be checked against them; nothing was published"
    )


def _from_headers(layout: BaseLayout, root: Path) -> BaseModules:
    files = _matches(root, layout.files)
    if not files:
        raise _missing(root, layout.files)
    strip = sorted(layout.strip, key=len, reverse=True)
    shapes: dict[str, Shape] = {}
    for path in files:
        try:
            header = read_header(path)
        except StageFailed as exc:
            raise StageFailed(f"base model file {path.relative_to(root)}: {exc}") from None
        for key, (_dtype, shape) in header.items():
            if not key.endswith(".weight") or len(shape) != 2:
                continue
            name = key.removesuffix(".weight")
            for prefix in strip:
                if name.startswith(prefix):
                    name = name.removeprefix(prefix)
                    break
            shapes[layout.lora_prefix + name] = (shape[0], shape[1])
    return BaseModules(
        shapes, tuple(p.relative_to(root).as_posix() for p in files), layout.alternatives
    )


def _from_configs(parts: tuple[ConfigPart, ...], root: Path) -> BaseModules:
    import torch  # noqa: PLC0415  (heavy; only SDXL's check needs it)
    from torch import nn  # noqa: PLC0415

    shapes: dict[str, Shape] = {}
    files = []
    for part in parts:
        found = _matches(root, (part.config,))
        if not found:
            raise _missing(root, (part.config,))
        config = max(found, key=lambda p: p.stat().st_mtime_ns)  # the newest snapshot
        files.append(config.relative_to(root).as_posix())
        with torch.device("meta"):
            model = _build(part, config)
        for found_name, module in model.named_modules():
            if isinstance(module, nn.Linear):
                name = found_name
                if not name.startswith(part.module_prefix):
                    name = part.module_prefix + name
                key = part.lora_prefix + name.replace(".", "_")
                shapes[key] = (module.out_features, module.in_features)
    return BaseModules(shapes, tuple(files))


def _build(part: ConfigPart, config: Path) -> Any:
    """The model `config` describes, with the library diffusers' from_single_file uses for it."""
    try:
        raw = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise StageFailed(f"{config}: not a readable config ({exc})") from None
    if part.library == "diffusers":
        import diffusers  # noqa: PLC0415

        model_class = getattr(diffusers, str(raw.get("_class_name")), None)
        if model_class is None:
            raise StageFailed(f"{config}: names no diffusers model class (_class_name)")
        return model_class.from_config(raw)
    import transformers  # noqa: PLC0415

    loaded: Any = transformers.AutoConfig.from_pretrained(config.parent)
    architecture = (loaded.architectures or [None])[0]
    if architecture is None:
        raise StageFailed(f"{config}: the config names no architecture")
    return getattr(transformers, architecture)(loaded)
