"""The request's field types: what each value must look like, with errors a user can act on.

Every type here validates one value on its own (a URL, a repo id, a token); rules between fields
are in `rules`, rules over passthrough keys in `passthrough`.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
import unicodedata
from collections.abc import Iterable
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import idna
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    StringConstraints,
)
from pydantic_core import PydanticCustomError

from events.redact import mask_url
from stages.dataset import inline

MAX_ECHO = 60  # longest user-supplied text (a key name, a model_type) echoed in an error
DatasetType = Literal["images", "videos", "both", "precaptioned"]
OutputMethod = Literal["huggingface", "s3", "auto", "local"]
DATASET_TYPES: tuple[str, ...] = ("images", "videos", "both", "precaptioned")


def custom(message: str) -> PydanticCustomError:
    # The message travels in the context so braces in it are never read as a format template.
    return PydanticCustomError("request", "{message}", {"message": message})


def closest(key: str, candidates: Iterable[str], cutoff: float) -> str | None:
    """The candidate `key` was most likely meant to be, for "did you mean"."""
    found = difflib.get_close_matches(key, list(candidates), n=1, cutoff=cutoff)
    return found[0] if found else None


def echo(value: object) -> str:
    """A short, single-line rendering of user input for an error message."""
    text = value if isinstance(value, str) else repr(value)
    text = text.encode("unicode_escape").decode("ascii")
    return text if len(text) <= MAX_ECHO else text[: MAX_ECHO - 3] + "..."


def _check_secret(value: SecretStr) -> SecretStr:
    plain = value.get_secret_value().strip()
    if not plain:
        raise custom("must not be empty")
    if any(c.isspace() for c in plain):  # no token has inner whitespace; a newline could inject
        raise custom("must not contain whitespace")
    return SecretStr(plain)


Secret = Annotated[SecretStr, AfterValidator(_check_secret)]


MAX_URL = 8192  # an http(s) or hf:// URL; a data: URL has its own bound (stages.dataset.inline)


def _check_dataset_url(value: str) -> str:
    value = value.strip()
    if inline.is_data_url(value):
        try:
            inline.check(value)
        except inline.InlineError as exc:
            raise custom(str(exc)) from None
        return value
    if len(value) > MAX_URL:
        raise custom(f"is longer than {MAX_URL} characters")
    if value.startswith("hf://"):
        rest = value.removeprefix("hf://")
        if not rest.startswith("datasets/") or len(rest.strip("/")) <= len("datasets"):
            raise custom('hf:// URLs must name a dataset repo: "hf://datasets/<owner>/<name>"')
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
        raise custom("is not a valid URL") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        shown = (
            f'got "{scheme}"'
            if re.fullmatch(r"[a-z][a-z0-9+.-]{0,15}", scheme)
            else "got a value without a scheme"
        )
        raise custom(f"only http(s) and hf://datasets/ URLs are accepted, {shown}")
    if not host:
        raise custom(f"{scheme} URL has no host")
    try:
        port = parts.port  # urlsplit checks the port only when it is read
    except ValueError:
        port = -1
    if port is not None and not 1 <= port <= 65535:  # urlsplit takes 0, which no server has
        raise custom("has a port outside 1-65535")
    _check_host_name(host)
    return value


def _check_host_name(host: str) -> None:
    """A host the HTTP client will accept: an IP address, or a name whose every label is 1-63
    characters and valid IDNA (what httpx checks when it connects, too late)."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        return
    try:
        idna.encode(host.rstrip("."))
    except (idna.IDNAError, UnicodeError):
        raise custom(
            "has a host name that is not valid (empty or over-long labels, or a malformed "
            "xn-- label)"
        ) from None


def shown_dataset_url(value: str) -> str:
    """A dataset URL as it may be shown or recorded: a presigned URL's query masked, a data:
    URL's payload replaced by its size and digest."""
    return inline.shown(value) if inline.is_data_url(value) else mask_url(value)


# A dataset URL: http(s), hf://datasets/, or a small archive inline as a data: URL.
DatasetUrl = Annotated[str, AfterValidator(_check_dataset_url)]
HttpUrl = Annotated[str, StringConstraints(max_length=MAX_URL), AfterValidator(_check_http_url)]


def _has_control(value: str) -> bool:
    return any(unicodedata.category(c) == "Cc" for c in value)


def _check_trigger_word(value: str) -> str:
    value = value.strip()
    if not value:
        raise custom("must not be empty")
    if len(value.splitlines()) > 1:
        raise custom("must be a single line")
    if _has_control(value):  # a TAB, an ESC sequence or a NUL would reach every caption
        raise custom("must not contain control characters (tab, escape, NUL)")
    return value


