"""The published LoRA's name for people and tools, and its safetensors metadata.

diffusion-pipe writes only `{"format": "pt"}` into a LoRA's metadata, and names every Wan,
Qwen-Image and Z-Image LoRA `adapter_model.safetensors`, so two of them collide in ComfyUI's
`models/loras/`. The published final LoRA is the trained file with its header's
`__metadata__` extended (the tensors' bytes are copied unchanged: their offsets are relative to
the end of the header, so only the header is rewritten):

- kohya's `ss_` keys, which LoRA browsers (ComfyUI managers, Civitai, A1111's LoRA info) read:
  `ss_base_model_version`, `ss_sd_model_name`, `ss_network_dim`, `ss_network_alpha` (alpha
  equals rank in diffusion-pipe), `ss_num_epochs`, `ss_output_name`;
- Stability's ModelSpec keys (`modelspec.sai_model_spec` 1.0.0): `architecture`, `title`,
  `implementation`, `date`, `trigger_phrase`;
- ours, `dps_`: the job id, model type, base model, task, diffusers pipeline, saved epoch, key
  format.

Nothing secret goes in (only the model, the job id, the trigger word and training numbers),
and every value is scrubbed of the job's secrets besides. The values are deterministic (the
date is the LoRA file's), so publishing the same LoRA again writes the same bytes.

The descriptive name, `<label>-<model_type>-<save>.safetensors` (`label`: the Hub repo's name,
else the job id; the model type is left out when the label already holds it), is the same
file again under `comfyui/`, so the repo root keeps one .safetensors for diffusers.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from stages.errors import StageFailed
from stages.verify.base import raw_header

if TYPE_CHECKING:
    from stages.publish.common import PublishInputs

COMFY_FOLDER = "comfyui"
ANNOTATED_FOLDER = "annotated"  # under <job>/publish/
IMPLEMENTATION = "https://github.com/tdrussell/diffusion-pipe"
_SS_BASE = {"flux": "flux1", "sdxl": "sdxl_base_v1-0"}  # kohya's names for these two families
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_MAX_STEM = 120


def descriptive_name(inputs: PublishInputs, label: str | None = None) -> str:
    """`<label>-<model_type>-<save>.safetensors`, in characters every file system takes."""
    stem = _UNSAFE.sub("_", label or inputs.job_id).strip("._-") or inputs.job_id
    model_type = inputs.model.model_type
    parts = [stem] if model_type in stem else [stem, model_type]
    parts.append(str(inputs.training.get("final_save") or "final"))
    name = _UNSAFE.sub("_", "-".join(parts)).strip("._-")[:_MAX_STEM]
    return f"{name}.safetensors"


def repo_label(repo_id: str) -> str:
    """The label a Hub repo gives its LoRA's descriptive name: the repo's own name."""
    return repo_id.rsplit("/", 1)[-1]


def comfy_name(inputs: PublishInputs, label: str | None = None) -> str:
    return f"{COMFY_FOLDER}/{descriptive_name(inputs, label)}"


def lora_metadata(inputs: PublishInputs, source: Path, save: str | None = None) -> dict[str, str]:
    """What a loader or a person needs to know of the LoRA, as metadata strings (`save`: the
    saved epoch it is, when not the final one)."""
    model, training = inputs.model, inputs.spec.card_training
    usage, rules = model.usage, model.lora_rules
    rank = training.get("lora_rank")
    save = save or str(inputs.training.get("final_save") or "")
    date = datetime.fromtimestamp(source.stat().st_mtime, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    base = usage.base_model if usage is not None else model.model_type
    meta: dict[str, str] = {
        "ss_base_model_version": _SS_BASE.get(model.diffusion_pipe_type, model.model_type),
        "ss_sd_model_name": base,
        "ss_output_name": descriptive_name(inputs).removesuffix(".safetensors"),
        "modelspec.sai_model_spec": "1.0.0",
        "modelspec.architecture": f"{usage.architecture if usage else model.model_type}/lora",
        "modelspec.implementation": IMPLEMENTATION,
        "modelspec.title": f"{model.display_name} LoRA ({inputs.job_id})",
        "modelspec.date": date,
        "dps_job_id": inputs.job_id,
        "dps_model_type": model.model_type,
        "dps_base_model": base,
        "dps_save": save,
    }
    if rank is not None:
        meta |= {"ss_network_dim": str(rank), "ss_network_alpha": str(rank)}
    epochs = inputs.training.get("epochs_completed")
    if save.startswith("epoch") and save.removeprefix("epoch").isdigit():
        epochs = int(save.removeprefix("epoch"))
    if epochs is not None:
        meta["ss_num_epochs"] = str(epochs)
    if usage is not None:
        meta |= {"dps_task": usage.pipeline_tag, "dps_pipeline": usage.pipeline_class}
    if rules is not None:
        meta["dps_format"] = rules.format.name
    trigger = inputs.spec.trigger_word
    if trigger:
        meta |= {"modelspec.trigger_phrase": trigger, "dps_trigger_word": trigger}
    return {k: inputs.scrub(v) for k, v in meta.items()}


def _read_header(fh: BinaryIO, path: Path) -> dict[str, Any]:
    try:
        header, _ = raw_header(fh, path.name, os.fstat(fh.fileno()).st_size)
    except StageFailed as exc:
        raise StageFailed(f"the trained LoRA {exc}") from None
    return header


def _rename_note(header: dict[str, object], renames: tuple[tuple[str, str], ...]) -> dict[str, str]:
    """The metadata line that says which keys were renamed (none: nothing)."""
    done = [
        f"{old} -> {new} ({sum(k.startswith(old) for k in header)} tensors)"
        for old, new in renames
        if any(k.startswith(old) for k in header)
    ]
    return {"dps_renamed": "; ".join(done)} if done else {}


def current_metadata(path: Path) -> dict[str, str]:
    with path.open("rb") as fh:
        header = _read_header(fh, path)
    meta = header.get("__metadata__") or {}
    return dict(meta) if isinstance(meta, Mapping) else {}


def _renamed(header: dict[str, object], renames: tuple[tuple[str, str], ...]) -> int:
    """Rename the tensors whose names start with a `renames` prefix, in place; how many."""
    count = 0
    for key in list(header):
        for old, new in renames:
            if key.startswith(old):
                header[new + key.removeprefix(old)] = header.pop(key)
                count += 1
                break
    return count


def annotate(
    source: Path,
    dest: Path,
    metadata: Mapping[str, str],
    renames: tuple[tuple[str, str], ...] = (),
) -> Path:
    """`dest`: `source` with `metadata` added to its header and its tensors renamed by
    `renames` (the data is copied as is), written atomically; an existing `dest` newer than
    `source` with that metadata is kept (a second publish writes nothing)."""
    if dest.is_file() and dest.stat().st_mtime_ns >= source.stat().st_mtime_ns:
        with source.open("rb") as src:
            header = _read_header(src, source)
        want = {**current_metadata(source), **metadata, **_rename_note(header, renames)}
        if current_metadata(dest) == want:
            return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp")
    with source.open("rb") as src:
        header = _read_header(src, source)
        note = _rename_note(header, renames)
        _renamed(header, renames)
        old = header.get("__metadata__")
        header["__metadata__"] = {
            **(old if isinstance(old, Mapping) else {}),
            **metadata,
            **note,
        }
        text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
        text += b" " * (-len(text) % 8)  # the data stays 8-byte aligned, as safetensors writes
        with tmp.open("wb") as out:
            out.write(struct.pack("<Q", len(text)))
            out.write(text)
            shutil.copyfileobj(src, out, 1 << 20)
    os.replace(tmp, dest)
    return dest
