"""The training request: the seed README's input JSON as pydantic models.

`TrainingRequest` is one job's input (the `input` object of a RunPod request): `dataset`,
`training` (`orchestrator.request.training`), `api_keys`, `output`, `resume_from`. Secrets are
`SecretStr` everywhere, and no repr or JSON dump shows one. Validating a request runs every rule
(`rules`, `passthrough`); `parse_request` (`parse`) runs them once, itself, from the raw input,
so each problem gets its own field path.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    Field,
    SecretStr,
    ValidationInfo,
    field_serializer,
    model_validator,
)
from pydantic_core import PydanticCustomError

from orchestrator.catalogue import ALL_MODEL_TYPES, CATALOGUE, MODEL_TYPES, ModelEntry, get_model
from orchestrator.errors import Problem
from orchestrator.request.fields import (
    BucketName,
    DatasetType,
    DatasetUrl,
    GeminiModel,
    HttpUrl,
    JobRef,
    KeyPrefix,
    NonEmpty,
    OutputMethod,
    RepoId,
    Secret,
    Section,
    TriggerWord,
    custom,
    echo,
    none_as_empty,
    shown_dataset_url,
)
from orchestrator.request.passthrough import training_problems
from orchestrator.request.rules import cross_field_problems
from orchestrator.request.secrets import masked_request, request_secrets
from orchestrator.request.training import TrainingConfig
from stages.captions.inputs import DEFAULT_GEMINI_MODEL
from stages.training.owned_keys import TABLES

# parse_request validates with this context: it runs the rules itself, from the raw input.
RULES_CHECKED_BY_CALLER = "rules_checked_by_caller"

# --- dataset -----------------------------------------------------------------------------------


class DatasetSpec(Section):
    """Where the training media come from and whether they still need captions."""

    type: DatasetType = Field(
        description="precaptioned: the zip holds a .txt caption per media file (recommended); "
        "images: caption images with JoyCaption; videos: caption videos with Gemini (needs "
        "api_keys.gemini_api_key); both: caption images and videos."
    )
    images_url: DatasetUrl | None = Field(
        default=None,
        description="http(s) or hf://datasets/ URL of a zip of images, or the zip inline as a "
        "data:application/zip;base64,... URL (a few MiB). Required for type images.",
    )
    videos_url: DatasetUrl | None = Field(
        default=None,
        description="http(s), hf://datasets/ or data: URL of a zip of videos. Required for type "
        "videos.",
    )
    trigger_word: TriggerWord | None = Field(
        default=None, description='Word prepended to every caption, e.g. "ohwx person".'
    )
    image_repeats: int = Field(
        default=1, ge=1, le=10_000, description="Times the images repeat per epoch. Default: 1."
    )
    video_repeats: int = Field(
        default=5, ge=1, le=10_000, description="Times the videos repeat per epoch. Default: 5."
    )
    gemini_model: GeminiModel = Field(
        default=DEFAULT_GEMINI_MODEL,
        description="The Gemini model that captions the videos (types videos and both), a "
        'model id such as "gemini-2.5-flash" or "gemini-2.5-pro"; a "models/" prefix is '
        "dropped. A pinned id, not a -latest alias, so captions do not change model (and "
        f"quotas) without notice. Default: {DEFAULT_GEMINI_MODEL}.",
    )

    @field_serializer("images_url", "videos_url", when_used="json")
    def _json_url(self, value: str | None) -> str | None:
        # JSON dumps hide secrets as SecretStr does; a presigned URL's query is a credential.
        return shown_dataset_url(value) if value else value

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        # A presigned URL's query is a credential.
        for name, value in super().__repr_args__():
            shown = name and name.endswith("_url") and value
            yield name, shown_dataset_url(value) if shown else value


# --- api keys and output -----------------------------------------------------------------------


class ApiKeys(Section):
    huggingface_token: Secret | None = Field(
        default=None,
        description="Hugging Face token for downloading gated models (Flux). For Flux, "
        "output.huggingface.token is used when this is absent.",
    )
    gemini_api_key: Secret | None = Field(
        default=None, description="Google Gemini API key; required to caption videos."
    )


class HuggingFaceOutput(Section):
    token: Secret | None = Field(
        default=None, description="Hugging Face token with write access. Required."
    )
    repo_id: RepoId | None = Field(
        default=None, description='"user/repo-name"; auto-generated when absent.'
    )
    private: bool = Field(default=True, description="Make the repository private. Default: true.")


class S3Output(Section):
    endpoint_url: HttpUrl | None = Field(
        default=None, description="S3-compatible endpoint (R2, MinIO); absent means AWS S3."
    )
    bucket: BucketName | None = Field(default=None, description="Bucket name. Required.")
    region: NonEmpty | None = Field(default=None, description='e.g. "us-east-1", "auto" for R2.')
    access_key: Secret | None = Field(default=None, description="Access key id. Required.")
    secret_key: Secret | None = Field(default=None, description="Secret access key. Required.")
    key_prefix: KeyPrefix = Field(
        default="diffusion-pipe-outputs", description="Prefix (folder) for object keys."
    )


class LocalOutput(Section):
    path: NonEmpty | None = Field(
        default=None,
        description="Folder on the worker (or local machine) to copy results to, as "
        "<path>/<job_id>/; absent: the results stay in the job's folder (volume_path).",
    )


class OutputSpec(Section):
    method: OutputMethod = Field(
        default="auto",
        description="huggingface (recommended), s3, local, or auto (Hugging Face if configured, "
        "else a temporary file host). Default: auto.",
    )
    huggingface: HuggingFaceOutput | None = None
    s3: S3Output | None = None
    local: LocalOutput | None = None
    upload_epochs: Literal["final", "all"] = Field(
        default="final",
        description='Our addition. "final" publishes the last saved LoRA; "all" also publishes '
        "every saved epochN/ under epochs/ (Hugging Face and local output). Default: final.",
    )


# --- the request -------------------------------------------------------------------------------


def _check_model_type(value: Any) -> Any:
    if isinstance(value, str) and value in CATALOGUE:
        return value
    if not isinstance(value, str):
        raise custom(f"must be a string, one of: {', '.join(MODEL_TYPES)}")
    raise custom(f'"{echo(value)}" is not implemented; use one of: {", ".join(MODEL_TYPES)}')


class TrainingRequest(Section):
    """One training job's input (the `input` object of a RunPod request)."""

    model_type: Annotated[str, BeforeValidator(_check_model_type)] = Field(
        description="The model to train a LoRA for. tiny is a CPU test model.",
        json_schema_extra={"enum": list(ALL_MODEL_TYPES)},
    )
    dataset: DatasetSpec
    training: Annotated[TrainingConfig, BeforeValidator(none_as_empty)] = Field(
        default_factory=TrainingConfig,
        description="Training settings. Any key not listed is passed to diffusion-pipe's TOML.",
    )
    api_keys: Annotated[ApiKeys, BeforeValidator(none_as_empty)] = Field(default_factory=ApiKeys)
    output: Annotated[OutputSpec, BeforeValidator(none_as_empty)] = Field(
        default_factory=OutputSpec
    )
    resume_from: JobRef | None = Field(
        default=None,
        description=(
            "The id of an earlier job on this volume to continue: its dataset, captions, cache "
            "and checkpoints, under this new job id (the earlier job is left as it was). For "
            "what POST /retry cannot reach: a cancelled job, or one RunPod no longer keeps."
        ),
    )
    resume_from_lora: bool = Field(
        default=False,
        description=(
            "With resume_from: start from the earlier job's newest saved LoRA with a fresh "
            "optimizer instead of its checkpoint; the dataset, GPU count and pipeline_stages "
            "may then change."
        ),
    )

    @model_validator(mode="after")
    def _rules(self, info: ValidationInfo) -> TrainingRequest:
        """Every rule between fields and over passthrough keys, so a direct `model_validate`
        is as strict as `parse_request` (which runs them once itself, from the raw input)."""
        if info.context and info.context.get(RULES_CHECKED_BY_CALLER):
            return self
        problems = request_problems(self.model_dump(mode="python"), self.training_raw())
        if problems:
            raise PydanticCustomError(
                "request_rules", "{message}", {"message": "; ".join(map(": ".join, problems))}
            )
        return self

    def training_raw(self) -> dict[str, Any]:
        """The passthrough keys and the table dicts, as given (what the passthrough rules read)."""
        raw = {**(self.training.model_extra or {})}
        tables = {t: getattr(self.training, t) for t in TABLES}
        raw.update({t: v for t, v in tables.items() if v is not None})
        return raw

    @property
    def model(self) -> ModelEntry:
        return get_model(self.model_type)

    def hf_download_token(self) -> SecretStr | None:
        """The token for downloading gated weights: api_keys first, then the output token."""
        if self.api_keys.huggingface_token is not None:
            return self.api_keys.huggingface_token
        return self.output.huggingface.token if self.output.huggingface else None

    def secret_values(self) -> list[str]:
        """Every secret's plain value in this request, for log redaction (`secrets`)."""
        return request_secrets(self)

    def masked(self, training: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The normalised request, JSON-ready, training defaults resolved (`training`, the
        effective values, when the caller has them), secrets as "***" (`secrets`)."""
        return masked_request(self, training)

    def __repr__(self) -> str:
        return f"TrainingRequest({self.masked()!r})"

    __str__ = __repr__


def request_problems(data: Mapping[Any, Any], training: Mapping[Any, Any]) -> list[Problem]:
    """The rules over a whole request: passthrough keys in `training`, then cross-field rules."""
    return training_problems(
        training, field_home=FIELD_HOME, fields=TrainingConfig.model_fields
    ) + cross_field_problems(data)


# Fields a request may no longer send, and what to do instead.
REMOVED_FIELDS: Mapping[str, str] = {
    "resume": (
        "removed: every new delivery of a stopped job resumes it (POST /retry/{id}); to "
        'continue an earlier job under a new id send "resume_from": "<its job id>"'
    ),
}
# Which model each section's keys belong to, for "did you mean" on unknown keys.
SECTIONS: Mapping[tuple[str, ...], type[BaseModel]] = {
    (): TrainingRequest,
    ("dataset",): DatasetSpec,
    ("training",): TrainingConfig,
    ("api_keys",): ApiKeys,
    ("output",): OutputSpec,
    ("output", "huggingface"): HuggingFaceOutput,
    ("output", "s3"): S3Output,
    ("output", "local"): LocalOutput,
}
# field name -> the section it belongs to ("" is the top level), for keys put in the wrong place.
FIELD_HOME: Mapping[str, str] = {
    name: ".".join(loc)
    for loc, model in reversed(list(SECTIONS.items()))
    for name in model.model_fields
}