def _check_key_prefix(value: str) -> str:
    """S3 object keys are UTF-8 paths; these would write outside the job's prefix or break it."""
    value = value.strip()
    if _has_control(value):
        raise custom("must not contain control characters (newline, NUL)")
    if value.startswith("/"):
        raise custom('must not start with "/"')
    if any(segment in (".", "..") for segment in value.split("/")):
        raise custom('must not contain "." or ".." segments')
    if len(value.encode("utf-8")) > 512:
        raise custom("must be at most 512 bytes")
    return value


def _check_repo_id(value: str) -> str:
    """The Hub's own rule (huggingface_hub's validate_repo_id): no "--" or "..", no ".git" end,
    no "-" or "." at either end of a name."""
    from huggingface_hub.errors import HFValidationError  # noqa: PLC0415
    from huggingface_hub.utils._validators import validate_repo_id  # noqa: PLC0415

    try:
        validate_repo_id(value)
    except HFValidationError as exc:
        raise custom(f"is not a valid Hub repo id: {str(exc).split(':', 1)[0]}") from None
    return value


TriggerWord = Annotated[str, StringConstraints(max_length=200), AfterValidator(_check_trigger_word)]
KeyPrefix = Annotated[str, StringConstraints(max_length=512), AfterValidator(_check_key_prefix)]
NonEmpty = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=1024)]


def _pattern(pattern: str, hint: str) -> tuple[Any, ...]:
    """Annotated metadata: strip, check against `pattern` with a readable error, and publish the
    pattern in the JSON Schema (pydantic's own pattern error just repeats the regex)."""
    compiled = re.compile(pattern)

    def check(value: str) -> str:
        if not compiled.fullmatch(value):
            raise custom(hint)
        return value

    return (
        StringConstraints(strip_whitespace=True, max_length=1024),
        AfterValidator(check),
        Field(json_schema_extra={"pattern": f"^{pattern}$"}),
    )


_REPO_ID = r"(?:[A-Za-z0-9][A-Za-z0-9._-]{0,95}/)?[A-Za-z0-9][A-Za-z0-9._-]{0,95}"
RepoId = Annotated[
    str,
    *_pattern(_REPO_ID, 'must be "owner/name" or "name" (letters, digits, ".", "_", "-")'),
    AfterValidator(_check_repo_id),
]
# A job id names a folder (events.store.validate_job_id): the same characters, no "." or "..".
_JOB_ID = r"(?!\.{1,2}$)[A-Za-z0-9._-]{1,128}"
JobRef = Annotated[
    str, *_pattern(_JOB_ID, "must be a job id (1-128 letters, digits, '-', '_' or '.')")
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
# A Gemini model id as Google names them ("gemini-2.5-flash", "gemini-2.5-flash-lite"): letters,
# digits, dots and dashes. The "models/" prefix that ListModels shows is accepted and dropped,
# since the SDK adds its own.
_GEMINI_MODEL = r"[A-Za-z][A-Za-z0-9.-]{0,62}[A-Za-z0-9]"
_GEMINI_MODEL_RE = re.compile(_GEMINI_MODEL)


def _check_gemini_model(value: str) -> str:
    model = value.strip().removeprefix("models/")
    if not _GEMINI_MODEL_RE.fullmatch(model):
        raise custom(
            'must be a Gemini model id such as "gemini-2.5-flash" (letters, digits, "." and '
            '"-", at most 64), optionally with the "models/" prefix'
        )
    return model


GeminiModel = Annotated[
    str,
    StringConstraints(max_length=128),
    AfterValidator(_check_gemini_model),
    Field(json_schema_extra={"pattern": f"^(?:models/)?{_GEMINI_MODEL}$"}),
]
Dtype = Literal["float32", "float16", "bfloat16", "float8", "float8_e4m3fn", "float8_e5m2"]
LoraDtype = Literal["float32", "float16", "bfloat16"]
# diffusion-pipe has multiple_overlapping disabled; the service cuts the clips itself
# (stages.training.clips) and gives diffusion-pipe single_beginning on the cut clips.
ClipMode = Literal["single_beginning", "single_middle", "multiple_overlapping"]
Beta = Annotated[float, Field(ge=0, lt=1)]
FrameBucket = Annotated[int, Field(ge=1, le=1024)]


def check_activation_checkpointing(value: Any) -> Any:
    # One clear error instead of pydantic's per-union-member pair.
    if value is None or value is True or value is False or value == "unsloth":
        return value
    raise custom('must be true, false or "unsloth"')


def none_as_empty(value: Any) -> Any:
    return {} if value is None else value


class Section(BaseModel):
    # strict: "100" is not 100 and true is not 1; a JSON client gets told, not guessed at.
    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        frozen=True,
        hide_input_in_errors=True,
    )
