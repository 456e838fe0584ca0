"""A job folder as the training stage leaves it, for the publish tests: a run with epochN/ saves
and the TOMLs, a request with a canary in every secret field, and the seed's response keys."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from orchestrator.plan import publish_spec
from orchestrator.request import parse_request
from stages.publish.annotate import ANNOTATED_FOLDER
from stages.publish.common import PublishInputs
from tests.support.family_loras import metadata_of, raw_safetensors, tensor_data

JOB_ID = "a1b2c3d4-e5f6-7890-abcd-ef0123456789"

RUN = "20250101_00-00-00"

# One canary per secret field of the request; none may surface anywhere.
CANARY = {
    "hf_output": "hf_CANARYoutputTOKEN0123456789",
    "hf_api": "hf_CANARYapiKEYtoken987654321",
    "gemini": "CANARY-gemini-key-55555",
    "s3_access": "AKIACANARYACCESS0001",
    "s3_secret": "CANARY/secret+KEY/abcdefghij0123456789",
    "wandb": "CANARY-wandb-key-77777",
}

SEED_RESPONSE_KEYS = {
    "status",
    "job_id",
    "model_type",
    "model_name",
    "epochs_completed",
    "latest_epoch",
    "output",
}
# What the response adds to the seed's keys.
ADDED_RESPONSE_KEYS = {"files", "volume_path", "mirror", "lora"}

SEED_OUTPUT_KEYS = {
    "download_url",
    "safetensors_url",
    "repo_url",
    "download_method",
    "expires_in_days",
    "note",
}


def lora_bytes(epoch: int, size: int = 4096) -> bytes:
    """A LoRA file as the trainer saved it for `epoch`: a real safetensors file (the publish
    adds metadata to its header), its data different per epoch."""
    return raw_safetensors(hashlib.sha256(f"lora-{epoch}".encode()).digest() * (size // 32))


def is_published_lora(blob: bytes, epoch: int) -> bool:
    """`blob` is epoch `epoch`'s LoRA as published: its tensors unchanged, our metadata added."""
    meta = metadata_of(blob)
    return tensor_data(blob) == tensor_data(lora_bytes(epoch)) and meta.get("dps_job_id") == JOB_ID


def published_copy(inputs: PublishInputs) -> Path:
    """The final LoRA as published: the trained file with its metadata added."""
    return inputs.job_dir / "publish" / ANNOTATED_FOLDER / inputs.lora_name


def make_request(output: Mapping[str, Any], model_type: str = "qwen", **extra: Any) -> Any:
    """A parsed request with a canary in every secret field."""
    raw: dict[str, Any] = {
        "model_type": model_type,
        "dataset": {
            "type": "precaptioned",
            "images_url": "https://data.example/images.zip",
            "trigger_word": "ohwx person",
        },
        "training": {"monitoring": {"wandb_api_key": CANARY["wandb"]}},
        "api_keys": {"huggingface_token": CANARY["hf_api"], "gemini_api_key": CANARY["gemini"]},
        "output": dict(output),
    }
    request = parse_request(raw)
    if extra:  # fields the schema may not have yet (upload_epochs)
        request = request.model_copy(update={"output": request.output.model_copy(update=extra)})
    return request


def make_job(
    root: Path,  # a test's tmp folder
    output: Mapping[str, Any],
    *,
    model_type: str = "qwen",
    epochs: int = 2,
    size: int = 4096,
    **extra: Any,
) -> PublishInputs:
    """A job folder as the training stage leaves it, `<tmp>/root/jobs/<id>/`: a run with epochN/
    saves, the TOMLs. (The working folder is `<tmp>/root`: results go beside it, not in it.)"""
    request = make_request(output, model_type, **extra)
    lora_file = request.model.lora_file
    job_dir = root / "root" / "jobs" / JOB_ID
    run_dir = job_dir / "output" / RUN
    for epoch in range(1, epochs + 1):
        folder = run_dir / f"epoch{epoch}"
        folder.mkdir(parents=True)
        (folder / lora_file).write_bytes(lora_bytes(epoch, size))
        (folder / "adapter_config.json").write_text(json.dumps({"r": 32, "epoch": epoch}))
    config = job_dir / "config"
    config.mkdir(parents=True)
    (config / f"{model_type}.toml").write_text(
        f'output_dir = "{job_dir / "output"}"\nepochs = {epochs}\n'
        f'[monitoring]\nwandb_api_key = "{CANARY["wandb"]}"\n'
    )
    (config / "dataset.toml").write_text("resolutions = [1024]\n")
    lora = f"output/{RUN}/epoch{epochs}/{lora_file}"
    training = {
        "run_dir": f"output/{RUN}",
        "lora": lora,
        "final_save": f"epoch{epochs}",
        "epochs_completed": epochs,
        "files": [lora],
    }
    report = {"images": 12, "videos": 0, "captions": 12, "trigger_word": "ohwx person"}
    return PublishInputs(JOB_ID, job_dir, publish_spec(request), training, report)


def assert_no_canary(*texts: str | bytes) -> None:
    for text in texts:
        blob = text if isinstance(text, bytes) else text.encode()
        for name, canary in CANARY.items():
            assert canary.encode() not in blob, f"the {name} canary leaked"


def hub_job(root: Path, repo_id: str, **kw: Any) -> PublishInputs:
    """`make_job` for Hub output into `repo_id`, with the canary output token."""
    output = {
        "method": "huggingface",
        "huggingface": {"token": CANARY["hf_output"], "repo_id": repo_id},
    }
    return make_job(root, output, **kw)
