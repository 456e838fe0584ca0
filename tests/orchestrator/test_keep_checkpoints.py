"""`training.keep_checkpoints` and `DPS_KEEP_CHECKPOINTS`: validated, named in every error, the
request's value over the worker's, and never written to diffusion-pipe's TOML."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from orchestrator.plan import plan_job
from orchestrator.request import RequestError, TrainingRequest, parse_request
from orchestrator.settings import Settings
from stages.training.config import JobPaths, render

BASE: dict[str, Any] = {
    "model_type": "tiny",
    "dataset": {"type": "precaptioned", "images_url": "https://example.com/d.zip"},
}


def _request(**training: Any) -> TrainingRequest:
    return parse_request({**BASE, "training": training})


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0, "greater than or equal to 1"),
        (-3, "greater than or equal to 1"),
        (101, "less than or equal to 100"),
        (10**12, "less than or equal to 100"),
        ("2", "valid integer"),
        (True, "valid integer"),
        (2.0, "valid integer"),
        ([2], "valid integer"),
    ],
)
def test_bad_values_are_refused_naming_the_field(value: Any, expected: str) -> None:
    with pytest.raises(RequestError) as caught:
        _request(keep_checkpoints=value)
    [(field, message)] = caught.value.problems
    assert field == "training.keep_checkpoints"
    assert expected in message


@pytest.mark.parametrize("value", [1, 2, 100])
def test_values_in_range_are_kept(value: int) -> None:
    assert _request(keep_checkpoints=value).training.keep_checkpoints == value


@pytest.mark.parametrize("typo", ["keep_checkpoint", "keep_checkpionts", "keep_checkpoints_"])
def test_a_misspelt_field_is_refused_not_passed_to_the_trainer(typo: str) -> None:
    with pytest.raises(RequestError) as caught:
        _request(**{typo: 3})
    [(field, message)] = caught.value.problems
    assert field == f"training.{typo}"
    assert "did you mean keep_checkpoints?" in message


def test_the_request_wins_over_the_setting_and_the_setting_over_the_default(
    tmp_path: Path,
) -> None:
    settings = Settings(root=tmp_path, keep_checkpoints=5)
    assert plan_job(_request(keep_checkpoints=1), settings, "j").keep_checkpoints == 1
    assert plan_job(_request(keep_checkpoints=None), settings, "j").keep_checkpoints == 5
    assert plan_job(_request(), Settings(root=tmp_path), "j").keep_checkpoints == 2


def test_the_field_is_not_a_diffusion_pipe_key(tmp_path: Path) -> None:
    plan = plan_job(_request(keep_checkpoints=3, epochs=2), Settings(root=tmp_path), "j")
    main = render(plan.trainer, JobPaths.for_job(tmp_path, "j"), image_count=4).main
    assert "keep_checkpoints" not in main
    assert main["epochs"] == 2


def test_the_setting_is_read_from_its_variable(tmp_path: Path) -> None:
    root = {"DPS_ROOT": str(tmp_path)}
    assert Settings.from_env(root).keep_checkpoints == 2
    assert Settings.from_env({**root, "DPS_KEEP_CHECKPOINTS": ""}).keep_checkpoints == 2
    assert Settings.from_env({**root, "DPS_KEEP_CHECKPOINTS": "7"}).keep_checkpoints == 7
    with pytest.raises(ValueError, match="DPS_KEEP_CHECKPOINTS must be at least 1, got 0"):
        Settings.from_env({**root, "DPS_KEEP_CHECKPOINTS": "0"})


def test_the_schema_states_the_bounds() -> None:
    schema = TrainingRequest.model_json_schema()
    prop = schema["$defs"]["TrainingConfig"]["properties"]["keep_checkpoints"]
    [bounded, _null] = prop["anyOf"]
    assert (bounded["type"], bounded["minimum"], bounded["maximum"]) == ("integer", 1, 100)
    assert "DPS_KEEP_CHECKPOINTS" in prop["description"]
