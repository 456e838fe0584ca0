"""The training request: the seed README's input JSON as pydantic models, plus the rules between
fields, collected into one readable error.

Entry point: `parse_request(raw)`. It accepts a RunPod body `{"input": {...}}` or the bare input,
and either returns a `TrainingRequest` or raises one `RequestError` listing every problem as
(dotted field path, message). Secrets are `SecretStr` everywhere and no error text, repr or
`masked()` output contains one.

Training values left out (or null) mean "the model's default from the catalogue"; the JSON Schema
states the seed README's default for each. Keys in `training` that the schema does not name are
passed to diffusion-pipe's TOML as top-level keys, and the `model` / `adapter` / `optimizer` dicts
are merged into those TOML tables, except keys the service owns (paths, types), which are refused.
"""

from __future__ import annotations

import difflib
import json
import math
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Annotated, Any, ClassVar, Literal, cast
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    SerializerFunctionWrapHandler,
    StringConstraints,
    ValidationError,
    field_serializer,
    model_serializer,
    model_validator,
)
from pydantic_core import PydanticCustomError

from events.redact import MASK, is_sensitive_key
from orchestrator.catalogue import (
    ALL_MODEL_TYPES,
    BASE_DEFAULTS,
    CATALOGUE,
    MODEL_TYPES,
    ModelEntry,
    get_model,
)

Problem = tuple[str, str]

DatasetType = Literal["images", "videos", "both", "precaptioned"]
OutputMethod = Literal["huggingface", "s3", "auto", "local"]
DATASET_TYPES: tuple[str, ...] = ("images", "videos", "both", "precaptioned")
OUTPUT_METHODS: tuple[str, ...] = ("huggingface", "s3", "auto", "local")

_MIN_SECRET_LEN = 4  # as events.redact: scrubbing shorter strings would mangle ordinary words
_MAX_ECHO = 60  # longest user-supplied text (a key name, a model_type) echoed in an error
_MAX_TOML_DEPTH = 8
_INT64 = 2**63


class RequestError(ValueError):
    """A request that cannot be run; `problems` lists (field path, message) pairs.

    `str(err)` is one block: `invalid request (N problems):` and one `  - path: message` line per
    problem. Messages never contain secret values: known secrets are scrubbed on construction.
    """

    def __init__(self, problems: Sequence[Problem], secrets: Iterable[str] = ()) -> None:
        scrub = sorted({s for s in secrets if len(s) >= _MIN_SECRET_LEN}, key=len, reverse=True)
        cleaned: list[Problem] = []
        for path, message in problems:
            item = (_scrub(path, scrub), _scrub(message, scrub))
            if item not in cleaned:
                cleaned.append(item)
        self.problems: list[Problem] = cleaned
        super().__init__(self._render())

    def _render(self) -> str:
        n = len(self.problems)
        lines = [f"invalid request ({n} problem{'' if n == 1 else 's'}):"]
        lines += [
            f"  - {path}: {message}" if path else f"  - {message}"
            for path, message in self.problems
        ]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self._render()


def _scrub(text: str, secrets: Sequence[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, MASK)
    return text


def _scrub_all(value: Any, secrets: Sequence[str]) -> Any:
    if isinstance(value, str):
        return _scrub(value, secrets)
    if isinstance(value, dict):
        return {k: _scrub_all(v, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrub_all(v, secrets) for v in value]
    return value


def _custom(message: str) -> PydanticCustomError:
    # The message travels in the context so braces in it are never read as a format template.
    return PydanticCustomError("request", "{message}", {"message": message})


def _echo(value: object) -> str:
    """A short, single-line rendering of user input for an error message."""
    text = value if isinstance(value, str) else repr(value)
    text = text.encode("unicode_escape").decode("ascii")
    return text if len(text) <= _MAX_ECHO else text[: _MAX_ECHO - 3] + "..."


# --- field types -------------------------------------------------------------------------------


def _check_secret(value: SecretStr) -> SecretStr:
    plain = value.get_secret_value().strip()
    if not plain:
        raise _custom("must not be empty")
    if any(c.isspace() for c in plain):  # no token has inner whitespace; a newline could inject
        raise _custom("must not contain whitespace")
    return SecretStr(plain)


Secret = Annotated[SecretStr, AfterValidator(_check_secret)]


def _check_dataset_url(value: str) -> str:
    value = value.strip()
    if value.startswith("hf://"):
        rest = value.removeprefix("hf://")
        if not rest.startswith("datasets/") or len(rest.strip("/")) <= len("datasets"):
            raise _custom('hf:// URLs must name a dataset repo: "hf://datasets/<owner>/<name>"')
        return value
    _check_http_url(value)
    return value


def _check_http_url(value: str) -> str:
    # Only the scheme is ever echoed: a URL's userinfo or query may carry a credential.
    value = value.strip()
    try:
        parts = urlsplit(value)
        host = parts.hostname
    except ValueError:
        raise _custom("is not a valid URL") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        shown = (
            f'got "{scheme}"'
            if re.fullmatch(r"[a-z][a-z0-9+.-]{0,15}", scheme)
            else "got a value without a scheme"
        )
        raise _custom(f"only http(s) and hf://datasets/ URLs are accepted, {shown}")
    if not host:
        raise _custom(f"{scheme} URL has no host")
    return value


DatasetUrl = Annotated[str, StringConstraints(max_length=8192), AfterValidator(_check_dataset_url)]
HttpUrl = Annotated[str, StringConstraints(max_length=8192), AfterValidator(_check_http_url)]


def _check_trigger_word(value: str) -> str:
    value = value.strip()
    if not value:
        raise _custom("must not be empty")
    if len(value.splitlines()) > 1:
        raise _custom("must be a single line")
    return value


TriggerWord = Annotated[str, StringConstraints(max_length=200), AfterValidator(_check_trigger_word)]
NonEmpty = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=1024)]


