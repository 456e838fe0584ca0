"""The access stage's plain inputs: what to check, with the credentials and client settings the
later stages will use (the pipeline builds them from the job's plan)."""

from __future__ import annotations

from dataclasses import dataclass, field

from pydantic import SecretStr

from stages.addresses import AddressPolicy
from stages.captions.gemini import GeminiSettings
from stages.dataset.inputs import DatasetSource
from stages.model_info import ModelInfo
from stages.publish.inputs import S3Destination
from stages.publish.s3 import S3Tuning


@dataclass(frozen=True)
class Bounds:
    """How long a check may try. A transient failure (network, 429, 5xx) is tried `attempts`
    times, pausing `waits_s` between tries, never past `retry_s` from the check's start; a
    request waits at most `request_timeout_s`. `deadline_s` caps the whole stage: a check still
    running then (the Hub client has no timeout of its own) counts as not answered."""

    attempts: int = 3
    waits_s: tuple[float, ...] = (1.0, 3.0)
    retry_s: float = 12.0
    request_timeout_s: float = 10.0
    deadline_s: float = 30.0


@dataclass(frozen=True)
class HubTarget:
    """Hub output: the token must be able to write `repo_id` (None: the default repo id)."""

    token: SecretStr = field(repr=False)
    repo_id: str | None
    private: bool
    model_type: str  # for the default repo id
    job_id: str
    endpoint: str
    auto: bool = False  # output.method auto: a refused token would send the LoRA elsewhere


@dataclass(frozen=True)
class S3Target:
    """S3 output: the credentials must be able to write under `<key_prefix>/<job_id>/`."""

    spec: S3Destination
    job_id: str
    tuning: S3Tuning = field(default_factory=S3Tuning)
    addresses: AddressPolicy = field(default_factory=AddressPolicy)


@dataclass(frozen=True)
class GeminiTarget:
    """Videos will be captioned: Gemini must take the key (`settings` as the captions stage
    uses them: its model and base URL)."""

    api_key: SecretStr = field(repr=False)
    settings: GeminiSettings = field(default_factory=GeminiSettings)


@dataclass(frozen=True)
class DatasetTarget:
    """The dataset archives must answer: http(s) URLs under the worker's address policy,
    hf://datasets/ repos readable with `hub_token` at `hub_endpoint`."""

    sources: tuple[DatasetSource, ...]
    hub_endpoint: str = "https://huggingface.co"
    hub_token: SecretStr | None = field(default=None, repr=False)
    addresses: AddressPolicy = field(default_factory=AddressPolicy)


@dataclass(frozen=True)
class AccessInputs:
    hub: HubTarget | None = None
    s3: S3Target | None = None
    gemini: GeminiTarget | None = None
    dataset: DatasetTarget | None = None
    # The model, so a worker that cannot train it refuses before contacting anything.
    model: ModelInfo | None = None
    secrets: tuple[str, ...] = field(default=(), repr=False)  # scrubbed from every message
    bounds: Bounds = field(default_factory=Bounds)
