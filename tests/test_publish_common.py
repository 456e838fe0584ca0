"""Publish: the job layout helpers shared by the publish tests, the response shapes, the
local-folder method and the Publish stage itself."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from orchestrator.plan import publish_spec
from orchestrator.request import parse_request
from orchestrator.response import (
    INSTRUCTIONS,
    build_response,
    complete_event_data,
    failed_response,
    response_from_results,
)
from stages.contract import StageContext
from stages.errors import StageFailed
from stages.publish.common import PublishInputs, collect_artifacts
from stages.publish.stage import Publish, PublishOptions, publish
from tests.helpers import Recorded, stage_context

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
SEED_OUTPUT_KEYS = {
    "download_url",
    "safetensors_url",
    "repo_url",
    "download_method",
    "expires_in_days",
    "note",
}


def lora_bytes(epoch: int, size: int = 4096) -> bytes:
    return hashlib.sha256(f"lora-{epoch}".encode()).digest() * (size // 32)


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
    root: Path,
    output: Mapping[str, Any],
    *,
    model_type: str = "qwen",
    epochs: int = 2,
    size: int = 4096,
    **extra: Any,
) -> PublishInputs:
    """A job folder as the training stage leaves it: a run with epochN/ saves, the TOMLs."""
    request = make_request(output, model_type, **extra)
    lora_file = request.model.lora_file
    job_dir = root / "jobs" / JOB_ID
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


# -- tests ----------------------------------------------------------------------------------------


def test_artifacts_final_and_all_epochs(tmp_path: Path) -> None:
    final = make_job(tmp_path / "a", {"method": "local", "local": {"path": "/x"}})
    names = [a.name for a in collect_artifacts(final)]
    assert names == [
        "adapter_model.safetensors",
        "adapter_config.json",
        "config/qwen.toml",
        "config/dataset.toml",
    ]
    every = make_job(
        tmp_path / "b", {"method": "local", "local": {"path": "/x"}}, upload_epochs="all"
    )
    names = [a.name for a in collect_artifacts(every)]
    assert "epochs/epoch1/adapter_model.safetensors" in names
    assert "epochs/epoch2/adapter_config.json" in names
    toml = next(a for a in collect_artifacts(every) if a.name == "config/qwen.toml")
    assert toml.data is not None
    assert b"***" in toml.data
    assert_no_canary(toml.data)


def test_missing_lora_is_a_clear_error(tmp_path: Path) -> None:
    inputs = make_job(tmp_path, {"method": "local", "local": {"path": str(tmp_path / "out")}})
    inputs.lora_path.unlink()
    with pytest.raises(StageFailed, match="is missing; nothing to publish"):
        publish(inputs)


def test_local_copy_is_atomic_and_replaces(tmp_path: Path) -> None:
    dest = tmp_path / "results"
    inputs = make_job(tmp_path, {"method": "local", "local": {"path": str(dest)}})
    result = publish(inputs)
    target = dest / JOB_ID
    lora = target / "adapter_model.safetensors"
    assert lora.read_bytes() == lora_bytes(2)
    assert (target / "config" / "qwen.toml").is_file()
    assert result["output"]["download_url"] == lora.as_uri()
    assert result["output"]["download_url"].startswith("file:///")
    assert result["output"]["download_method"] == "local"
    assert result["volume_path"] == str(inputs.job_dir)
    # A second delivery replaces the copy; no staging folder is left behind.
    inputs.lora_path.write_bytes(b"newer")
    publish(inputs)
    assert lora.read_bytes() == b"newer"
    assert sorted(p.name for p in dest.iterdir()) == [JOB_ID]


def test_a_copy_cut_short_by_a_killed_worker_is_cleared_next_time(tmp_path: Path) -> None:
    dest = tmp_path / "results"
    inputs = make_job(tmp_path, {"method": "local", "local": {"path": str(dest)}})
    (dest / f".{JOB_ID}.abc123_9" / "config").mkdir(parents=True)  # a killed attempt's staging
    (dest / f".{JOB_ID}.old.def456xy").mkdir()
    (dest / f".{JOB_ID}.b.staging1").mkdir()  # job "<id>.b"'s staging: not ours
    (dest / ".other-job.xyz12345").mkdir()
    publish(inputs)
    assert sorted(p.name for p in dest.iterdir()) == sorted(
        [f".{JOB_ID}.b.staging1", ".other-job.xyz12345", JOB_ID]
    )


def _ctx(inputs: PublishInputs, results: dict[str, dict[str, Any]]) -> StageContext:
    return stage_context(
        inputs.job_dir,
        Recorded().record,
        job_id=inputs.job_id,
        results=results,
    )


def test_stage_and_response_shape(tmp_path: Path) -> None:
    dest = tmp_path / "results"
    inputs = make_job(tmp_path, {"method": "local", "local": {"path": str(dest)}})
    stage = Publish(inputs.spec, PublishOptions())
    results: dict[str, dict[str, Any]] = {
        "dataset": {"report": dict(inputs.dataset_report)},
        "training": dict(inputs.training),
    }
    ctx = _ctx(inputs, results)
    published = stage.run(ctx)
    assert stage.name == "publish"
    assert stage.status.value == "UPLOADING"
    assert stage.verify(ctx, published)
    json.dumps(published)  # JSON-ready: the runner records it

    response = response_from_results(JOB_ID, "qwen", {**results, "publish": published})
    assert set(response) == SEED_RESPONSE_KEYS | {"files", "volume_path", "mirror"}
    assert set(response["output"]) == SEED_OUTPUT_KEYS
    assert response["status"] == "success"
    assert response["job_id"] == JOB_ID
    assert response["model_type"] == "qwen"
    assert response["model_name"] == "Qwen Image"
    assert response["epochs_completed"] == 2
    assert response["latest_epoch"] == "epoch2"
    assert response["output"]["expires_in_days"] is None
    assert response["volume_path"] == str(inputs.job_dir)
    assert response["mirror"] is None
    assert "adapter_model.safetensors" in response["files"]
    mirrored = build_response(
        job_id=JOB_ID,
        model_type="qwen",
        training=results["training"],
        published=published,
        mirror={"cursor": 7, "ok": True},
    )
    assert mirrored["mirror"] == {"cursor": 7, "ok": True}

    data = complete_event_data(published)
    assert set(data) == {
        "message",
        "repository_url",
        "direct_download_url",
        "instructions",
        "files_uploaded",
        "safetensors_files",
    }
    assert data["message"] == "Training completed successfully!"
    assert data["instructions"] == INSTRUCTIONS
    assert data["direct_download_url"] == response["output"]["download_url"]
    assert data["safetensors_files"] == ["adapter_model.safetensors"]
    assert failed_response("boom") == {"status": "failed", "error": "boom"}
    assert_no_canary(json.dumps(response), json.dumps(data), json.dumps(published))


def test_local_verify_notices_a_removed_copy(tmp_path: Path) -> None:
    dest = tmp_path / "results"
    inputs = make_job(tmp_path, {"method": "local", "local": {"path": str(dest)}})
    ctx = _ctx(inputs, {"training": dict(inputs.training)})
    stage = Publish(inputs.spec)
    result = stage.run(ctx)
    assert stage.verify(ctx, result)
    shutil.rmtree(dest / JOB_ID)
    assert not stage.verify(ctx, result)