def _pattern(pattern: str, hint: str) -> tuple[Any, ...]:
    """Annotated metadata: strip, check against `pattern` with a readable error, and publish the
    pattern in the JSON Schema (pydantic's own pattern error just repeats the regex)."""
    compiled = re.compile(pattern)

    def check(value: str) -> str:
        if not compiled.fullmatch(value):
            raise _custom(hint)
        return value

    return (
        StringConstraints(strip_whitespace=True, max_length=1024),
        AfterValidator(check),
        Field(json_schema_extra={"pattern": f"^{pattern}$"}),
    )


_REPO_ID = r"(?:[A-Za-z0-9][A-Za-z0-9._-]{0,95}/)?[A-Za-z0-9][A-Za-z0-9._-]{0,95}"
RepoId = Annotated[
    str, *_pattern(_REPO_ID, 'must be "owner/name" or "name" (letters, digits, ".", "_", "-")')
]
_BUCKET = r"[A-Za-z0-9][A-Za-z0-9._-]{0,254}"
BucketName = Annotated[
    str, *_pattern(_BUCKET, 'must be a bucket name (letters, digits, ".", "_", "-")')
]
_OPTIMIZER = r"[A-Za-z][A-Za-z0-9_.]{0,63}"
OptimizerName = Annotated[
    str,
    *_pattern(_OPTIMIZER, "must be an optimizer name such as adamw_optimi, adamw8bit or Prodigy"),
]
Dtype = Literal["float32", "float16", "bfloat16", "float8", "float8_e4m3fn", "float8_e5m2"]
LoraDtype = Literal["float32", "float16", "bfloat16"]
# diffusion-pipe has multiple_overlapping disabled; the service cuts the clips itself
# (stages.training.clips) and gives diffusion-pipe single_beginning on the cut clips.
ClipMode = Literal["single_beginning", "single_middle", "multiple_overlapping"]
Beta = Annotated[float, Field(ge=0, lt=1)]
FrameBucket = Annotated[int, Field(ge=1, le=1024)]


def _activation_checkpointing(value: Any) -> Any:
    # One clear error instead of pydantic's per-union-member pair.
    if value is None or value is True or value is False or value == "unsloth":
        return value
    raise _custom('must be true, false or "unsloth"')


def _none_as_empty(value: Any) -> Any:
    return {} if value is None else value


class _Section(BaseModel):
    # strict: "100" is not 100 and true is not 1; a JSON client gets told, not guessed at.
    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        frozen=True,
        hide_input_in_errors=True,
    )


# --- dataset -----------------------------------------------------------------------------------


