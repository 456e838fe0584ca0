"""Publish: the job layout helpers shared by the publish tests, the response shapes, the
local-folder method and the Publish stage itself."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

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
from tests.support.helpers import Recorded, stage_context
from tests.support.publish_job import (
    ADDED_RESPONSE_KEYS,
    JOB_ID,
    SEED_OUTPUT_KEYS,
    SEED_RESPONSE_KEYS,
    assert_no_canary,
    is_published_lora,
    lora_bytes,
    make_job,
)

# -- tests ----------------------------------------------------------------------------------------


def test_artifacts_final_and_all_epochs(tmp_path: Path) -> None:
    final = make_job(tmp_path / "a", {"method": "local", "local": {"path": "/x"}})
    names = [a.name for a in collect_artifacts(final)]
    assert names == [
        "adapter_model.safetensors",
        f"comfyui/{JOB_ID}-qwen-epoch2.safetensors",  # the job id, the model, the save
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
    assert is_published_lora(lora.read_bytes(), 2)
    assert (target / "config" / "qwen.toml").is_file()
    assert result["output"]["download_url"] == lora.as_uri()
    assert result["output"]["download_url"].startswith("file:///")
    assert result["output"]["download_method"] == "local"
    assert result["volume_path"] == str(inputs.job_dir)
    # A second delivery replaces the copy; no staging folder is left behind.
    inputs.lora_path.write_bytes(lora_bytes(3))
    publish(inputs)
    assert is_published_lora(lora.read_bytes(), 3)
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
    assert set(response) == SEED_RESPONSE_KEYS | ADDED_RESPONSE_KEYS
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
    comfy = f"comfyui/{JOB_ID}-qwen-epoch2.safetensors"
    assert response["lora"] == {
        "file": "adapter_model.safetensors",
        "comfyui_file": comfy,
        "diffusers_file": "adapter_model.safetensors",
        "base_model": "Qwen/Qwen-Image",
        "task": "text-to-image",
        "diffusers_pipeline": "QwenImagePipeline",
        "format": "peft",
        "verified": [],  # publish() without the base model's folder checks nothing
    }
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
    assert data["safetensors_files"] == ["adapter_model.safetensors", comfy]
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


def test_local_publishing_never_replaces_a_jobs_folder(tmp_path: Path) -> None:
    """Whatever reached the publish step (an older request, another worker's settings): the
    copy refuses a target inside the working folder, and one that holds an event log."""
    jobs = tmp_path / "root" / "jobs"
    inside = make_job(tmp_path, {"method": "local", "local": {"path": str(jobs)}})
    events = inside.job_dir / "events.jsonl"
    events.write_text("{}\n")
    with pytest.raises(StageFailed, match="inside the service's working folder"):
        publish(inside)
    assert events.read_text() == "{}\n"

    elsewhere = tmp_path / "copies"
    (elsewhere / JOB_ID).mkdir(parents=True)
    (elsewhere / JOB_ID / "events.jsonl").write_text("a job\n")  # say, a restored backup
    inputs = make_job(tmp_path / "second", {"method": "local", "local": {"path": str(elsewhere)}})
    with pytest.raises(StageFailed, match="holds a job's event log; not replaced"):
        publish(inputs)
    assert (elsewhere / JOB_ID / "events.jsonl").read_text() == "a job\n"
