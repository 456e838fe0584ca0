"""The one secret masker: finding secrets, and masking them in text, data and URLs.

Applied to every event's data before it is stored, to error messages, configs copied for
publishing, the request kept on the volume and what the CLI prints. Three nets, so one miss is
caught by the next: values equal to (or containing) a secret the job knows about, keys named
like a credential, and strings shaped like well-known token formats.

- `Redactor(secrets).data(value)`: all three nets over nested data (the store's net).
- `Redactor(secrets, shapes=False).text(s)`: the known secrets in a message (`scrub`).
- `mask_keys(value)`: values under credential-like keys, the rest as it is (what is shown).
- `mask_url(url)`: a URL without its userinfo and query (a presigned URL's signature).
- `sensitive_strings(value)`, `url_secrets(url)`: find the secrets to register.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

MASK = "***"
MIN_SECRET_LEN = 4  # shorter "secrets" would mask ordinary words
MAX_DEPTH = 10  # nested data deeper than this is masked whole (a request cannot nest deeper)

_SENSITIVE_PARTS = frozenset(
    {
        "token",
        "tokens",
        "secret",
        "secrets",
        "password",
        "passwd",
        "credential",
        "credentials",
        "authorization",
        "apikey",
        "cookie",
    }
)
# "key" alone is too common a word ("key_prefix"); it marks a credential when it ends the name
# (api_key, access_key, secret_key).
_SENSITIVE_LAST = frozenset({"key", "keys"})
_WORD = re.compile(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])")

# Formats of the credentials this service handles: Hugging Face, AWS access keys, Google API
# keys, RunPod keys and bearer headers. Shape-based, so they catch secrets nobody registered.
_TOKEN_SHAPES = re.compile(
    r"hf_[A-Za-z0-9]{20,}"
    r"|(?:AKIA|ASIA)[0-9A-Z]{16}"
    r"|AIza[0-9A-Za-z_\-]{35}"
    r"|rpa_[A-Za-z0-9]{20,}"
    r"|(?i:bearer)\s+[A-Za-z0-9._\-]{16,}"
)


@functools.lru_cache(maxsize=4096)
def is_sensitive_key(name: str) -> bool:
    parts = [p.lower() for p in _WORD.findall(name)]
    if not parts:
        return False
    return any(p in _SENSITIVE_PARTS for p in parts) or parts[-1] in _SENSITIVE_LAST


class Redactor:
    """Masks a job's known secrets (and, with `shapes`, anything shaped like a credential)."""

    def __init__(self, secrets: Iterable[str] = (), *, shapes: bool = True) -> None:
        self._secrets: list[str] = []
        self._shapes = shapes
        self.add(secrets)

    def add(self, secrets: Iterable[str]) -> None:
        known = {s for s in (*self._secrets, *secrets) if s and len(s) >= MIN_SECRET_LEN}
        # Longest first, so a secret that contains another is masked whole.
        self._secrets = sorted(known, key=len, reverse=True)
        alternatives = [re.escape(s) for s in self._secrets]
        if self._shapes:
            alternatives.append(_TOKEN_SHAPES.pattern)
        self._pattern = re.compile("|".join(alternatives)) if alternatives else None

    def text(self, value: str) -> str:
        return self._pattern.sub(MASK, value) if self._pattern is not None else value

    def data(self, value: Any, *, sort_keys: bool = True, by_key: bool = True) -> Any:
        """A redacted deep copy of JSON-like data (dicts, lists, scalars).

        Keys come out sorted by default, as the stored line has them, so an event in memory and
        the same event read back from disk are identical, down to the order of their data.
        With `by_key` off, values under credential-like keys are only scrubbed like any other
        (for data whose secrets were masked already, where `api_keys` names a section).
        """
        if isinstance(value, Mapping):
            # Keys too: a secret pasted as a key (a passthrough key) is still a secret.
            items = [(self.text(str(k)), v) for k, v in value.items()]
            if sort_keys:
                items.sort(key=lambda kv: kv[0])
            return {
                k: (
                    MASK
                    if by_key and is_sensitive_key(k) and v is not None
                    else self.data(v, sort_keys=sort_keys, by_key=by_key)
                )
                for k, v in items
            }
        if isinstance(value, list | tuple):
            return [self.data(v, sort_keys=sort_keys, by_key=by_key) for v in value]
        if isinstance(value, str):
            return self.text(value)
        return value


def scrub(text: str, secrets: Iterable[str]) -> str:
    """`text` with every known secret masked (longest first, so overlaps leave no tail)."""
    return Redactor(secrets, shapes=False).text(text)


def mask_keys(value: Any, depth: int = 0) -> Any:
    """A copy with values under credential-like keys replaced by "***", order kept."""
    if depth > MAX_DEPTH:
        return MASK
    if isinstance(value, Mapping):
        return {
            k: MASK
            if isinstance(k, str) and is_sensitive_key(k) and v is not None
            else mask_keys(v, depth + 1)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [mask_keys(v, depth + 1) for v in value]
    return value


def sensitive_strings(value: Any, sensitive: bool = False, depth: int = 0) -> list[str]:
    """Every string under a credential-like key, at any depth (a wandb key in a passthrough)."""
    if depth > MAX_DEPTH:
        return []
    if isinstance(value, str):
        return [value] if sensitive else []
    if isinstance(value, Mapping):
        out: list[str] = []
        for k, v in value.items():
            hit = sensitive or (isinstance(k, str) and is_sensitive_key(k))
            out += sensitive_strings(v, hit, depth + 1)
        return out
    if isinstance(value, list | tuple):
        return [s for v in value for s in sensitive_strings(v, sensitive, depth + 1)]
    return []


def url_secrets(url: str | None) -> list[str]:
    """The parts of a URL that may be credentials: its query, password and user name."""
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
    return [s for s in out if len(s) >= MIN_SECRET_LEN]


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
