"""Secret redaction, applied to every event's data before it is stored.

Three nets, so one miss is caught by the next: values equal to (or containing) a secret the job
knows about, keys named like a credential, and strings shaped like well-known token formats.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping
from typing import Any

MASK = "***"

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
_MIN_SECRET_LEN = 4  # shorter "secrets" would mask ordinary words


@functools.lru_cache(maxsize=4096)
def is_sensitive_key(name: str) -> bool:
    parts = [p.lower() for p in _WORD.findall(name)]
    if not parts:
        return False
    return any(p in _SENSITIVE_PARTS for p in parts) or parts[-1] in _SENSITIVE_LAST


class Redactor:
    """Masks a job's known secrets (and anything shaped like a credential) in nested data."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets: list[str] = []
        self.add(secrets)

    def add(self, secrets: Iterable[str]) -> None:
        known = {s for s in (*self._secrets, *secrets) if s and len(s) >= _MIN_SECRET_LEN}
        # Longest first, so a secret that contains another is masked whole.
        self._secrets = sorted(known, key=len, reverse=True)
        alternatives = [re.escape(s) for s in self._secrets] + [_TOKEN_SHAPES.pattern]
        self._pattern = re.compile("|".join(alternatives))

    def text(self, value: str) -> str:
        return self._pattern.sub(MASK, value)

    def data(self, value: Any) -> Any:
        """A redacted deep copy of JSON-like data (dicts, lists, scalars).

        Keys come out sorted, as the stored line has them, so an event in memory and the same
        event read back from disk are identical, down to the order of their data.
        """
        if isinstance(value, Mapping):
            items = sorted(((str(k), v) for k, v in value.items()), key=lambda kv: kv[0])
            return {
                k: (MASK if is_sensitive_key(k) and v is not None else self.data(v))
                for k, v in items
            }
        if isinstance(value, list | tuple):
            return [self.data(v) for v in value]
        if isinstance(value, str):
            return self.text(value)
        return value
