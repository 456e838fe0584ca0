"""The secrets in a request: finding every one (to register with the redactor), and the
request as it may be shown (the CLI, `request.json` on the volume, a repr).

Besides the `SecretStr` fields: string values under credential-like passthrough keys (e.g.
`training.monitoring.wandb_api_key`) and the userinfo and query of dataset URLs (a presigned
URL's signature is a credential). The masking itself is `events.redact`'s.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast

from pydantic import BaseModel, SecretStr

from events.redact import MASK, Redactor, mask_keys, sensitive_strings, url_secrets
from orchestrator.request.effective import effective_training
from stages.training.owned_keys import TABLES

if TYPE_CHECKING:
    from orchestrator.request.schema import TrainingRequest


def request_secrets(request: TrainingRequest) -> list[str]:
    """Every secret's plain value in a parsed request, for log redaction."""
    found: list[str] = []
    hf, s3 = request.output.huggingface, request.output.s3
    for secret in (
        request.api_keys.huggingface_token,
        request.api_keys.gemini_api_key,
        hf.token if hf else None,
        s3.access_key if s3 else None,
        s3.secret_key if s3 else None,
    ):
        if secret is not None:
            found.append(secret.get_secret_value())
    found += sensitive_strings(request.training.model_extra or {})
    for table in TABLES:
        found += sensitive_strings(getattr(request.training, table) or {})
    for url in (request.dataset.images_url, request.dataset.videos_url):
        found += url_secrets(url)
    return list(dict.fromkeys(s for s in found if s))


def raw_secrets(data: Mapping[Any, Any]) -> list[str]:
    """Secrets in raw (maybe invalid) input, to scrub from error text: strings under
    credential-like keys anywhere, and the userinfo and query of the dataset URLs."""
    found = sensitive_strings(data)
    dataset = data.get("dataset")
    if isinstance(dataset, Mapping):
        for key in ("images_url", "videos_url"):
            url = dataset.get(key)
            if isinstance(url, str):
                found += url_secrets(url)
    return found


def masked_request(
    request: TrainingRequest, training: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The normalised request, JSON-ready, training defaults resolved, secrets as "***"
    (also a secret's value pasted into another field, a trigger word say)."""
    # JSON mode masks the dataset URLs (see DatasetSpec._json_url).
    dataset = request.dataset.model_dump(mode="json", exclude_none=True)
    shown = {
        "model_type": request.model_type,
        "dataset": dataset,
        "training": mask_keys(training if training is not None else effective_training(request)),
        "api_keys": _masked_dump(request.api_keys),
        "output": _masked_dump(request.output),
        "resume_from": request.resume_from,
        "resume_from_lora": request.resume_from_lora,
    }
    redactor = Redactor(request.secret_values(), shapes=False)
    return cast("dict[str, Any]", redactor.data(shown, sort_keys=False, by_key=False))


def _masked_dump(model: BaseModel) -> dict[str, Any]:
    def walk(value: Any) -> Any:
        if isinstance(value, SecretStr):
            return MASK
        if isinstance(value, dict):
            return {k: walk(v) for k, v in value.items() if v is not None}
        return value

    result: dict[str, Any] = walk(model.model_dump(mode="python"))
    return result
