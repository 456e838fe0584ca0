"""Hub output: the token can write the target repo.

whoami first (a 401 is a token the Hub does not take; a read token, or a fine-grained one whose
scopes give no `repo.write` on the namespace, cannot publish), then the repo created or found
(`create_repo(exist_ok=True)`: a 403 is a namespace the token cannot write), then its
visibility read back: an existing repo keeps its own, so a public one where the request asked
for a private one is said in a warning. The default repo id is the publish stage's; when that
repo already exists and holds files with no trace of this job, the job is refused (a repo is
never written by a job that did not make it unless `repo_id` names it).

Note: for a token without create rights, the client answers a 403 on creation by reading the
repo and returns quietly when it exists, which is why the role is checked from whoami.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import httpx2
from huggingface_hub import HfApi
from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError
from huggingface_hub.utils._headers import build_hf_headers
from huggingface_hub.utils._pagination import paginate

from stages.access.inputs import Bounds, HubTarget
from stages.access.retry import Checked, Clock, Sleep, Transient, retried
from stages.errors import StageFailed
from stages.publish.hub import default_repo_id, job_trace

FIELD = "output.huggingface.token"
TOKENS_PAGE = "https://huggingface.co/settings/tokens"
_TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})
_TRACE_SCAN = 200  # commits read for this job's trace (its own are the newest)
T = TypeVar("T")
Refusal = Callable[[HfHubHTTPError], StageFailed]  # a definite refusal's message, per call


def _status(err: HfHubHTTPError) -> int:
    return int(getattr(getattr(err, "response", None), "status_code", 0) or 0)


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:200] if text else type(err).__name__


def _call(doing: str, fn: Callable[[], T], refused: Refusal) -> T:
    """One Hub call: 408/429/5xx and network errors are `Transient`; 401 is a refused token;
    any other error status is `refused(err)`."""
    try:
        return fn()
    except HfHubHTTPError as err:
        status = _status(err)
        if status in _TRANSIENT_STATUS:
            raise Transient(f"{doing}: HTTP {status}") from None
        if status == 401:
            raise StageFailed(
                f"{FIELD}: the Hub refused this token (HTTP 401): it is mistyped, expired or "
                f"revoked; give a token with write access ({TOKENS_PAGE})"
            ) from None
        raise refused(err) from None
    except (httpx2.TransportError, OSError) as err:
        raise Transient(f"{doing}: {type(err).__name__}") from None


def _no_write_scope(access: dict[str, Any], repo_id: str) -> bool:
    """A fine-grained token whose scopes give `repo.write` on no entity that could be this
    repo's namespace. Only a clear answer counts: a scope of a kind not read here passes, and
    creating the repo decides."""
    fine = access.get("fineGrained")
    if not isinstance(fine, dict) or not isinstance(fine.get("scoped"), list):
        return False
    scoped: list[Any] = fine["scoped"]
    if "repo.write" in (fine.get("global") or []):
        return False
    namespace = repo_id.split("/", 1)[0]
    for item in scoped:
        if not isinstance(item, dict) or "repo.write" not in (item.get("permissions") or []):
            continue
        entity = item.get("entity") or {}
        if entity.get("type") not in ("user", "org") or entity.get("name") == namespace:
            return False
    return True


def check_hub(target: HubTarget, bounds: Bounds, *, sleep: Sleep, clock: Clock) -> Checked:
    api = HfApi(endpoint=target.endpoint.rstrip("/"), token=target.token.get_secret_value())
    checked = Checked()

    def run(doing: str, fn: Callable[[], T], refused: Refusal) -> T:
        call = partial(_call, doing, fn, refused)
        return retried(f"hub {doing}", call, bounds, sleep=sleep, clock=clock)

    def other(err: HfHubHTTPError) -> StageFailed:
        return StageFailed(f"{FIELD}: the Hub refused it: {_first_line(err)}")

    me: dict[str, Any] = run("whoami", api.whoami, other)
    user = str(me.get("name") or "")
    access = (me.get("auth") or {}).get("accessToken") or {}
    role = access.get("role")
    repo_id = target.repo_id or (
        default_repo_id(user, target.model_type, target.job_id) if user else None
    )
    if repo_id is None:
        raise Transient("whoami did not name the token's user")
    checked.facts.update(repo_id=repo_id, token_role=role)
    if role == "read":
        raise StageFailed(
            f"{FIELD}: this is a read-only token, so the LoRA could not be published to "
            f"{repo_id}; give a token with write access ({TOKENS_PAGE}){_auto(target)}"
        )
    if role == "fineGrained" and _no_write_scope(access, repo_id):
        namespace = repo_id.split("/", 1)[0]
        raise StageFailed(
            f"{FIELD}: this fine-grained token has no write access to repos under "
            f'"{namespace}", so the LoRA could not be published to {repo_id}; add "Write '
            f'access to contents/settings of all repos" under {namespace} to the token, or '
            f"use a write token ({TOKENS_PAGE}){_auto(target)}"
        )

    def create_refused(err: HfHubHTTPError) -> StageFailed:
        status = _status(err)
        if status in (402, 403):
            return StageFailed(
                f"{FIELD}: the token cannot create or write {repo_id} (HTTP {status}); give a "
                "token with write access to that namespace, or set output.huggingface.repo_id "
                f"to a repo it can write{_auto(target)}"
            )
        return StageFailed(
            f"output.huggingface.repo_id: the Hub refused to create {repo_id}: {_first_line(err)}"
        )

    run(
        "repo creation",
        lambda: api.create_repo(repo_id, private=target.private, exist_ok=True, repo_type="model"),
        create_refused,
    )

    def info_refused(err: HfHubHTTPError) -> StageFailed:
        if isinstance(err, RepositoryNotFoundError):
            return StageFailed(
                f"{FIELD}: the token cannot read {repo_id} after creating it; give a token "
                f"with write access ({TOKENS_PAGE})"
            )
        return other(err)

    info = run("repo info", lambda: api.model_info(repo_id), info_refused)
    if not target.repo_id:
        run("repo history", lambda: _ours_or_refuse(api, info, target, repo_id), other)
    private = info.private
    checked.facts["private"] = private
    if target.private and private is False:
        checked.warnings.append(
            f"output.huggingface.private: {repo_id} already exists and is public, and the Hub "
            "keeps an existing repo's visibility: the LoRA will be public; make the repo "
            "private on the Hub, or choose another repo_id"
        )
    return checked


def _ours_or_refuse(api: HfApi, info: Any, target: HubTarget, repo_id: str) -> None:
    """An auto-named repo that already holds files is written only when this job made them: a
    commit of its publish carries `job=<id>`, or the repo holds only UPDATES/ whose first file
    is this job's (its mirror may commit before this check). An empty repo is fine."""
    files = [s.rfilename for s in info.siblings or [] if s.rfilename != ".gitattributes"]
    if not files:
        return
    trace = job_trace(target.job_id)
    headers = build_hf_headers(token=target.token.get_secret_value())
    url = f"{target.endpoint.rstrip('/')}/api/models/{repo_id}/commits/main"
    for n, item in enumerate(paginate(url, params={}, headers=headers)):
        if trace in str(item.get("message") or "") or trace in str(item.get("title") or ""):
            return
        if n >= _TRACE_SCAN:
            break
    updates = sorted(f for f in files if f.startswith("UPDATES/"))
    if updates and len(updates) == len(files):
        with tempfile.TemporaryDirectory() as folder:
            path = api.hf_hub_download(repo_id, updates[0], cache_dir=folder)
            try:
                job_id = json.loads(Path(path).read_text("utf-8")).get("job_id")
            except (ValueError, AttributeError):
                job_id = None
        if job_id == target.job_id:
            return
    raise StageFailed(
        f"output.huggingface.repo_id: {repo_id}, the name this job would publish to, already "
        f"exists and holds files this job did not make ({len(files)} of them), so it is not "
        "written unless output.huggingface.repo_id names it: set output.huggingface.repo_id "
        f'to "{repo_id}" to publish there anyway, or to another repo'
    )


def _auto(target: HubTarget) -> str:
    if not target.auto:
        return ""
    return (
        ' (output.method "auto" would fall back to a temporary file host; remove '
        "output.huggingface to use one)"
    )
