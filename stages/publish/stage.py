"""The publish stage and the job's response.

`Publish` (status UPLOADING) sends the trained LoRA where `output.method` says: Hugging Face,
S3, a local folder, or `auto` (Hugging Face when a token is given, then temporary file hosts).
Its result holds the seed's `output` object plus the file list and the volume path, and
`build_response` turns it into exactly the seed's success shape, with `files`, `volume_path`
and `mirror` added. `complete_event_data` is the seed's COMPLETE update `data`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from events.vocabulary import Status
from orchestrator.catalogue import get_model
from orchestrator.settings import HF_ENDPOINT
from stages.contract import Stage, StageContext
from stages.publish.common import Published, PublishInputs, RetryPolicy, fail
from stages.publish.fallback import AutoOptions, HostUrls, publish_auto
from stages.publish.hub import publish_hf
from stages.publish.local import publish_local
from stages.publish.s3 import S3Tuning, publish_s3

COMPLETE_MESSAGE = "Training completed successfully!"
INSTRUCTIONS = "Use the direct_download_url to download your trained LoRA safetensors file."


@dataclass
class PublishOptions:
    """Where the non-request settings come from: the worker's settings, or a test's servers."""

    hub_endpoint: str = HF_ENDPOINT
    hosts: HostUrls = field(default_factory=HostUrls)
    local_folder: Path | None = None  # used when output.local.path is absent
    hf_policy: RetryPolicy | None = None
    s3_tuning: S3Tuning | None = None
    sleep: Callable[[float], None] = time.sleep


def publish(inputs: PublishInputs, options: PublishOptions | None = None) -> dict[str, Any]:
    """Publish by `output.method`; return the stage result (JSON-ready)."""
    options = options or PublishOptions()
    method = str(inputs.request.output.method)
    published: Published
    if method == "huggingface":
        published = publish_hf(
            inputs, endpoint=options.hub_endpoint, policy=options.hf_policy, sleep=options.sleep
        )
    elif method == "s3":
        published = publish_s3(inputs, tuning=options.s3_tuning, sleep=options.sleep)
    elif method == "local":
        spec = inputs.request.output.local
        path = spec.path if spec is not None and spec.path else options.local_folder
        if path is None:
            raise fail(inputs, 'output.local.path is required when output.method is "local"')
        published = publish_local(inputs, Path(str(path)))
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
    }


class Publish(Stage):
    """Send the trained LoRA to the requested destination."""

    name = "publish"
    status = Status.UPLOADING

    def __init__(self, options: PublishOptions | None = None) -> None:
        self.options = options or PublishOptions()

    def run(self, ctx: StageContext) -> dict[str, Any]:
        inputs = PublishInputs(
            job_id=ctx.job_id,
            job_dir=ctx.job_dir,
            request=ctx.request,
            training=ctx.results["training"],
            dataset_report=_dataset_report(ctx.results),
        )
        ctx.progress(message=f"Uploading the LoRA ({inputs.request.output.method})")
        return publish(inputs, self.options)

    def verify(self, ctx: StageContext, result: Mapping[str, Any]) -> bool:
        """Remote copies cannot be checked cheaply; a local copy must still be there."""
        if result.get("method") == "local":
            folder = result.get("details", {}).get("folder")
            return bool(folder) and Path(str(folder)).is_dir()
        return True


def _dataset_report(results: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The dataset stage's report: its `report` entry when it nests one, else its result."""
    dataset = results.get("dataset") or {}
    report = dataset.get("report")
    return dict(report) if isinstance(report, Mapping) else dict(dataset)


def build_response(
    *,
    job_id: str,
    model_type: str,
    training: Mapping[str, Any],
    published: Mapping[str, Any],
    mirror: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The seed's success response, field for field, plus `files`, `volume_path`, `mirror`."""
    final_save = training.get("final_save")
    return {
        "status": "success",
        "job_id": job_id,
        "model_type": model_type,
        "model_name": get_model(model_type).display_name,
        "epochs_completed": training.get("epochs_completed"),
        "latest_epoch": final_save,
        "output": dict(published["output"]),
        "files": list(published.get("files", [])),
        "volume_path": published.get("volume_path"),
        "mirror": dict(mirror) if mirror is not None else None,
    }


def response_from_results(
    job_id: str,
    model_type: str,
    results: Mapping[str, Mapping[str, Any]],
    mirror: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """`build_response` from the runner's stage results (training and publish)."""
    return build_response(
        job_id=job_id,
        model_type=model_type,
        training=results["training"],
        published=results["publish"],
        mirror=mirror,
    )


def failed_response(error: str) -> dict[str, Any]:
    return {"status": "failed", "error": error}


def complete_event_data(published: Mapping[str, Any]) -> dict[str, Any]:
    """The seed's COMPLETE update `data`."""
    output = published["output"]
    return {
        "message": COMPLETE_MESSAGE,
        "repository_url": output["repo_url"],
        "direct_download_url": output["download_url"],
        "instructions": INSTRUCTIONS,
        "files_uploaded": list(published.get("files", [])),
        "safetensors_files": list(published.get("safetensors_files", [])),
    }