class DatasetSpec(_Section):
    """Where the training media come from and whether they still need captions."""

    type: DatasetType = Field(
        description="precaptioned: the zip holds a .txt caption per media file (recommended); "
        "images: caption images with JoyCaption; videos: caption videos with Gemini (needs "
        "api_keys.gemini_api_key); both: caption images and videos."
    )
    images_url: DatasetUrl | None = Field(
        default=None,
        description="http(s) or hf://datasets/ URL of a zip of images. Required for type images.",
    )
    videos_url: DatasetUrl | None = Field(
        default=None,
        description="http(s) or hf://datasets/ URL of a zip of videos. Required for type videos.",
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

    @field_serializer("images_url", "videos_url", when_used="json")
    def _json_url(self, value: str | None) -> str | None:
        # JSON dumps hide secrets as SecretStr does; a presigned URL's query is a credential.
        return mask_url(value) if value else value

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        # A presigned URL's query is a credential.
        for name, value in super().__repr_args__():
            yield name, mask_url(value) if name and name.endswith("_url") and value else value


# --- training ----------------------------------------------------------------------------------


def _default_text(key: str) -> str:
    value = BASE_DEFAULTS[key]
    return json.dumps(list(value) if isinstance(value, tuple) else value)


def _tf(description: str, key: str, **constraints: Any) -> Any:
    """A training field: None means "the catalogue default"; the schema shows the seed default."""
    default = BASE_DEFAULTS[key]
    return Field(
        default=None,
        description=f"{description}. Default: {_default_text(key)} (unset or null means the "
        "model's catalogue default).",
        json_schema_extra={"default": list(default) if isinstance(default, tuple) else default},
        **constraints,
    )


# Top-level diffusion-pipe keys that may pass through as they are. Known, so the typo check below
# does not mistake e.g. save_every_n_steps for a misspelt save_every_n_epochs.
KNOWN_PASSTHROUGH: frozenset[str] = frozenset(
    {
        "max_steps",
        "image_micro_batch_size_per_gpu",
        "pipeline_stages",
        "lr_scheduler",
        "force_constant_lr",
        "eval_every_n_steps",
        "eval_every_n_examples",
        "eval_micro_batch_size_per_gpu",
        "eval_image_micro_batch_size_per_gpu",
        "eval_gradient_accumulation_steps",
        "disable_block_swap_for_eval",
        "save_every_n_steps",
        "save_every_n_examples",
        "checkpoint_every_n_epochs",
        "reentrant_activation_checkpointing",
        "partition_method",
        "partition_split",
        "map_num_proc",
        "steps_per_print",
        "logging_steps",
        "x_axis_examples",
        "blocks_to_swap",
        "compile",
        "uncond_fraction",
        "huber_delta",
        "smooth_l1_beta",
        "monitoring",
    }
)

_SERVICE = "is set by the service"
_RESUME_HINT = 'to resume a failed or cancelled job send the top-level "resume": true'
# Keys the orchestrator writes itself; a user value would point diffusion-pipe at the wrong files
# or fight a documented field. Each maps to the reason given back.
OWNED_TOP_LEVEL: Mapping[str, str] = {
    "output_dir": f"{_SERVICE} (each job has its own output folder)",
    "dataset": f"{_SERVICE} (it writes the dataset config from the dataset section)",
    "eval_datasets": f"{_SERVICE} (it writes the dataset config from the dataset section)",
    "resume_from_checkpoint": f"{_SERVICE}; {_RESUME_HINT}",
    "micro_batch_size_per_gpu": "use training.batch_size",
    "resolutions": "use training.resolution",
}
_WEIGHTS = f"{_SERVICE} (it downloads the model's weights)"
OWNED_MODEL: Mapping[str, str] = {
    "type": f"{_SERVICE} from model_type",
    **{
        key: _WEIGHTS
        for key in (
            "diffusers_path",
            "ckpt_path",
            "checkpoint_path",
            "transformer_path",
            "single_file_path",
            "diffusion_model",
            "vae",
            "vae_path",
            "text_encoders",
            "text_encoder",
            "text_encoder_path",
            "llm_path",
            "clip_path",
            "t5_path",
            "llama3_path",
            "byt5_path",
            "audio_vae",
            "merge_adapters",
        )
    },
}
OWNED_ADAPTER: Mapping[str, str] = {
    "type": f"{_SERVICE} (LoRA)",
    "rank": "use training.lora_rank",
    "dtype": "use training.lora_dtype",
    "alpha": "diffusion-pipe always sets alpha equal to rank",
    "init_from_existing": f"{_SERVICE}; it would name a folder on the worker",
    "fuse_adapters": f"{_SERVICE}; it would name files on the worker",
}
OWNED_OPTIMIZER: Mapping[str, str] = {
    "type": "use training.optimizer_type",
    "lr": "use training.learning_rate",
    "betas": "use training.optimizer_betas",
    "weight_decay": "use training.optimizer_weight_decay",
    "eps": "use training.optimizer_eps",
}
_OWNED_TABLES: Mapping[str, Mapping[str, str]] = {
    "model": OWNED_MODEL,
    "adapter": OWNED_ADAPTER,
    "optimizer": OWNED_OPTIMIZER,
}
TABLES: tuple[str, ...] = ("model", "adapter", "optimizer")


class TrainingConfig(BaseModel):
    """The seed README's documented training fields; other keys pass through to the TOML."""

    model_config = ConfigDict(extra="allow", strict=True, frozen=True, hide_input_in_errors=True)

    epochs: int | None = _tf("Total training epochs", "epochs", ge=1, le=1_000_000)
    learning_rate: float | None = _tf(
        "Optimizer learning rate", "learning_rate", gt=0, allow_inf_nan=False
    )
    batch_size: int | None = _tf("Micro batch size per GPU", "batch_size", ge=1, le=4096)
    gradient_accumulation_steps: int | None = _tf(
        "Steps before weight update", "gradient_accumulation_steps", ge=1, le=4096
    )
    gradient_clipping: float | None = _tf(
        "Max gradient norm (0 disables clipping)", "gradient_clipping", ge=0, allow_inf_nan=False
    )
    warmup_steps: int | None = _tf("LR warmup steps", "warmup_steps", ge=0, le=10_000_000)
    lora_rank: int | None = _tf("Rank of the LoRA matrices", "lora_rank", ge=1, le=1024)
    lora_dtype: LoraDtype | None = _tf("LoRA weight precision", "lora_dtype")
    save_every_n_epochs: int | None = _tf(
        "Save the LoRA every N epochs", "save_every_n_epochs", ge=1, le=1_000_000
    )
    checkpoint_every_n_minutes: int | None = _tf(
        "Save the training state (for resume) every N minutes. The seed README's 120 is lowered "
        "to 20: diffusion-pipe cannot checkpoint on preemption, so up to this much work is lost",
        "checkpoint_every_n_minutes",
        ge=1,
        le=10_000_000,
    )
    save_dtype: Dtype | None = _tf("Saved model precision", "save_dtype")
    optimizer_type: OptimizerName | None = _tf("Optimizer class", "optimizer_type")
    optimizer_betas: list[Beta] | None = _tf(
        "Adam beta parameters, a pair in [0, 1)", "optimizer_betas", min_length=2, max_length=2
    )
    optimizer_weight_decay: float | None = _tf(
        "L2 regularization", "optimizer_weight_decay", ge=0, allow_inf_nan=False
    )
    optimizer_eps: float | None = _tf(
        "Numerical stability term", "optimizer_eps", gt=0, allow_inf_nan=False
    )
    video_clip_mode: ClipMode | None = _tf(
        "How to extract clips from videos: single_beginning, single_middle, or "
        "multiple_overlapping (the whole video as overlapping clips, cut by the service)",
        "video_clip_mode",
    )
    frame_buckets: list[FrameBucket] | None = _tf(
        "Frame count buckets (1 is images)", "frame_buckets", min_length=1, max_length=64
    )
    resolution: int | None = _tf("Training resolution in pixels", "resolution", ge=16, le=8192)
    activation_checkpointing: Annotated[
        bool | Literal["unsloth"] | None, BeforeValidator(_activation_checkpointing)
    ] = _tf('Save VRAM (true, false or "unsloth")', "activation_checkpointing")
    caching_batch_size: int | None = _tf(
        "Latent caching batch size", "caching_batch_size", ge=1, le=4096
    )
    eval_every_n_epochs: int | None = _tf(
        "Evaluation frequency in epochs", "eval_every_n_epochs", ge=1, le=1_000_000
    )
    eval_before_first_step: bool | None = _tf("Evaluate at the start", "eval_before_first_step")

    model: dict[str, Any] | None = Field(
        default=None,
        description="Extra keys for diffusion-pipe's [model] table (e.g. transformer_dtype). "
        "Paths and type are set by the service.",
    )
    adapter: dict[str, Any] | None = Field(
        default=None,
        description="Extra keys for diffusion-pipe's [adapter] table (e.g. dropout). Use "
        "lora_rank / lora_dtype for rank and dtype.",
    )
    optimizer: dict[str, Any] | None = Field(
        default=None,
        description="Extra keys for diffusion-pipe's [optimizer] table. Use the optimizer_* "
        "fields for type, lr, betas, weight_decay and eps.",
    )

    DOCUMENTED: ClassVar[tuple[str, ...]] = tuple(BASE_DEFAULTS)

    @model_validator(mode="after")
    def _passthrough_rules(self) -> TrainingConfig:
        # parse_request reports these one by one from the raw input; this keeps a direct
        # model_validate just as strict.
        raw = {**(self.model_extra or {})}
        raw.update({t: getattr(self, t) for t in TABLES if getattr(self, t) is not None})
        problems = training_problems(raw, prefix="training")
        if problems:
            raise PydanticCustomError(
                "request_rules", "{message}", {"message": "; ".join(map(": ".join, problems))}
            )
        return self

    @model_serializer(mode="wrap", when_used="json")
    def _json_masked(self, handler: SerializerFunctionWrapHandler) -> Any:
        # JSON dumps hide secrets as SecretStr does: passthrough credentials become "***".
        return _mask_sensitive(handler(self))

    def passthrough(self) -> dict[str, Any]:
        """The undocumented top-level keys, as given."""
        return dict(self.model_extra or {})

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        # Passthrough keys may hold credentials (monitoring.wandb_api_key); never show them.
        masked = {*TABLES, *(self.model_extra or {})}
        for name, value in super().__repr_args__():
            yield name, _mask_sensitive({name: value})[name] if name in masked else value


def _closest(key: str, candidates: Iterable[str], cutoff: float) -> str | None:
    found = difflib.get_close_matches(key, list(candidates), n=1, cutoff=cutoff)
    return found[0] if found else None


def _toml_problems(path: str, value: Any, depth: int = 0) -> list[Problem]:
    """Why `value` cannot be written to the TOML config (diffusion-pipe reads TOML)."""
    if depth > _MAX_TOML_DEPTH:
        return [(path, "nested too deeply")]
    if value is None:
        return [(path, "null cannot be written to the TOML config; leave the key out")]
    if isinstance(value, bool | str):
        return []
    if isinstance(value, int):
        return [] if -_INT64 <= value < _INT64 else [(path, "integer out of the 64-bit range")]
    if isinstance(value, float):
        return [] if math.isfinite(value) else [(path, "must be a finite number")]
    if isinstance(value, list | tuple):
        out: list[Problem] = []
        for i, item in enumerate(value):
            out += _toml_problems(f"{path}[{i}]", item, depth + 1)
        return out
    if isinstance(value, Mapping):
        out = []
        for key, item in value.items():
            if not isinstance(key, str) or not key.strip():
                out.append((path, f"keys must be non-empty strings, got {_echo(repr(key))}"))
                continue
            out += _toml_problems(f"{path}.{_echo(key)}", item, depth + 1)
        return out
    return [(path, f"unsupported value of type {type(value).__name__}")]


def _refusal(key: str, reason: str) -> str:
    return (
        f'"{key}" {reason}' if reason.startswith("is ") else f'"{key}" cannot be set here; {reason}'
    )


def training_problems(raw: Mapping[Any, Any], prefix: str = "training") -> list[Problem]:
    """Passthrough rules over a raw `training` mapping: owned keys, likely typos, TOML values."""
    problems: list[Problem] = []
    documented = set(TrainingConfig.DOCUMENTED)
    for key, value in raw.items():
        if not isinstance(key, str) or not key.strip():
            problems.append((prefix, f"keys must be non-empty strings, got {_echo(repr(key))}"))
            continue
        path = f"{prefix}.{_echo(key)}"
        if key in TABLES:
            if value is None:
                continue
            if not isinstance(value, Mapping):
                continue  # pydantic reports the type
            owned = _OWNED_TABLES[key]
            for sub, item in value.items():
                sub_path = f"{path}.{_echo(sub)}"
                if isinstance(sub, str) and sub in owned:
                    problems.append((sub_path, _refusal(sub, owned[sub])))
                elif isinstance(sub, str):
                    problems += _toml_problems(sub_path, item)
                else:
                    problems.append((path, f"keys must be strings, got {_echo(sub)}"))
            continue
        if key in documented or key in TrainingConfig.model_fields:
            continue  # pydantic validates documented fields
        if key in OWNED_TOP_LEVEL:
            problems.append((path, _refusal(key, OWNED_TOP_LEVEL[key])))
            continue
        if key in _FIELD_HOME and _FIELD_HOME[key] != "training":
            home = _FIELD_HOME[key]
            where = f"{home}.{key}" if home else key
            problems.append((path, f"unknown training key; it belongs in {where}"))
            continue
        if key not in KNOWN_PASSTHROUGH:
            # Unknown keys go to diffusion-pipe as they are, so a misspelt documented field
            # would be ignored silently. Only near-misses are refused.
            near = _closest(key, documented | KNOWN_PASSTHROUGH, cutoff=0.85)
            if near is not None:
                problems.append((path, f"unknown field; did you mean {near}?"))
                continue
        problems += _toml_problems(path, value)
    return problems


# --- api keys and output -----------------------------------------------------------------------


class ApiKeys(_Section):
    huggingface_token: Secret | None = Field(
        default=None,
        description="Hugging Face token for downloading gated models (Flux). For Flux, "
        "output.huggingface.token is used when this is absent.",
    )
    gemini_api_key: Secret | None = Field(
        default=None, description="Google Gemini API key; required to caption videos."
    )


class HuggingFaceOutput(_Section):
    token: Secret | None = Field(
        default=None, description="Hugging Face token with write access. Required."
    )
    repo_id: RepoId | None = Field(
        default=None, description='"user/repo-name"; auto-generated when absent.'
    )
    private: bool = Field(default=True, description="Make the repository private. Default: true.")


class S3Output(_Section):
    endpoint_url: HttpUrl | None = Field(
        default=None, description="S3-compatible endpoint (R2, MinIO); absent means AWS S3."
    )
    bucket: BucketName | None = Field(default=None, description="Bucket name. Required.")
    region: NonEmpty | None = Field(default=None, description='e.g. "us-east-1", "auto" for R2.')
    access_key: Secret | None = Field(default=None, description="Access key id. Required.")
    secret_key: Secret | None = Field(default=None, description="Secret access key. Required.")
    key_prefix: Annotated[str, StringConstraints(strip_whitespace=True, max_length=512)] = Field(
        default="diffusion-pipe-outputs", description="Prefix (folder) for object keys."
    )


class LocalOutput(_Section):
    path: NonEmpty | None = Field(
        default=None, description="Folder on the worker (or local machine) to copy results to."
    )


class OutputSpec(_Section):
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
        raise _custom(f"must be a string, one of: {', '.join(MODEL_TYPES)}")
    raise _custom(f'"{_echo(value)}" is not implemented; use one of: {", ".join(MODEL_TYPES)}')


class TrainingRequest(_Section):
    """One training job's input (the `input` object of a RunPod request)."""

    model_type: Annotated[str, BeforeValidator(_check_model_type)] = Field(
        description="The model to train a LoRA for. tiny is a CPU test model.",
        json_schema_extra={"enum": list(ALL_MODEL_TYPES)},
    )
    dataset: DatasetSpec
    training: Annotated[TrainingConfig, BeforeValidator(_none_as_empty)] = Field(
        default_factory=TrainingConfig,
        description="Training settings. Any key not listed is passed to diffusion-pipe's TOML.",
    )
    api_keys: Annotated[ApiKeys, BeforeValidator(_none_as_empty)] = Field(default_factory=ApiKeys)
    output: Annotated[OutputSpec, BeforeValidator(_none_as_empty)] = Field(
        default_factory=OutputSpec
    )
    resume: bool = Field(
        default=False,
        description="Resume this job from its last checkpoint (a failed or cancelled job).",
    )

    @model_validator(mode="after")
    def _cross_field_rules(self) -> TrainingRequest:
        problems = cross_field_problems(self.model_dump(mode="python"))
        if problems:
            raise PydanticCustomError(
                "request_rules", "{message}", {"message": "; ".join(map(": ".join, problems))}
            )
        return self

    @property
    def model(self) -> ModelEntry:
        return get_model(self.model_type)

    def hf_download_token(self) -> SecretStr | None:
        """The token for downloading gated weights: api_keys first, then the output token."""
        if self.api_keys.huggingface_token is not None:
            return self.api_keys.huggingface_token
        return self.output.huggingface.token if self.output.huggingface else None

    def secret_values(self) -> list[str]:
        """Every secret's plain value in this request, for log redaction.

        Besides the SecretStr fields: string values under credential-like passthrough keys
        (e.g. training.monitoring.wandb_api_key) and the userinfo and query of dataset URLs
        (a presigned URL's signature is a credential).
        """
        found: list[str] = []
        for secret in (
            self.api_keys.huggingface_token,
            self.api_keys.gemini_api_key,
            self.output.huggingface.token if self.output.huggingface else None,
            self.output.s3.access_key if self.output.s3 else None,
            self.output.s3.secret_key if self.output.s3 else None,
        ):
            if secret is not None:
                found.append(secret.get_secret_value())
        found += _sensitive_strings(self.training.model_extra or {})
        for table in TABLES:
            found += _sensitive_strings(getattr(self.training, table) or {})
        for url in (self.dataset.images_url, self.dataset.videos_url):
            found += _url_secrets(url)
        return list(dict.fromkeys(s for s in found if s))

    def masked(self) -> dict[str, Any]:
        """The normalised request, JSON-ready, training defaults resolved, secrets as "***"
        (also a secret's value pasted into another field, a trigger word say)."""
        # JSON mode masks the dataset URLs (see DatasetSpec._json_url).
        dataset = self.dataset.model_dump(mode="json", exclude_none=True)
        shown = {
            "model_type": self.model_type,
            "dataset": dataset,
            "training": _mask_sensitive(effective_training(self)),
            "api_keys": _masked_dump(self.api_keys),
            "output": _masked_dump(self.output),
            "resume": self.resume,
        }
        return cast("dict[str, Any]", _scrub_all(shown, self.secret_values()))

    def __repr__(self) -> str:
        return f"TrainingRequest({self.masked()!r})"

    __str__ = __repr__


def _masked_dump(model: BaseModel) -> dict[str, Any]:
    def walk(value: Any) -> Any:
        if isinstance(value, SecretStr):
            return MASK
        if isinstance(value, dict):
            return {k: walk(v) for k, v in value.items() if v is not None}
        return value

    result: dict[str, Any] = walk(model.model_dump(mode="python"))
    return result


def _mask_sensitive(value: Any, depth: int = 0) -> Any:
    """A copy with values under credential-like keys replaced by "***"."""
    if depth > _MAX_TOML_DEPTH + 2:
        return MASK
    if isinstance(value, Mapping):
        return {
            k: MASK
            if isinstance(k, str) and is_sensitive_key(k) and v is not None
            else _mask_sensitive(v, depth + 1)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [_mask_sensitive(v, depth + 1) for v in value]
    return value


def _sensitive_strings(value: Any, sensitive: bool = False, depth: int = 0) -> list[str]:
    if depth > _MAX_TOML_DEPTH + 2:
        return []
    if isinstance(value, str):
        return [value] if sensitive else []
    if isinstance(value, Mapping):
        out: list[str] = []
        for k, v in value.items():
            hit = sensitive or (isinstance(k, str) and is_sensitive_key(k))
            out += _sensitive_strings(v, hit, depth + 1)
        return out
    if isinstance(value, list | tuple):
        return [s for v in value for s in _sensitive_strings(v, sensitive, depth + 1)]
    return []


def _url_secrets(url: str | None) -> list[str]:
    if not url:
        return []
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return []
    out = [parts.query] if parts.query else []
    if password:
        out.append(password)
    if parts.username:
        out.append(parts.username)
    return [s for s in out if len(s) >= _MIN_SECRET_LEN]


def mask_url(url: str) -> str:
    """The URL without anything that may be a credential: userinfo and query become "***"."""
    try:
        parts = urlsplit(url)
        port = parts.port
        host = parts.hostname or ""
    except ValueError:
        return MASK
    if not (parts.username or parts.password or parts.query or parts.fragment):
        return url
    netloc = (f"{MASK}@" if parts.username or parts.password else "") + host
    if port is not None:
        netloc += f":{port}"
    query = f"?{MASK}" if parts.query else ""
    return f"{parts.scheme}://{netloc}{parts.path}{query}"


def effective_training(req: TrainingRequest) -> dict[str, Any]:
    """The training settings the job will use: the catalogue defaults for `req.model_type`,
    overlaid with the user's values and passthrough keys.

    Documented keys come first in the catalogue's order, then passthrough keys as given, then the
    `model`, `adapter` and `optimizer` tables, always present (empty when nothing was given).
    Real values, secrets included: this feeds the TOML writer; log `req.masked()` instead.
    """
    defaults = get_model(req.model_type).defaults
    result: dict[str, Any] = {k: _plain(v) for k, v in defaults.items() if k not in TABLES}
    user = req.training.model_dump(mode="python", exclude_none=True, exclude=set(TABLES))
    result.update({k: v for k, v in user.items() if k in TrainingConfig.model_fields})
    result.update(_plain(req.training.model_extra or {}))
    for table in TABLES:
        base = defaults.get(table)
        merged: dict[str, Any] = dict(_plain(base)) if isinstance(base, Mapping) else {}
        merged.update(_plain(getattr(req.training, table) or {}))
        result[table] = merged
    return result


def _plain(value: Any) -> Any:
    """A deep, JSON-ready copy: tuples become lists, mappings dicts."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


# --- cross-field rules -------------------------------------------------------------------------

_GATED_HINT: Mapping[str, str] = {
    "flux": "the FLUX.1-dev licence at https://huggingface.co/black-forest-labs/FLUX.1-dev",
}


def _section(data: Mapping[Any, Any], key: str) -> Mapping[Any, Any]:
    value = data.get(key)
    return value if isinstance(value, Mapping) else {}


def cross_field_problems(data: Mapping[Any, Any]) -> list[Problem]:
    """Rules that span fields, over raw (possibly invalid) input.

    They look only at presence and at values that are valid in themselves, so a field that is
    malformed is reported once, by its own validation, not again here.
    """
    problems: list[Problem] = []
    raw_type = data.get("model_type")
    entry = CATALOGUE.get(raw_type) if isinstance(raw_type, str) else None
    dataset = _section(data, "dataset")
    api_keys = _section(data, "api_keys")
    output = _section(data, "output")

    kind = dataset.get("type") if dataset.get("type") in DATASET_TYPES else None
    has_images = dataset.get("images_url") is not None
    has_videos = dataset.get("videos_url") is not None
    images_ok = entry is None or entry.trains_images
    videos_ok = entry is None or entry.trains_videos

    if kind == "images" and not has_images and images_ok:
        problems.append(("dataset.images_url", 'required when dataset.type is "images"'))
    if kind == "videos" and not has_videos and videos_ok:
        problems.append(("dataset.videos_url", 'required when dataset.type is "videos"'))
    if kind in ("precaptioned", "both") and not has_images and not has_videos:
        problems.append(("dataset.images_url", f"{kind} needs images_url or videos_url"))

    if entry is not None and not images_ok:
        message = f"{entry.model_type} trains on videos only"
        if kind == "images":
            problems.append(("dataset.type", message))
        elif has_images:
            problems.append(("dataset.images_url", message))
    if entry is not None and not videos_ok:
        message = f"{entry.display_name} trains on images only"
        if has_videos:
            problems.append(("dataset.videos_url", message))
        elif kind == "videos":
            problems.append(("dataset.type", message))

    captions_videos = kind == "videos" or (kind == "both" and has_videos)
    if captions_videos and videos_ok and api_keys.get("gemini_api_key") is None:
        problems.append(
            (
                "api_keys.gemini_api_key",
                'required to caption videos (dataset.type "videos" or "both" with videos_url)',
            )
        )

    hf_output = _section(output, "huggingface")
    if (
        entry is not None
        and entry.gated
        and api_keys.get("huggingface_token") is None
        and hf_output.get("token") is None  # the output token may download too
    ):
        hint = _GATED_HINT.get(entry.model_type, f"the {entry.display_name} licence")
        problems.append(
            (
                "api_keys.huggingface_token",
                f"{entry.display_name} is a gated model; give a Hugging Face token whose "
                f"account accepted {hint}",
            )
        )

    method = output.get("method", "auto")
    if method == "huggingface" and hf_output.get("token") is None:
        problems.append(
            ("output.huggingface.token", 'required when output.method is "huggingface"')
        )
    if method == "s3":
        s3 = _section(output, "s3")
        for key in ("bucket", "access_key", "secret_key"):
            if s3.get(key) is None:
                problems.append((f"output.s3.{key}", 'required when output.method is "s3"'))
    if method == "local" and _section(output, "local").get("path") is None:
        problems.append(("output.local.path", 'required when output.method is "local"'))
    return problems


# --- parsing -----------------------------------------------------------------------------------

# Which model each section's keys belong to, for "did you mean" on unknown keys.
_SECTIONS: Mapping[tuple[str, ...], type[BaseModel]] = {
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
_FIELD_HOME: Mapping[str, str] = {
    name: ".".join(loc)
    for loc, model in reversed(list(_SECTIONS.items()))
    for name in model.model_fields
}


def _path(loc: Sequence[int | str]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:  # a blank key is shown quoted: the path must still point somewhere
            out += ("." if out else "") + (_echo(part) if part.strip() else json.dumps(part))
    return out


def _unknown_field(loc: Sequence[int | str]) -> str:
    key = loc[-1]
    parent = tuple(str(p) for p in loc[:-1])
    if not isinstance(key, str):
        return "keys must be strings"
    model = _SECTIONS.get(parent)
    if model is not None:
        near = _closest(key, model.model_fields, cutoff=0.6)
        if near is not None:
            return f"unknown field; did you mean {near}?"
    home = _FIELD_HOME.get(key)
    if home is not None and home != ".".join(parent):
        return f"unknown field; it belongs in {home + '.' + key if home else key}"
    allowed = ", ".join(model.model_fields) if model is not None else ""
    return f"unknown field (allowed: {allowed})" if allowed else "unknown field"


def _message(error: Mapping[str, Any]) -> str:
    kind = error["type"]
    loc = error["loc"]
    if kind == "missing":
        return "required"
    if kind == "extra_forbidden":
        return _unknown_field(loc)
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return "must be a JSON object"
    if kind == "invalid_key":
        return "keys must be strings"
    msg = str(error.get("msg", "invalid value"))
    return msg.removeprefix("Value error, ")


def _pydantic_problems(err: ValidationError) -> list[Problem]:
    problems: list[Problem] = []
    for error in err.errors(include_input=False, include_url=False):
        if error["type"] == "request_rules":
            continue  # reported one by one from the raw input
        loc = list(error["loc"])
        if error["type"] == "extra_forbidden" and loc[-1] == "[key]":
            loc = loc[:-1]
        problems.append((_path(loc), _message(error)))
    return problems


def _raw_secrets(data: Mapping[Any, Any]) -> list[str]:
    """Secrets in raw (maybe invalid) input, to scrub from error text: strings under
    credential-like keys anywhere, and the userinfo and query of the dataset URLs."""
    found = _sensitive_strings(data)
    dataset = _section(data, "dataset")
    for key in ("images_url", "videos_url"):
        url = dataset.get(key)
        if isinstance(url, str):
            found += _url_secrets(url)
    return found


def parse_request(raw: Mapping[str, Any]) -> TrainingRequest:
    """Validate a RunPod body `{"input": {...}}` or a bare input; raise RequestError listing every
    problem. Keys next to `input` in a RunPod body (id, webhook, policy, ...) belong to RunPod and
    are ignored."""
    data: Any = raw
    if isinstance(raw, Mapping) and "input" in raw and "model_type" not in raw:
        data = raw["input"]
    if not isinstance(data, Mapping):
        kind = "null" if data is None else type(data).__name__
        raise RequestError([("input", f"must be a JSON object, got {kind}")])

    secrets = _raw_secrets(data)

    problems: list[Problem] = []
    request: TrainingRequest | None = None
    try:
        request = TrainingRequest.model_validate(data)
    except ValidationError as err:
        problems += _pydantic_problems(err)
    except (TypeError, ValueError, RecursionError) as err:  # defensive: never leak a crash
        problems.append(("input", f"could not be read ({type(err).__name__})"))

    training = data.get("training")
    if isinstance(training, Mapping):
        problems += training_problems(training)
    problems += cross_field_problems(data)

    if problems or request is None:
        raise RequestError(problems or [("input", "invalid request")], secrets)
    return request
