"""`PublishInputs` for any catalogue model, for model card tests: a job folder holding the LoRA
under the model's real file name, a trigger word, and a few training values. Built from the
catalogue directly (not a parsed request), so image-only and video-only models alike."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from orchestrator.catalogue import CATALOGUE
from stages.publish.common import PublishInputs
from stages.publish.inputs import Destination, PublishSpec

TRIGGER = "ohwx person"


def card_inputs(
    root: Path,
    model_type: str,
    trigger: str | None = TRIGGER,
    *,
    destination: Destination | None = None,
    training_values: Mapping[str, object] | None = None,
) -> PublishInputs:
    entry = CATALOGUE[model_type]
    job_dir = root / model_type
    lora = f"output/run/epoch2/{entry.lora_file}"
    (job_dir / lora).parent.mkdir(parents=True, exist_ok=True)
    (job_dir / lora).write_bytes(b"lora")
    spec = PublishSpec(
        model=entry.info,
        destination=destination or Destination(method="huggingface"),
        trigger_word=trigger,
        card_training=training_values or {"lora_rank": entry.defaults["lora_rank"], "epochs": 2},
    )
    training = {"lora": lora, "final_save": "epoch2", "epochs_completed": 2, "files": [lora]}
    return PublishInputs(f"job-{model_type}", job_dir, spec, training, {"images": 3})
