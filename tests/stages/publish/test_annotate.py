"""The published LoRA's metadata and descriptive name: real safetensors files, read back with
safetensors' own reader."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from stages.publish.annotate import annotate, comfy_name, descriptive_name, lora_metadata
from stages.publish.common import collect_artifacts, published_lora
from tests.support.card_inputs import TRIGGER, card_inputs
from tests.support.publish_job import CANARY, assert_no_canary, make_job


def _lora(path: Path, keys: tuple[str, ...] = ("diffusion_model.blocks.0.self_attn.q",)) -> None:
    tensors = {}
    for i, key in enumerate(keys):
        tensors[f"{key}.lora_A.weight"] = torch.full((4, 8), float(i + 1), dtype=torch.bfloat16)
        tensors[f"{key}.lora_B.weight"] = torch.arange(32, dtype=torch.bfloat16).reshape(8, 4)
    save_file(tensors, str(path), metadata={"format": "pt"})


def test_the_i2v_lora_says_its_base_model_task_and_pipeline(tmp_path: Path) -> None:
    inputs = card_inputs(tmp_path, "wan14b_i2v", training_values={"lora_rank": 4, "epochs": 2})
    _lora(inputs.lora_path)
    meta = lora_metadata(inputs, inputs.lora_path)
    assert meta["dps_base_model"] == meta["ss_sd_model_name"] == "Wan-AI/Wan2.1-I2V-14B-480P"
    assert meta["dps_task"] == "image-to-video"
    assert meta["dps_pipeline"] == "WanImageToVideoPipeline"
    assert meta["modelspec.architecture"] == "wan-2.1-i2v-14b-480p/lora"
    assert meta["modelspec.trigger_phrase"] == meta["dps_trigger_word"] == TRIGGER
    assert meta["ss_network_dim"] == meta["ss_network_alpha"] == "4"
    assert meta["ss_num_epochs"] == "2"
    assert meta["dps_model_type"] == "wan14b_i2v"
    assert meta["dps_job_id"] == inputs.job_id
    assert meta["dps_format"] == "peft"


def test_annotating_keeps_every_tensor_and_adds_the_metadata(tmp_path: Path) -> None:
    source, dest = tmp_path / "a.safetensors", tmp_path / "out" / "a.safetensors"
    _lora(source, ("diffusion_model.x", "diffusion_model.y"))
    annotate(source, dest, {"dps_job_id": "j1", "modelspec.title": "Ünïcode title"})
    with safe_open(str(dest), framework="pt") as handle:
        assert handle.metadata() == {
            "format": "pt",
            "dps_job_id": "j1",
            "modelspec.title": "Ünïcode title",
        }
    before, after = load_file(str(source)), load_file(str(dest))
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    mtime = dest.stat().st_mtime_ns
    annotate(source, dest, {"dps_job_id": "j1", "modelspec.title": "Ünïcode title"})
    assert dest.stat().st_mtime_ns == mtime  # the same publish again writes nothing
    annotate(source, dest, {"dps_job_id": "j2"})
    with safe_open(str(dest), framework="pt") as handle:
        assert (handle.metadata() or {})["dps_job_id"] == "j2"


def test_renaming_changes_only_the_names(tmp_path: Path) -> None:
    source, dest = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    save_file(
        {
            "lora_te1_encoder_layers_0_mlp_fc1.lora_down.weight": torch.ones(4, 8),
            "lora_unet_down_blocks_1_proj_in.lora_down.weight": torch.zeros(4, 8),
        },
        str(source),
    )
    annotate(source, dest, {}, (("lora_te1_encoder_", "lora_te1_text_model_encoder_"),))
    after = load_file(str(dest))
    assert set(after) == {
        "lora_te1_text_model_encoder_layers_0_mlp_fc1.lora_down.weight",
        "lora_unet_down_blocks_1_proj_in.lora_down.weight",
    }
    assert torch.equal(
        after["lora_te1_text_model_encoder_layers_0_mlp_fc1.lora_down.weight"], torch.ones(4, 8)
    )
    with safe_open(str(dest), framework="pt") as handle:
        note = (handle.metadata() or {})["dps_renamed"]
    assert note == "lora_te1_encoder_ -> lora_te1_text_model_encoder_ (1 tensors)"


def test_the_descriptive_name_is_unique_per_job_and_safe_on_disk(tmp_path: Path) -> None:
    inputs = card_inputs(tmp_path, "wan14b_t2v")
    # the job id (card_inputs': job-<model type>) already names the model: not said twice
    assert descriptive_name(inputs) == "job-wan14b_t2v-epoch2.safetensors"
    assert descriptive_name(inputs, "my style/v2 ") == "my_style_v2-wan14b_t2v-epoch2.safetensors"
    assert (
        comfy_name(inputs, "wan14b_t2v-lora-abc")
        == "comfyui/wan14b_t2v-lora-abc-epoch2.safetensors"
    )


def test_no_secret_reaches_the_published_file(tmp_path: Path) -> None:
    inputs = make_job(tmp_path, {"method": "local", "local": {"path": "/x"}})
    published = published_lora(inputs)
    with safe_open(str(published), framework="pt") as handle:
        meta = handle.metadata() or {}
    assert meta["dps_job_id"] == inputs.job_id
    assert_no_canary(published.read_bytes(), str(meta))
    assert all(CANARY[k] not in published.read_text(errors="replace") for k in CANARY)
    names = [a.name for a in collect_artifacts(inputs)]
    assert sum(n.endswith(".safetensors") and "/" not in n for n in names) == 1  # one at the root
