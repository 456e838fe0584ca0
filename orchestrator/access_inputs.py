"""The access stage's inputs from a job's plan: what the later stages will reach, with the same
credentials, endpoints and client settings they will use."""

from __future__ import annotations

from orchestrator.plan import JobPlan
from stages.access.inputs import AccessInputs, DatasetTarget, GeminiTarget, HubTarget, S3Target
from stages.captions.gemini import GeminiSettings
from stages.captions.stage import Captions
from stages.contract import Stage
from stages.publish.s3 import S3Tuning
from stages.publish.stage import PublishOptions


def access_inputs(
    plan: JobPlan, publish: PublishOptions, gemini: GeminiSettings | None
) -> AccessInputs:
    """`publish`: the publish stage's options (its Hub endpoint, S3 tuning, address policy);
    `gemini`: the captions stage's Gemini settings when it will caption videos with Gemini."""
    destination = plan.publish.destination
    hf, s3 = destination.huggingface, destination.s3
    hub = None
    if destination.method in ("huggingface", "auto") and hf is not None:
        hub = HubTarget(
            token=hf.token,
            repo_id=hf.repo_id,
            private=hf.private,
            model_type=plan.entry.model_type,
            job_id=plan.job_id,
            endpoint=publish.hub_endpoint,
            auto=destination.method == "auto",
        )
    s3_target = None
    if destination.method == "s3" and s3 is not None:
        s3_target = S3Target(
            spec=s3,
            job_id=plan.job_id,
            tuning=publish.s3_tuning or S3Tuning(),
            addresses=publish.addresses,
        )
    captions = plan.captions
    key = captions.gemini_api_key if captions is not None and captions.videos else None
    dataset = plan.dataset
    return AccessInputs(
        hub=hub,
        s3=s3_target,
        gemini=GeminiTarget(key, gemini) if key is not None and gemini is not None else None,
        dataset=DatasetTarget(
            sources=dataset.sources,
            hub_endpoint=dataset.hub_endpoint,
            hub_token=dataset.hub_token,
            addresses=dataset.download_limits.addresses,
        ),
        model=plan.entry.info,
        secrets=plan.secrets,
    )


def gemini_settings(captions: Stage | None) -> GeminiSettings | None:
    """The Gemini settings of a captions stage that will caption videos with Gemini (a stage a
    test swapped in, without Gemini, has none: nothing to check)."""
    if isinstance(captions, Captions) and captions.inputs.videos:
        return captions.gemini
    return None
