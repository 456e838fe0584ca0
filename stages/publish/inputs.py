"""The publish stage's plain inputs: where the LoRA goes, and what the model card says.

Built once per job by the pipeline from the request's `output` section (secrets stay
`SecretStr`; `secrets` lists every secret of the job so any message can be scrubbed).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import SecretStr

from stages.model_info import ModelInfo

UploadEpochs = Literal["final", "all"]


@dataclass(frozen=True)
class HubDestination:
    token: SecretStr  # write access
    repo_id: str | None = None  # default: <user>/<model_type>-lora-<short job id>
    private: bool = True


@dataclass(frozen=True)
class S3Destination:
    bucket: str
    access_key: SecretStr
    secret_key: SecretStr
    endpoint_url: str | None = None  # an S3-compatible store (R2, MinIO); None: AWS
    region: str | None = None
    key_prefix: str = "diffusion-pipe-outputs"


@dataclass(frozen=True)
class Destination:
    method: str  # huggingface | s3 | local | auto
    huggingface: HubDestination | None = None  # a token was given (auto tries it first)
    s3: S3Destination | None = None
    local_path: Path | None = None
    upload_epochs: UploadEpochs = "final"


@dataclass(frozen=True)
class PublishSpec:
    """What one job publishes, and to where."""

    model: ModelInfo
    destination: Destination
    trigger_word: str | None = None
    # The training values shown in the model card: effective, credentials masked.
    card_training: Mapping[str, object] = field(default_factory=dict)
    secrets: tuple[str, ...] = field(default=(), repr=False)  # scrubbed from every message
