"""The published JSON Schema (docs/api-schema.json) matches the request model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from orchestrator.catalogue import ALL_MODEL_TYPES, BASE_DEFAULTS
from orchestrator.cli.schema import SCHEMA_PATH, main, render_schema
from tests.support.paths import REPO


def _schema() -> dict[str, Any]:
    result: dict[str, Any] = json.loads(render_schema())
    return result


def test_committed_schema_is_current() -> None:
    assert SCHEMA_PATH == REPO / "docs" / "api-schema.json"
    assert SCHEMA_PATH.read_text(encoding="utf-8") == render_schema(), (
        "docs/api-schema.json is stale; run `python -m orchestrator.schema_export`"
    )


def test_render_format_is_sorted_indented_with_trailing_newline() -> None:
    text = render_schema()
    assert text.endswith("}\n")
    assert text == json.dumps(json.loads(text), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def test_check_passes_on_a_current_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "schema.json"
    assert main(["--path", str(path)]) == 0
    assert path.read_text(encoding="utf-8") == render_schema()
    assert main(["--check", "--path", str(path)]) == 0
    assert "up to date" in capsys.readouterr().out


def test_check_fails_on_a_stale_or_missing_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "schema.json"
    assert main(["--check", "--path", str(path)]) == 1
    assert "is missing" in capsys.readouterr().err
    path.write_text(render_schema().replace('"epochs"', '"epoch"'), encoding="utf-8")
    assert main(["--check", "--path", str(path)]) == 1
    assert "out of date" in capsys.readouterr().err


def test_module_runs_as_a_script() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli.schema", "--check"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def test_schema_documents_every_seed_field() -> None:
    schema = _schema()
    defs = schema["$defs"]
    assert set(schema["properties"]) == {
        "model_type",
        "dataset",
        "training",
        "api_keys",
        "output",
        "resume_from",
        "resume_from_lora",
    }
    assert schema["required"] == ["model_type", "dataset"]
    assert schema["properties"]["model_type"]["enum"] == list(ALL_MODEL_TYPES)
    dataset = defs["DatasetSpec"]["properties"]
    assert set(dataset) == {
        "type",
        "images_url",
        "videos_url",
        "trigger_word",
        "image_repeats",
        "video_repeats",
        "gemini_model",
    }
    assert dataset["gemini_model"]["default"] == "gemini-2.5-flash"
    assert dataset["image_repeats"]["default"] == 1
    assert dataset["video_repeats"]["default"] == 5
    assert defs["DatasetSpec"]["additionalProperties"] is False
    assert defs["TrainingConfig"]["additionalProperties"] is True  # passthrough
    assert defs["HuggingFaceOutput"]["properties"]["private"]["default"] is True
    assert defs["OutputSpec"]["properties"]["method"]["default"] == "auto"
    assert set(defs["S3Output"]["properties"]) == {
        "endpoint_url",
        "bucket",
        "region",
        "access_key",
        "secret_key",
        "key_prefix",
    }


@pytest.mark.parametrize("key", list(BASE_DEFAULTS))
def test_training_field_states_the_seed_default(key: str) -> None:
    prop = _schema()["$defs"]["TrainingConfig"]["properties"][key]
    seed = BASE_DEFAULTS[key]
    expected = list(seed) if isinstance(seed, tuple) else seed
    assert prop["default"] == expected
    assert f"Default: {json.dumps(expected)}" in prop["description"]


@pytest.mark.parametrize(
    ("section", "field"),
    [
        ("ApiKeys", "huggingface_token"),
        ("ApiKeys", "gemini_api_key"),
        ("HuggingFaceOutput", "token"),
        ("S3Output", "access_key"),
        ("S3Output", "secret_key"),
    ],
)
def test_secrets_are_write_only_in_the_schema(section: str, field: str) -> None:
    prop = _schema()["$defs"][section]["properties"][field]
    variants = prop.get("anyOf", [prop])
    assert any(v.get("writeOnly") is True and v.get("format") == "password" for v in variants)
