"""The publish stage (UPLOADING): send the trained LoRA where the job's destination says.

Hugging Face (`hub`), S3 (`s3`), a local folder (`local`), or `auto` (Hugging Face when a token
is given, then temporary file hosts, `fallback`). Its result holds the seed's `output` object
plus the file list and the volume path; `orchestrator.response` turns it into the seed's
success response.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from events.facts import LoraVerified
from events.vocabulary import Status
from stages.addresses import AddressPolicy
from stages.contract import Stage, StageContext
from stages.publish import diffusers_copy
from stages.publish.annotate import COMFY_FOLDER
from stages.publish.common import Published, PublishInputs, RetryPolicy, fail
from stages.publish.fallback import AutoOptions, HostUrls, publish_auto
from stages.publish.hub import publish_hf
from stages.publish.inputs import PublishSpec
from stages.publish.local import keep_in_job, publish_local
from stages.publish.s3 import S3Tuning, publish_s3
from stages.publish.verification import OnVerified, verify_published
from stages.verify.check import Verified
from stages.weights.inputs import HF_ENDPOINT


@dataclass
class PublishOptions:
    """Where the non-request settings come from: the worker's settings, or a test's servers."""

    hub_endpoint: str = HF_ENDPOINT
    hosts: HostUrls = field(default_factory=HostUrls)
    local_folder: Path | None = None  # used when output.local.path is absent
    local_roots: tuple[Path, ...] = ()  # where local output may go (empty: anywhere allowed)
    addresses: AddressPolicy = field(default_factory=AddressPolicy)  # for the S3 endpoint
    hf_policy: RetryPolicy | None = None
    s3_tuning: S3Tuning | None = None
    sleep: Callable[[float], None] = time.sleep
    # Where the base model's weights are: each LoRA is checked against them before it is
    # published (`stages.publish.verification`). None: not checked (the upload tests).
    models_root: Path | None = None


def publish(
    inputs: PublishInputs,
    options: PublishOptions | None = None,
    on_verified: OnVerified | None = None,
) -> dict[str, Any]:
    """Verify the LoRA files against the base model, then publish them by `output.method`;
    return the stage result (JSON-ready)."""
    options = options or PublishOptions()
    verified: list[Verified] = []
    if options.models_root is not None:
        verified = verify_published(inputs, options.models_root, on_verified)
    method = inputs.destination.method
    published: Published
    if method == "huggingface":
        published = publish_hf(
            inputs, endpoint=options.hub_endpoint, policy=options.hf_policy, sleep=options.sleep
        )
    elif method == "s3":
        published = publish_s3(
            inputs, tuning=options.s3_tuning, sleep=options.sleep, addresses=options.addresses
        )
    elif method == "local":
        path = inputs.destination.local_path or options.local_folder
        if path is None:  # no folder asked for: the results stay in the job's own folder
            published = keep_in_job(inputs)
        else:
            published = publish_local(inputs, Path(str(path)), allowed=options.local_roots)
    elif method == "auto":
        published = publish_auto(
            inputs,
            AutoOptions(
                hub_endpoint=options.hub_endpoint,
                hosts=options.hosts,
                hf_policy=options.hf_policy,
                sleep=options.sleep,
            ),
        )
    else:
        raise fail(inputs, f"output.method {method!r} is not supported")
    return {
        "method": published.method,
        "output": published.output(),
        "files": published.files,
        "safetensors_files": [f for f in published.files if f.endswith(".safetensors")],
        "volume_path": str(inputs.job_dir.absolute()),
        "lora_path": str(inputs.lora_path.absolute()),
        "details": published.details,
        "verified": [asdict(v) for v in verified],
        "lora": lora_summary(inputs, published.files, verified),
    }


def lora_summary(
    inputs: PublishInputs, files: list[str], verified: list[Verified]
) -> dict[str, Any]:
    """What the LoRA is for and which file serves which tool (the response's `lora`)."""
    model = inputs.model
    usage, rules = model.usage, model.lora_rules
    diffusers_file = None
    if usage is not None:
        diffusers_file = diffusers_copy.diffusers_file(inputs.lora_name, usage.diffusers_copy)
    return {
        "file": inputs.lora_name,
        "comfyui_file": next((f for f in files if f.startswith(f"{COMFY_FOLDER}/")), None),
        "diffusers_file": diffusers_file if diffusers_file in files else None,
        "base_model": usage.base_model if usage is not None else None,
        "task": usage.pipeline_tag if usage is not None else None,
        "diffusers_pipeline": usage.pipeline_class if usage is not None else None,
        "format": rules.format.name if rules is not None else None,
        "verified": [
            {"file": v.file, "modules": v.modules, "rank": v.rank, "dtype": v.dtype}
            for v in verified
        ],
    }


def record_verified(record: Callable[[LoraVerified], object]) -> OnVerified:
    """An `on_verified` that records each check as a LORA_VERIFIED fact."""
    return lambda verified: record(LoraVerified(**asdict(verified)))


class Publish(Stage):
    """Send the trained LoRA to the requested destination."""

    name = "publish"
    status = Status.UPLOADING

    def __init__(self, spec: PublishSpec, options: PublishOptions | None = None) -> None:
        self.spec = spec
        self.options = options or PublishOptions()

    def run(self, ctx: StageContext) -> dict[str, Any]:
        inputs = PublishInputs(
            job_id=ctx.job_id,
            job_dir=ctx.job_dir,
            spec=self.spec,
            training=ctx.results["training"],
            dataset_report=dataset_report(ctx.results),
        )
        ctx.progress(message=f"Uploading the LoRA ({self.spec.destination.method})")
        return publish(inputs, self.options, record_verified(ctx.record))

    def verify(self, ctx: StageContext, result: Mapping[str, Any]) -> bool:
        """Remote copies cannot be checked cheaply; a local copy must still be there."""
        if result.get("method") == "local":
            folder = result.get("details", {}).get("folder")
            return bool(folder) and Path(str(folder)).is_dir()
        return True


def dataset_report(results: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The dataset stage's report: its `report` entry when it nests one, else its result."""
    dataset = results.get("dataset") or {}
    report = dataset.get("report")
    return dict(report) if isinstance(report, Mapping) else dict(dataset)
