"""The seed's responses: success (with `files`, `volume_path` and `mirror` added, and `private`,
the Hub repo's real visibility, for Hub output), failure (an error string), and the COMPLETE
update's `data` (whose `instructions` say when the download needs the token); and the answer
for how a delivery ended."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from events.vocabulary import Status
from orchestrator.catalogue import get_model
from orchestrator.runner import Outcome
from stages.publish.inputs import S3Destination

COMPLETE_MESSAGE = "Training completed successfully!"
# What a RunPod stop is called: its stop channel carries only the job id, so a cancel and an
# execution timeout look the same to the worker.
STOPPED_BY_RUNPOD = "stopped by RunPod (cancel or execution timeout)"
INSTRUCTIONS = "Use the direct_download_url to download your trained LoRA safetensors file."
PRIVATE_INSTRUCTIONS = (
    "Use the direct_download_url to download your trained LoRA safetensors file. The repository "
    "is private: the download needs your Hugging Face token in an `Authorization: Bearer "
    '<token>` header (curl -L -H "Authorization: Bearer $HF_TOKEN" -o <file> <url>); without '
    "it the Hub answers 401."
)


def is_private(published: Mapping[str, Any]) -> bool | None:
    """The Hub repo's real visibility, read back when publishing (None: not a Hub repo)."""
    if published.get("method") != "huggingface":
        return None
    private = (published.get("details") or {}).get("private")
    return private if isinstance(private, bool) else None


def failed_response(error: str) -> dict[str, Any]:
    """The seed's error response: the error is always a string."""
    return {"status": "failed", "error": error}


def build_response(
    *,
    job_id: str,
    model_type: str,
    training: Mapping[str, Any],
    published: Mapping[str, Any],
    mirror: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The seed's success response, field for field, plus `files`, `volume_path`, `mirror`
    and `lora`."""
    final_save = training.get("final_save")
    hub = {"private": is_private(published)} if is_private(published) is not None else {}
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
        **hub,
        # the base model and task it is for, which file serves which tool, what was verified
        "lora": dict(published.get("lora") or {}),
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


def complete_event_data(published: Mapping[str, Any]) -> dict[str, Any]:
    """The seed's COMPLETE update `data`."""
    output = published["output"]
    return {
        "message": COMPLETE_MESSAGE,
        "repository_url": output["repo_url"],
        "direct_download_url": output["download_url"],
        "instructions": PRIVATE_INSTRUCTIONS if is_private(published) else INSTRUCTIONS,
        "files_uploaded": list(published.get("files", [])),
        "safetensors_files": list(published.get("safetensors_files", [])),
    }


def respond(
    outcome: Outcome,
    mirror_status: dict[str, Any] | None,
    s3: S3Destination | None = None,
) -> dict[str, Any]:
    """The seed's response for how this delivery ended. `s3`: the job's S3 destination, to
    presign a fresh link when a COMPLETE job is delivered again. A failure whose updates did
    not all reach the Hub says so (`mirror`); otherwise it keeps the seed's two keys."""
    answer = _respond(outcome, mirror_status, s3)
    if answer.get("status") == "failed" and mirror_status and mirror_status.get("ok") is False:
        answer["mirror"] = mirror_status
    return answer


def _respond(
    outcome: Outcome,
    mirror_status: dict[str, Any] | None,
    s3: S3Destination | None,
) -> dict[str, Any]:
    if outcome.status is Status.COMPLETE:
        recorded = dict((outcome.result or {}).get("response") or {})
        if mirror_status is not None:
            recorded["mirror"] = mirror_status
        if not recorded:
            return failed_response("the job completed but recorded no response")
        if outcome.from_log and s3 is not None:
            recorded = _with_fresh_s3_link(recorded, s3, outcome.job_id)
        return recorded
    if outcome.status is Status.INTERRUPTED and (outcome.result or {}).get("deferred"):
        # The publish met the Hub's rate limit: the LoRA is safe, the message says when and how
        # it is published.
        deferred = dict(outcome.result or {})
        answer = failed_response(
            f"the LoRA is trained but not published yet: {deferred['message']}"
        )
        answer["deferred"] = {k: deferred.get(k) for k in ("retry_at", "repo_id", "lora_path")}
        return answer
    if outcome.status is Status.INTERRUPTED:
        # The stage's own account names what a retry resumes from, read from the volume; the
        # last recorded step can be past the newest checkpoint.
        said = outcome.view.stop_message
        if said and "a retry" in said:
            return failed_response(
                f"the worker was stopped (scale-down or preemption): {said}; "
                + how_to_continue(outcome.job_id)
            )
        step = (outcome.view.progress or {}).get("step")
        where = f" at step {step}" if step else ""
        return failed_response(
            f"the worker was stopped{where} (scale-down or preemption); the last checkpoint is "
            f"kept on the volume; {how_to_continue(outcome.job_id)}"
        )
    if outcome.status is Status.CANCELLED:
        step = (outcome.view.progress or {}).get("step")
        where = f" at step {step}" if step else ""
        return failed_response(
            f"the job was {STOPPED_BY_RUNPOD}{where}; a cancelled "
            f'job cannot be retried: send a new request with "resume_from": "{outcome.job_id}" '
            "to continue its training"
        )
    return failed_response(outcome.error or f"the job ended in {outcome.status.value}")


def how_to_continue(job_id: str) -> str:
    """What a user does to resume a stopped job, within RunPod's rules and after them."""
    return (
        f"POST /retry/{job_id} resumes it from the checkpoint kept on the volume, while RunPod "
        "keeps the result (30 minutes after /run, 1 minute after /runsync); after that, send a "
        f'new request with "resume_from": "{job_id}"'
    )


def _with_fresh_s3_link(response: dict[str, Any], s3: S3Destination, job_id: str) -> dict[str, Any]:
    """The recorded S3 link has its access key id masked (the log never holds it): presign a
    new one for the same object."""
    from stages.publish.s3 import fresh_download_url  # noqa: PLC0415 - boto3 only for S3 jobs

    lora = next((f for f in response.get("files", []) if str(f).endswith(".safetensors")), None)
    if lora is None:
        return response
    url = fresh_download_url(s3, job_id, str(lora))
    output = {**response.get("output", {}), "download_url": url, "safetensors_url": url}
    return {**response, "output": output}
