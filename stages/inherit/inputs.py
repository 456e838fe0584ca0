"""What the inherit stage needs: where the earlier job is, and what to take from it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

InheritMode = Literal["checkpoint", "lora"]


@dataclass(frozen=True)
class InheritInputs:
    """`checkpoint`: the dataset, captions, cache and run folders, so training resumes from the
    newest checkpoint; `lora`: only the newest saved LoRA, so training starts fresh from it
    (`init_from_existing`) on whatever dataset this request names."""

    origin_id: str
    origin_root: Path  # the volume's working folder: <origin_root>/jobs/<origin_id>
    mode: InheritMode
    lora_file: str  # the model's LoRA file name (adapter_model.safetensors, ...)
    adopt: tuple[str, ...]  # stages whose recorded results this job takes over (checkpoint)
    worker: str  # this worker's name, for the origin's lease
    lease_ttl_s: float = 60.0
