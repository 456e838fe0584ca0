"""The Gemini key, when videos will be captioned: one cheap authenticated call, `models.get` of
the model the captions stage will use, through the same client (`stages.captions.gemini`).

Google answers a bad key with 400 INVALID_ARGUMENT (ErrorInfo reason API_KEY_INVALID), or 403
PERMISSION_DENIED (a key reported leaked, blocked for this API, its project's API disabled);
401 has no other meaning. Those fail the job naming the field; 408/429/5xx and network errors
are transient; anything else (a model Google does not know, a region it does not serve) is a
warning, since the key itself was not refused.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import httpx
from google.genai import errors, types

from stages.access.inputs import Bounds, GeminiTarget
from stages.access.retry import Checked, Clock, Sleep, Transient, retried
from stages.captions.gemini import make_client
from stages.errors import StageFailed

FIELD = "api_keys.gemini_api_key"
KEYS_PAGE = "https://aistudio.google.com/app/apikey"
_TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})


def _network_errors() -> tuple[type[Exception], ...]:
    # The SDK talks through httpx2 when it is installed, else httpx.
    found: list[type[Exception]] = [httpx.TransportError]
    try:
        import httpx2  # noqa: PLC0415

        found.append(httpx2.TransportError)
    except ImportError:  # pragma: no cover - installed with huggingface_hub
        pass
    return tuple(found)


_NETWORK = _network_errors()


def _reason(exc: errors.APIError) -> str | None:
    """The ErrorInfo reason of Google's error body, if it carries one."""
    details: Any = exc.details
    if isinstance(details, dict):
        details = (details.get("error") or details).get("details", [])
    for item in details if isinstance(details, list) else []:
        if isinstance(item, dict) and isinstance(item.get("reason"), str):
            return str(item["reason"])
    return None


def _key_refused(exc: errors.APIError) -> bool:
    if exc.code in (401, 403):
        return True
    reason = _reason(exc) or ""
    return exc.code == 400 and (
        reason.startswith("API_KEY_") or "API key not valid" in (exc.message or "")
    )


def check_gemini(target: GeminiTarget, bounds: Bounds, *, sleep: Sleep, clock: Clock) -> Checked:
    settings = replace(
        target.settings,
        request_timeout_s=min(target.settings.request_timeout_s, bounds.request_timeout_s),
    )
    client = make_client(target.api_key.get_secret_value(), settings)
    model = settings.model
    checked = Checked(facts={"model": model})

    def call() -> types.Model | None:
        try:
            return client.models.get(model=model)
        except errors.APIError as exc:
            what = f"{exc.code} {exc.status or ''}".strip()
            if _key_refused(exc):
                why = _reason(exc) or exc.message or what
                raise StageFailed(
                    f"{FIELD}: Gemini refused this key ({what}: {why}); captioning the videos "
                    f"needs a valid key ({KEYS_PAGE})"
                ) from None
            if exc.code in _TRANSIENT_STATUS:
                raise Transient(f"Gemini answered {what}") from None
            checked.warnings.append(
                f"{FIELD}: the key was not refused, but Gemini answered {what} for the model "
                f"{model}: {str(exc.message or '')[:200]}"
            )
            return None
        except _NETWORK as exc:
            raise Transient(f"Gemini did not answer ({type(exc).__name__})") from None

    retried("gemini key", call, bounds, sleep=sleep, clock=clock)
    return checked
