"""Secret canaries: one distinctive value per secret field of a request, and `scan` to find any
of them in files, strings, responses and log records.

    body = with_canaries(request_body)          # every secret field holds its canary
    ...run the job...
    assert scan([job_root], [response, *caplog.records, capsys.readouterr().err]) == []

The values are deliberately not shaped like real tokens (no `hf_`, `AKIA` prefix): the
shape-based redaction net would hide them anyway, and the point is to prove that the secrets
the request *registers* never leak. Each value is long and unique, so a hit is a leak, never a
coincidence. A value also counts as found when it appears URL-quoted, JSON-escaped or base64
encoded (a header dump or an encoded payload is still a leak).
"""

from __future__ import annotations

import base64
import copy
import json
import logging
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

# A secret shaped like a real Hub token, which the worker tests put in secret fields: the
# shape-based net must not be the only thing that keeps it off the volume.
TOKEN_CANARY = "hf_CanaryTokenDoNotLeak0123456789"

# The SDK's log level variables (runpod/serverless/modules/rp_logger.py): a test that checks
# the SDK's *default* level removes both from the worker's environment.
SDK_LEVEL_VARS = ("RUNPOD_LOG_LEVEL", "RUNPOD_DEBUG_LEVEL")
WANDB_FIELD = "training.monitoring.wandb_api_key"
_PRESIGNED = re.compile(r"https?://[^\s'\"]*X-Amz-Credential=[^\s'\"]*")

# field path -> canary value. Each is unique, >= 20 characters and has no whitespace (a secret
# with inner whitespace is refused by the request schema).
CANARIES: Mapping[str, str] = {
    "api_keys.huggingface_token": "CanaryApiHfTok-7d41c9e0b2",
    "api_keys.gemini_api_key": "CanaryGeminiKey-5a83f1d6c4",
    "output.huggingface.token": "CanaryOutHfTok-19b7e2c05f",
    "output.s3.access_key": "CanaryS3Access-84e0a7d3b1",
    "output.s3.secret_key": "CanaryS3Secret-2f6c91e8a7",
    # A passthrough credential: strings under credential-like keys are secrets too.
    "training.monitoring.wandb_api_key": "CanaryWandbKey-c3d58b17e9",
    # A presigned URL's query is a credential (the request masks it everywhere).
    "dataset.images_url?query": "CanaryUrlSig-6e2a0f94d8",
}


def _needles(value: str) -> list[bytes]:
    """The byte forms a leaked value may take."""
    forms = {
        value.encode(),
        quote(value, safe="").encode(),
        json.dumps(value).strip('"').encode(),
        value.encode("utf-16-le"),
    }
    # base64 of the value at each of the three alignments it can have inside a longer payload.
    for pad in range(3):
        encoded = base64.b64encode(b"\0" * pad + value.encode())
        forms.add(encoded[4 * ((pad + 2) // 3) + 4 : -4])  # drop the edges the padding touches
    return [f for f in forms if len(f) >= 12]


_ALL: list[tuple[str, list[bytes]]] = [(name, _needles(v)) for name, v in CANARIES.items()]


def with_canaries(body: Mapping[str, Any], *, query_url: bool = True) -> dict[str, Any]:
    """A deep copy of a request input with a canary in every secret field.

    The output section keeps its `method`; the s3 credentials are added next to it even when the
    method is not s3 (they are secrets all the same). With `query_url`, `dataset.images_url`
    (when present) gets the URL canary as its query string.
    """
    out: dict[str, Any] = copy.deepcopy(dict(body))
    api = out.setdefault("api_keys", {})
    api["huggingface_token"] = CANARIES["api_keys.huggingface_token"]
    api["gemini_api_key"] = CANARIES["api_keys.gemini_api_key"]
    output = out.setdefault("output", {})
    hf = output.setdefault("huggingface", {})
    hf["token"] = CANARIES["output.huggingface.token"]
    s3 = output.setdefault("s3", {"bucket": "canary-bucket"})
    s3["access_key"] = CANARIES["output.s3.access_key"]
    s3["secret_key"] = CANARIES["output.s3.secret_key"]
    training = out.setdefault("training", {})
    monitoring = training.setdefault("monitoring", {})
    monitoring["wandb_api_key"] = CANARIES["training.monitoring.wandb_api_key"]
    dataset = out.get("dataset")
    if query_url and isinstance(dataset, dict) and isinstance(dataset.get("images_url"), str):
        base = dataset["images_url"].split("?", 1)[0]
        dataset["images_url"] = f"{base}?X-Amz-Signature={CANARIES['dataset.images_url?query']}"
    return out


def _bytes_of(item: Any) -> bytes:
    if isinstance(item, bytes):
        return item
    if isinstance(item, str):
        return item.encode("utf-8", "surrogateescape")
    if isinstance(item, logging.LogRecord):
        parts = [item.getMessage(), repr(item.args)]
        parts += [f"{k}={v!r}" for k, v in vars(item).items() if k not in ("msg", "args")]
        if item.exc_info and item.exc_info[1] is not None:
            parts.append(repr(item.exc_info[1]))
        return "\n".join(parts).encode("utf-8", "surrogateescape")
    try:
        return json.dumps(item, default=repr).encode()
    except (TypeError, ValueError):
        return repr(item).encode("utf-8", "surrogateescape")


def find(data: bytes) -> list[str]:
    """The canary names whose value (in any of its forms) occurs in `data`."""
    return [name for name, needles in _ALL if any(n in data for n in needles)]


def scan(paths: Iterable[Path] = (), texts: Iterable[Any] = ()) -> list[str]:
    """Every canary found: in the files under `paths` (recursively; a path may be a file), and in
    `texts` (str, bytes, log records, or anything JSON-able such as a response). One line per
    hit: `<where>: <canary field>`."""
    hits: list[str] = []
    for given in paths:
        root = Path(given)
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for path in files:
            if path.is_symlink():
                continue
            try:
                data = path.read_bytes()
            except OSError:
                continue
            hits += [f"{path}: {name}" for name in find(data)]
            hits += [f"{path} (name): {name}" for name in find(str(path).encode())]
    for i, item in enumerate(texts):
        label = f"text[{i}] ({type(item).__name__})"
        hits += [f"{label}: {name}" for name in find(_bytes_of(item))]
    return hits


def without_presigned_urls(item: Any) -> Any:
    """`item` (a response, or text) with each S3 presigned URL replaced by `<presigned>`: the
    one place an answer legitimately names the access key id (X-Amz-Credential)."""
    if isinstance(item, str):
        return _PRESIGNED.sub("<presigned>", item)
    if isinstance(item, Mapping):
        return {k: without_presigned_urls(v) for k, v in item.items()}
    if isinstance(item, list | tuple):
        return [without_presigned_urls(v) for v in item]
    return item


def volume_hits_besides_the_trainer_toml(root: Path, job_id: str) -> list[str]:
    """Canaries in the files under `root`, but the documented exception: diffusion-pipe reads
    the wandb key from the TOML it is given, so the job's own trainer TOMLs hold it."""
    job = root / "jobs" / job_id
    return [
        hit
        for hit in scan([root])
        if not (
            hit.endswith(f": {WANDB_FIELD}")
            and Path(hit.rsplit(": ", 1)[0]).suffix == ".toml"
            and Path(hit.rsplit(": ", 1)[0]).is_relative_to(job)
        )
    ]
