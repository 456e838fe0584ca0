"""`dpserve models` and `dpserve plan`: the catalogue and a request's dry run, nothing run."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

from rich.console import Console
from typer.testing import CliRunner

from orchestrator.catalogue import ALL_MODEL_TYPES
from orchestrator.cli import app
from orchestrator.cli import models as models_command
from tests.support.paths import EXAMPLES

runner = CliRunner()


def _sections(output: str) -> dict[str, str]:
    """The plan's output split at its `# <path>` / `# weights` headers."""
    sections: dict[str, str] = {}
    current = ""
    for line in output.splitlines(keepends=True):
        if line.startswith("# "):
            current = line[2:].strip()
            sections[current] = ""
        elif current:
            sections[current] += line
    return sections


def _write(tmp_path: Path, body: dict[str, Any]) -> Path:
    path = tmp_path / "req.json"
    path.write_text(json.dumps(body))
    return path


def test_models_lists_every_model(monkeypatch: Any) -> None:
    # A wide console, so no cell is folded and each row is one line.
    monkeypatch.setattr(models_command, "out", Console(width=400))
    result = runner.invoke(app, ["models"])
    assert result.exit_code == 0, result.output
    rows = {line.split()[0]: line for line in result.stdout.splitlines() if line.strip()}
    assert "pytorch_lora_weights.safetensors" in rows["flux"]
    assert "yes" in rows["flux"].split()
    assert {"2e-05", "200"} <= set(rows["wan13"].split())  # Wan's lr and epochs
    assert {"0.0002", "80"} <= set(rows["qwen"].split())
    assert "images+videos" in rows["wan13"]
    assert "built locally by minipipe" in rows["tiny"]
    flat = result.stdout
    for model_type in ALL_MODEL_TYPES:
        assert model_type in result.stdout
    for repo in ("black-forest-labs/FLUX.1-dev", "Comfy-Org/z_image_turbo", "Qwen/Qwen-Image"):
        assert repo in flat
    assert "pytorch_lora_weights.safetensors" in flat


def test_plan_prints_both_configs_and_the_downloads(tmp_path: Path) -> None:
    root = tmp_path / "w"
    result = runner.invoke(
        app, ["plan", str(EXAMPLES / "flux-autocaption.json"), "--root", str(root)]
    )
    assert result.exit_code == 0, result.output
    sections = _sections(result.stdout)
    config = root / "jobs" / "JOB_ID" / "config"
    dataset = tomllib.loads(sections[str(config / "dataset.toml")])
    main = tomllib.loads(sections[str(config / "flux.toml")])
    assert dataset["directory"] == [
        {"path": str(root / "jobs" / "JOB_ID" / "dataset" / "images"), "num_repeats": 1}
    ]
    assert main["dataset"] == str(config / "dataset.toml")
    assert main["epochs"] == 80  # the request's value
    assert main["model"]["diffusers_path"] == str(root / "models" / "flux")
    weights = sections[f"weights, into {root / 'models'}"]
    assert "black-forest-labs/FLUX.1-dev" in weights
    assert "gated" in weights
    assert not root.exists()  # a plan writes nothing


def test_plan_default_root_is_work(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["plan", str(EXAMPLES / "qwen-precaptioned.json")])
    assert result.exit_code == 0, result.output
    assert f"# {tmp_path / 'work' / 'jobs' / 'JOB_ID' / 'config' / 'qwen.toml'}" in result.stdout
    assert not (tmp_path / "work").exists()


def test_plan_lists_z_image_files_and_the_adapter(tmp_path: Path) -> None:
    body = {
        "model_type": "z_image_turbo",
        "dataset": {"type": "precaptioned", "images_url": "https://x/i.zip"},
    }
    result = runner.invoke(app, ["plan", str(_write(tmp_path, body)), "--root", "/r"])
    assert result.exit_code == 0, result.output
    weights = _sections(result.stdout)["weights, into /r/models"]
    assert "split_files/vae/ae.safetensors" in weights
    assert "ostris/zimage_turbo_training_adapter" in weights
    assert "zimage_turbo_training_adapter_v2.safetensors" in weights


def test_plan_for_tiny_says_it_is_built_locally(tmp_path: Path) -> None:
    result = runner.invoke(app, ["plan", str(EXAMPLES / "tiny-local.json"), "--root", "/r"])
    assert result.exit_code == 0, result.output
    assert "built locally by minipipe: /r/models/tiny" in result.stdout


def test_plan_refuses_an_invalid_request(tmp_path: Path) -> None:
    body = {"model_type": "wan14b_i2v", "dataset": {"type": "precaptioned"}}
    result = runner.invoke(app, ["plan", str(_write(tmp_path, body))])
    assert result.exit_code == 1
    assert "dataset.images_url" in result.output
    assert "[model]" not in result.output


def test_plan_of_the_seed_wan_example_shows_the_clips_the_service_cuts() -> None:
    result = runner.invoke(app, ["plan", str(EXAMPLES / "wan14b-t2v-custom.json")])
    assert result.exit_code == 0, result.output
    assert "video_clip_mode multiple_overlapping: before training" in result.output
    assert '/jobs/JOB_ID/dataset/clips", num_repeats = 10 }' in result.output
    assert 'video_clip_mode = "single_beginning"' in result.output
    assert "[model]" in result.output


def test_plan_checks_the_batch_against_a_given_dataset_size() -> None:
    example = str(EXAMPLES / "flux-autocaption.json")  # global batch 1 x 4
    assert runner.invoke(app, ["plan", example, "--images", "4"]).exit_code == 0
    result = runner.invoke(app, ["plan", example, "--images", "3"])
    assert result.exit_code == 1
    assert "training.batch_size" in result.output


def test_plan_masks_passthrough_credentials(tmp_path: Path) -> None:
    secret = "wandb-secret-value-123456"
    body = {
        "model_type": "qwen",
        "dataset": {"type": "precaptioned", "images_url": "https://x/i.zip"},
        "training": {"monitoring": {"enable_wandb": True, "wandb_api_key": secret}},
    }
    result = runner.invoke(app, ["plan", str(_write(tmp_path, body))])
    assert result.exit_code == 0, result.output
    assert secret not in result.output
    assert 'wandb_api_key = "***"' in result.stdout


def test_plan_on_a_missing_file(tmp_path: Path) -> None:
    result = runner.invoke(app, ["plan", str(tmp_path / "nope.json")])
    assert result.exit_code == 2
    assert "no such file" in result.output
