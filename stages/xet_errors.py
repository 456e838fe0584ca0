"""What hf_xet's errors say, for every stage that moves files through the Hub.

hf_xet (the Hub's storage client, used by huggingface_hub for files stored by Xet: LoRAs,
weights, dataset archives) raises none of huggingface_hub's HTTP errors. An upload that fails
at its token route or the CAS raises `ConnectionError`, a download `RuntimeError` ("Task error:
File reconstruction error: ..."), and a token the Hub refuses `XetAuthenticationError` (a
`PermissionError`). Their messages name the HTTP status the server answered, "(403
Forbidden)", which is all a caller can go by.
"""

from __future__ import annotations

import re

REFUSED_STATUS = frozenset({401, 403})
_STATUS = re.compile(r"\((\d{3}) [A-Z][A-Za-z ]*\)")


def _auth_error() -> type[Exception]:
    try:
        from hf_xet import XetAuthenticationError  # type: ignore[import-untyped]  # noqa: PLC0415
    except ImportError:  # pragma: no cover - no Xet client: its error cannot be raised
        return PermissionError
    return XetAuthenticationError  # type: ignore[no-any-return]


XetAuthenticationError = _auth_error()


def xet_status(err: BaseException) -> int:
    """The HTTP status an hf_xet error names (0: none, e.g. a dropped connection)."""
    found = _STATUS.search(str(err))
    return int(found[1]) if found else 0


def xet_refused(err: BaseException) -> bool:
    """Did the Hub or its CAS refuse the token (401/403, or hf_xet's auth error)?"""
    return isinstance(err, XetAuthenticationError) or xet_status(err) in REFUSED_STATUS
