"""Inline datasets: a small archive carried in the request itself, as a `data:` URL (RFC 2397).

`data:application/zip;base64,<the zip, base64>` lets a request bring its dataset without a host
to serve it: RunPod's local test mode (`test_input.json`), the Hub's tests, a quick try. Only
base64 payloads of an archive's media type are accepted; what the archive holds is checked by
the extractor exactly as for a download (`stages.dataset.extract`).

The payload is never shown: errors, logs and the recorded request give `shown(url)`,
`data:application/zip;base64,… (N bytes, sha256 0123456789ab)`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re

MiB = 1 << 20
# What request validation refuses without looking further: RunPod's largest request body is
# 20 MB (`/runsync`; `/run` takes 10 MB), so a longer data: URL never came through RunPod. The
# worker's own, smaller bound is `DownloadLimits.max_inline_bytes` (DPS_DATASET_MAX_INLINE_BYTES).
MAX_DATA_URL_CHARS = 32 * MiB
MEDIA_TYPES = frozenset(
    {
        "application/zip",
        "application/x-zip-compressed",
        "application/x-tar",
        "application/gzip",
        "application/x-gzip",
        "application/octet-stream",
    }
)
FORM = 'a data: URL must be "data:application/zip;base64,<the zip, base64-encoded>"'
_BASE64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")


class InlineError(ValueError):
    """A data: URL that is not an inline archive; the message never holds the payload."""


def is_data_url(url: str) -> bool:
    return url[:5].lower() == "data:"


def _split(url: str) -> tuple[str, str]:
    """(media type, base64 payload) of a data: URL."""
    head, comma, payload = url[5:].partition(",")
    if not comma:
        raise InlineError(f"{FORM} (no comma before the data)")
    params = [p.strip().lower() for p in head.split(";")]
    media = params[0] or "text/plain"  # RFC 2397's default
    if "base64" not in params[1:]:
        raise InlineError(f"{FORM} (the data must be base64: add ;base64 before the comma)")
    if media not in MEDIA_TYPES:
        shown = media if re.fullmatch(r"[a-z0-9.+-]{1,40}/[a-z0-9.+-]{1,60}", media) else "?"
        raise InlineError(f'{FORM} (got media type "{shown}"; the data must be an archive)')
    return media, payload


def _size(payload: str) -> int:
    """The decoded size of a base64 payload, without decoding it."""
    return len(payload) // 4 * 3 - (len(payload) - len(payload.rstrip("=")))


def check(url: str) -> int:
    """The archive's size in bytes, once the data: URL's form is checked (InlineError)."""
    if len(url) > MAX_DATA_URL_CHARS:
        raise InlineError(
            f"the data: URL is {len(url)} characters, more than any RunPod request holds; "
            "host the dataset and give its http(s) URL"
        )
    _, payload = _split(url)
    if len(payload) % 4 or not _BASE64.fullmatch(payload):
        raise InlineError(f"{FORM} (the data is not valid base64, or has whitespace in it)")
    size = _size(payload)
    if size == 0:
        raise InlineError(f"{FORM} (the data is empty)")
    return size


def decode(url: str) -> bytes:
    """The archive's bytes (InlineError on a malformed URL)."""
    check(url)
    try:
        return base64.b64decode(_split(url)[1], validate=True)
    except (binascii.Error, ValueError):
        raise InlineError(f"{FORM} (the data is not valid base64)") from None


def shown(url: str) -> str:
    """The data: URL as it may be shown: its media type, size and a short digest."""
    try:
        media = _split(url)[0]
        archive = decode(url)
    except InlineError:
        return "data:… (not an inline archive)"
    digest = hashlib.sha256(archive).hexdigest()[:12]  # what `sha256sum` of the zip begins with
    return f"data:{media};base64,… ({len(archive)} bytes, sha256 {digest})"


def to_data_url(archive: bytes, media: str = "application/zip") -> str:
    """The data: URL of an archive (the generators of test_input.json and the tests use it)."""
    return f"data:{media};base64,{base64.b64encode(archive).decode('ascii')}"
