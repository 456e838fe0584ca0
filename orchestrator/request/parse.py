"""`parse_request`: a RunPod body or a bare input in, a `TrainingRequest` or one `RequestError`
listing every problem out, each with its dotted field path.

The schema's own validation runs once, with the rules switched off inside it; the rules then run
once over the raw input (`passthrough`, `rules`), so a malformed field is reported by its own
validation and every rule problem still names its field. No message holds a secret.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import ValidationError

from orchestrator.errors import Problem, RequestError
from orchestrator.request.fields import closest, echo
from orchestrator.request.schema import (
    FIELD_HOME,
    REMOVED_FIELDS,
    RULES_CHECKED_BY_CALLER,
    SECTIONS,
    TrainingRequest,
    request_problems,
)
from orchestrator.request.secrets import raw_secrets


def _path(loc: Sequence[int | str]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:  # a blank key is shown quoted: the path must still point somewhere
            out += ("." if out else "") + (echo(part) if part.strip() else json.dumps(part))
    return out


def _unknown_field(loc: Sequence[int | str]) -> str:
    key = loc[-1]
    parent = tuple(str(p) for p in loc[:-1])
    if not isinstance(key, str):
        return "keys must be strings"
    if not parent and key in REMOVED_FIELDS:
        return REMOVED_FIELDS[key]
    model = SECTIONS.get(parent)
    if model is not None:
        near = closest(key, model.model_fields, cutoff=0.6)
        if near is not None:
            return f"unknown field; did you mean {near}?"
    home = FIELD_HOME.get(key)
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
        loc = list(error["loc"])
        if error["type"] == "extra_forbidden" and loc[-1] == "[key]":
            loc = loc[:-1]
        problems.append((_path(loc), _message(error)))
    return problems


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

    secrets = raw_secrets(data)

    problems: list[Problem] = []
    request: TrainingRequest | None = None
    try:
        request = TrainingRequest.model_validate(data, context={RULES_CHECKED_BY_CALLER: True})
    except ValidationError as err:
        problems += _pydantic_problems(err)
    except (TypeError, ValueError, RecursionError) as err:  # defensive: never leak a crash
        problems.append(("input", f"could not be read ({type(err).__name__})"))

    training = data.get("training")
    problems += request_problems(data, training if isinstance(training, Mapping) else {})

    if problems or request is None:
        raise RequestError(problems or [("input", "invalid request")], secrets)
    return request
