"""The RunPod entry point: the seed's error shape, and no heavy imports at module level."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

from handler import NOT_BUILT, handler

ROOT = Path(__file__).resolve().parent.parent


def test_a_bad_request_gets_the_seed_error_shape() -> None:
    result = asyncio.run(handler({"id": "j1", "input": {"model_type": "nope"}}))
    assert result["status"] == "failed"
    assert "model_type" in result["error"]


def test_input_must_be_an_object() -> None:
    result = asyncio.run(handler({"id": "j1", "input": ["x"]}))
    assert result == {"status": "failed", "error": result["error"]}
    assert "input" in result["error"]


def test_a_valid_request_is_answered_honestly_until_training_exists() -> None:
    body = json.loads((ROOT / "examples" / "qwen-precaptioned.json").read_text())
    result = asyncio.run(handler({"id": "j1", **body}))
    assert result == {"status": "failed", "error": NOT_BUILT}


def test_importing_the_handler_loads_nothing_heavy() -> None:
    code = (
        "import sys, handler; heavy = {'torch', 'runpod', 'transformers', 'huggingface_hub', "
        "'boto3'} & set(sys.modules); print(sorted(heavy))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"
