"""The RunPod entry point: the seed's error shape, and no heavy imports at module level."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from handler import handler
from tests.support.paths import REPO


def test_a_bad_request_gets_the_seed_error_shape(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("DPS_ROOT", str(tmp_path))
    result = asyncio.run(handler({"id": "j1", "input": {"model_type": "nope"}}))
    assert result["status"] == "failed"
    assert isinstance(result["error"], str)
    assert "model_type" in result["error"]
    assert not (tmp_path / "jobs").exists()


def test_input_must_be_an_object(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DPS_ROOT", str(tmp_path))
    result = asyncio.run(handler({"id": "j1", "input": ["x"]}))
    assert result["status"] == "failed"
    assert "input" in result["error"]


def test_a_config_diffusion_pipe_would_refuse_fails_before_any_download(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("DPS_ROOT", str(tmp_path))
    body = {
        "model_type": "wan14b_t2v",
        "dataset": {"type": "precaptioned", "videos_url": "https://example.com/v.zip"},
        "training": {"resolution": [256, 384, 512, 768]},  # diffusion-pipe quits on >3
        "output": {"method": "local", "local": {"path": str(tmp_path / "out")}},
    }
    result = asyncio.run(handler({"id": "j1", "input": body}))
    assert result["status"] == "failed"
    assert "training.resolution" in result["error"]
    assert not (tmp_path / "jobs").exists()


def test_importing_the_handler_loads_nothing_heavy() -> None:
    code = (
        "import sys, handler; heavy = {'torch', 'runpod', 'transformers', 'huggingface_hub', "
        "'boto3', 'google.genai', 'peft', 'av', 'PIL'} & set(sys.modules); print(sorted(heavy))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"
