"""Run a handler file as `python -u handler.py` does, with the SDK's worker key from the env only.

`python -u worker_boot.py handler.py` is how localpod starts a worker. The SDK's worker loop
(`runpod.http_client.get_auth_header`: job-take, job-done, job-stop, progress) sends the key of
`~/.runpod/config.toml` when that file exists and RUNPOD_AI_API_KEY only otherwise; a developer's
config file would make the worker send their RunPod key instead of localpod's worker secret. A
RunPod worker has no such file, so hiding it makes the local worker behave as a deployed one.

Runs by path under whatever interpreter localpod is told to use, so it imports nothing of
localpod.
"""

from __future__ import annotations

import os
import runpy
import sys
from typing import Any


def _no_credentials(*_args: Any, **_kwargs: Any) -> None:
    return None


def main() -> None:
    handler = os.path.abspath(sys.argv[1])
    sys.argv = sys.argv[1:]
    sys.path[0] = os.path.dirname(handler)  # as for `python handler.py`, not this folder
    try:
        import runpod.http_client  # noqa: PLC0415 - after sys.path is the handler's
    except ImportError:
        pass  # the handler fails on its own import, in its own words
    else:
        runpod.http_client.get_credentials = _no_credentials
    runpy.run_path(handler, run_name="__main__")


if __name__ == "__main__":
    main()
