"""Every model card's diffusers snippet runs: the real card, against tiny pipelines on a loopback
Hub, with only the documented substitutions (tests/support/tiny_pipelines/snippets.py).

For each model type the tiny pipeline of its family is uploaded under the repo id the snippet
names (the `-Diffusers` Wan repos, Tongyi-MAI/Z-Image-Turbo, ...; FLUX.1-dev gated), the LoRA,
in exactly diffusion-pipe's format, into a private job repo; then all seven snippets run in one
subprocess with HF_ENDPOINT at the fake Hub and a token in HF_TOKEN, as a user's shell would.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from orchestrator.catalogue import CATALOGUE, MODEL_TYPES
from stages.publish.card import model_card
from stages.publish.common import PublishInputs, collect_artifacts
from tests.support.card_inputs import card_inputs
from tests.support.fakehub import FakeHub
from tests.support.paths import REPO
from tests.support.tiny_pipelines.build import FAMILIES, TinyModel, tiny_model
from tests.support.tiny_pipelines.snippets import FRAMES, SIZE, python_block, substitute

TOKEN = "hf_snippetUSERtoken0123456789"

FAMILY = {
    "flux": "flux",
    "sdxl": "sdxl",
    "wan13": "wan_t2v",
    "wan14b_t2v": "wan_t2v",
    "wan14b_i2v": "wan_i2v",
    "qwen": "qwen_image",
    "z_image_turbo": "z_image",
}


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, TinyModel]:
    return {family: tiny_model(tmp_path_factory, family) for family in FAMILIES}


def _expected_modules(model_type: str, model: TinyModel) -> int:
    if model_type != "z_image_turbo":
        return model.lora_modules  # every module of the file got its LoRA
    # The snippet loads the copy under diffusers' names: each block's fused attention.qkv
    # (one module of the file, four blocks here) is to_q, to_k and to_v there.
    return model.lora_modules + 2 * 4


def _published(inputs: PublishInputs, model: TinyModel) -> dict[str, bytes]:
    """What our publish sends for the tiny LoRA: the files as the trainer saved them in the
    job's run folder, through `collect_artifacts` (the Z-Image copy included)."""
    for name, data in model.lora_files().items():
        (inputs.lora_path.parent / name).write_bytes(data)
    return {
        a.name: a.data if a.data is not None else a.source.read_bytes()  # type: ignore[union-attr]
        for a in collect_artifacts(inputs)
    }


@pytest.mark.slow
def test_every_card_snippet_runs(tiny: dict[str, TinyModel], tmp_path: Path) -> None:
    assert set(FAMILY) == set(MODEL_TYPES)
    jobs = []
    with FakeHub() as hub:
        hub.users[TOKEN] = "alice"
        for model_type in MODEL_TYPES:
            entry, model = CATALOGUE[model_type], tiny[FAMILY[model_type]]
            assert entry.lora_file == model.lora_file  # the tiny LoRA is named as the real one
            usage = entry.info.usage
            assert usage is not None
            assert usage.pipeline_class == model.pipeline_class
            gated = {TOKEN} if usage.gated else None
            hub.add_repo(usage.diffusers_repo, model.repo_files(), gated_tokens=gated)
            repo_id = f"alice/{model_type}-lora"
            inputs = card_inputs(tmp_path / "jobs", model_type)
            hub.add_repo(repo_id, _published(inputs, model), private=True)
            card = model_card(inputs, repo_id, private=True)
            code = substitute(python_block(card))
            jobs.append({"name": model_type, "code": code, "workdir": str(tmp_path / model_type)})
        (tmp_path / "jobs.json").write_text(json.dumps(jobs))
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE"))}
        env |= {
            "HF_ENDPOINT": hub.url,
            "HF_HOME": str(tmp_path / "hf-home"),
            "HF_TOKEN": TOKEN,
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "TOKENIZERS_PARALLELISM": "false",
            "PYTHONPATH": str(REPO),
        }
        started = time.monotonic()
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "tests.support.tiny_pipelines.snippets",
                "jobs.json",
                "out.json",
            ],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=240,
            check=False,
        )
        elapsed = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = json.loads((tmp_path / "out.json").read_text())
    results = out["results"]
    print(f"snippets: {elapsed:.1f} s; stand-ins: {out['stand_ins']}")
    for model_type in MODEL_TYPES:
        result, model = results[model_type], tiny[FAMILY[model_type]]
        assert "error" not in result, f"{model_type}: {result.get('error')}"
        print(
            f"{model_type}: {result['seconds']:.1f} s ({result['cpu_seconds']:.1f} s CPU),",
            f"LoRA modules injected {result['lora_modules']} of {model.lora_modules}",
        )
        assert result["lora_modules"] == _expected_modules(model_type, model), model_type
        assert result["unexpected_keys"] == [], model_type
        if FAMILY[model_type].startswith("wan"):
            assert result["frames_returned"] == FRAMES == result["video_frames"], model_type
        else:
            assert result["image_size"] == [SIZE, SIZE], model_type
