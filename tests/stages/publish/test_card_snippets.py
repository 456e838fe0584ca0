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
from pydantic import SecretStr

from orchestrator.catalogue import CATALOGUE, MODEL_TYPES
from stages.publish.inputs import Destination, HubDestination
from stages.publish.stage import PublishOptions, publish
from tests.support.card_inputs import card_inputs
from tests.support.fakehub import FakeHub
from tests.support.paths import REPO
from tests.support.tiny_pipelines.build import FAMILIES, RANK, TinyModel, tiny_model, write_base
from tests.support.tiny_pipelines.snippets import (
    FRAMES,
    SIZE,
    START_FRAME,
    python_block,
    substitute,
)

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


# Where the worker holds each model's base checkpoint (under the models root), as its
# catalogue entry's verify rules look for it.
BASE_PATH = {
    "flux": "flux/transformer/diffusion_pytorch_model.safetensors",
    "sdxl": "hub/models--stabilityai--stable-diffusion-xl-base-1.0/snapshots/0123abcd",
    "wan13": "Wan/Wan2.1-T2V-1.3B/diffusion_pytorch_model.safetensors",
    "wan14b_t2v": "Wan/Wan2.1-T2V-14B/diffusion_pytorch_model.safetensors",
    "wan14b_i2v": "Wan/Wan2.1-I2V-14B-480P/diffusion_pytorch_model.safetensors",
    "qwen": "Qwen-Image/transformer/diffusion_pytorch_model.safetensors",
    "z_image_turbo": "z_image/z_image_turbo_bf16.safetensors",
}
# The generation the LoRA's strength is measured on (the snippet's own call, substituted).
_IMAGE: dict[str, object] = {"height": SIZE, "width": SIZE}
_VIDEO: dict[str, object] = {"height": SIZE, "width": SIZE, "num_frames": FRAMES}
STRENGTH_CALL: dict[str, dict[str, object]] = {
    "flux": _IMAGE,
    "sdxl": _IMAGE,
    "wan13": _VIDEO,
    "wan14b_t2v": _VIDEO,
    "wan14b_i2v": {**_VIDEO, "image": START_FRAME},
    "qwen": {**_IMAGE, "negative_prompt": " ", "true_cfg_scale": 4.0},
    "z_image_turbo": {**_IMAGE, "guidance_scale": 0.0},
}


def _publish(
    tmp_path: Path, model_type: str, model: TinyModel, hub: FakeHub, repo_id: str
) -> dict[str, object]:
    """Our verify step and our Hub publish, for the tiny LoRA as the trainer saved it in the
    job's run folder, against the tiny base laid out where the worker keeps it."""
    models_root = tmp_path / "models" / model_type
    write_base(model, models_root / BASE_PATH[model_type])
    inputs = card_inputs(
        tmp_path / "jobs",
        model_type,
        destination=Destination(
            method="huggingface",
            huggingface=HubDestination(token=SecretStr(TOKEN), repo_id=repo_id, private=True),
        ),
        training_values={"lora_rank": RANK, "save_dtype": "float32", "epochs": 2},
    )
    for name, data in model.lora_files().items():
        (inputs.lora_path.parent / name).write_bytes(data)
    return publish(inputs, PublishOptions(hub_endpoint=hub.url, models_root=models_root))


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
            result = _publish(tmp_path, model_type, model, hub, repo_id)
            verified = result["verified"]
            assert isinstance(verified, list)
            assert [v["modules"] for v in verified] == [model.lora_modules], model_type
            card = hub.files(repo_id)["README.md"].decode()
            code = substitute(python_block(card))
            jobs.append(
                {
                    "name": model_type,
                    "code": code,
                    "workdir": str(tmp_path / model_type),
                    "strength_call": {"prompt": "a photo", "num_inference_steps": 2}
                    | STRENGTH_CALL[model_type],
                }
            )
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
            f"LoRA modules injected {result['lora_modules']} of {model.lora_modules};",
            f"output change at strength 1 vs 0: {result.get('strength_1_vs_0')},",
            f"at 0 vs disabled: {result.get('strength_0_vs_off')}",
        )
        assert result["lora_modules"] == _expected_modules(model_type, model), model_type
        assert result["unexpected_keys"] == [], model_type
        # At a fixed seed the LoRA changes the output at strength 1, and none at strength 0.
        assert result["strength_1_vs_0"] > 1e-4, model_type
        assert result["strength_0_vs_off"] < 1e-6, model_type
        if FAMILY[model_type].startswith("wan"):
            assert result["frames_returned"] == FRAMES == result["video_frames"], model_type
        else:
            assert result["image_size"] == [SIZE, SIZE], model_type
