"""dataset.gemini_model: a pinned default, a checked model id, carried into the captions inputs
and published in the JSON Schema."""

from __future__ import annotations

import copy
import json
import re
from typing import Any

import pytest

from orchestrator.cli.schema import render_schema
from orchestrator.plan import caption_inputs
from orchestrator.request import RequestError, parse_request
from stages.captions.gemini import GeminiSettings
from stages.captions.inputs import DEFAULT_GEMINI_MODEL, CaptionInputs

VIDEOS: dict[str, Any] = {
    "model_type": "wan13",
    "dataset": {"type": "videos", "videos_url": "https://example.com/v.zip"},
    "api_keys": {"gemini_api_key": "AIzaREQUESTKEY-000000000000000000000"},
}


def _with_model(model: Any) -> dict[str, Any]:
    body = copy.deepcopy(VIDEOS)
    body["dataset"]["gemini_model"] = model
    return body


def test_the_default_is_a_pinned_model_not_an_alias() -> None:
    request = parse_request(VIDEOS)
    assert request.dataset.gemini_model == "gemini-2.5-flash" == DEFAULT_GEMINI_MODEL
    assert "latest" not in DEFAULT_GEMINI_MODEL
    assert GeminiSettings().model == DEFAULT_GEMINI_MODEL  # the captioner's own default agrees
    assert CaptionInputs(images=False, videos=True).gemini_model == DEFAULT_GEMINI_MODEL


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ("gemini-2.5-pro", "gemini-2.5-pro"),
        ("gemini-2.5-flash-lite", "gemini-2.5-flash-lite"),
        ("gemini-2.0-flash-001", "gemini-2.0-flash-001"),
        ("models/gemini-2.5-flash", "gemini-2.5-flash"),  # as ListModels names it
        ("  gemini-2.5-flash  ", "gemini-2.5-flash"),
    ],
)
def test_a_model_id_is_kept_without_the_models_prefix(given: str, kept: str) -> None:
    request = parse_request(_with_model(given))
    assert request.dataset.gemini_model == kept
    inputs = caption_inputs(request)
    assert inputs is not None
    assert inputs.gemini_model == kept  # what the captions stage hands GeminiSettings(model=)
    assert request.masked()["dataset"]["gemini_model"] == kept


@pytest.mark.parametrize(
    "given",
    [
        "",
        "models/",
        "gemini 2.5 flash",
        "gemini/2.5",
        "tunedModels/my-model",
        "gemini-2.5-flash:generateContent",
        "gemini-2.5-flash?key=x",
        "-gemini",
        "gemini-",
        "gémini-2.5",
        "g" * 65,
        "gemini-2.5\nflash",
        "..",
    ],
)
def test_an_implausible_model_id_is_refused_naming_the_field(given: str) -> None:
    with pytest.raises(RequestError) as info:
        parse_request({"input": _with_model(given)})
    messages = [msg for path, msg in info.value.problems if path == "dataset.gemini_model"]
    assert messages, info.value.problems
    assert "Gemini model id" in messages[0]


def test_a_model_that_is_not_a_string_is_refused() -> None:
    with pytest.raises(RequestError) as info:
        parse_request({"input": _with_model(25)})
    assert info.value.problems == [("dataset.gemini_model", "Input should be a valid string")]


def test_the_json_schema_documents_the_field() -> None:
    schema = json.loads(render_schema())
    spec = schema["$defs"]["DatasetSpec"]["properties"]["gemini_model"]
    assert spec["default"] == DEFAULT_GEMINI_MODEL
    assert spec["type"] == "string"
    assert "Gemini model" in spec["description"]
    assert DEFAULT_GEMINI_MODEL in spec["description"]
    pattern = re.compile(spec["pattern"])
    assert pattern.match("gemini-2.5-flash")
    assert pattern.match("models/gemini-2.5-flash")
    assert not pattern.match("gemini 2.5")
