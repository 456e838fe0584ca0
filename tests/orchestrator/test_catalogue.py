"""The model catalogue: the seed's seven models plus the CPU test model, as data."""

from __future__ import annotations

import dataclasses

import pytest

from orchestrator.catalogue import (
    ALL_MODEL_TYPES,
    BASE_DEFAULTS,
    CATALOGUE,
    MODEL_TYPES,
    _entry,
    get_model,
)
from orchestrator.errors import UnknownModelTypeError
from stages.weights.sources import HubFiles

# The seed README's "Training Configuration" tables, typed out by hand (not read from the code).
SEED_DEFAULTS = {
    "epochs": 100,
    "learning_rate": 2e-5,
    "batch_size": 1,
    "gradient_accumulation_steps": 4,
    "gradient_clipping": 1.0,
    "warmup_steps": 100,
    "lora_rank": 32,
    "lora_dtype": "bfloat16",
    "save_every_n_epochs": 10,
    "checkpoint_every_n_minutes": 120,  # lowered to 20 on purpose, see below
    "save_dtype": "bfloat16",
    "optimizer_type": "adamw_optimi",
    "optimizer_betas": [0.9, 0.99],
    "optimizer_weight_decay": 0.01,
    "optimizer_eps": 1e-8,
    "video_clip_mode": "single_middle",
    "frame_buckets": [1, 33],
    "resolution": 1024,
    "activation_checkpointing": True,
    "caching_batch_size": 1,
    "eval_every_n_epochs": 1,
    "eval_before_first_step": True,
}

# model_type: (display name, diffusion-pipe type, gated, media, lora file)
EXPECTED = {
    "flux": ("Flux", "flux", True, {"images"}, "pytorch_lora_weights.safetensors"),
    "sdxl": ("SDXL", "sdxl", False, {"images"}, "lora.safetensors"),
    "wan13": ("Wan 1.3B", "wan", False, {"images", "videos"}, "adapter_model.safetensors"),
    "wan14b_t2v": ("Wan 14B T2V", "wan", False, {"images", "videos"}, "adapter_model.safetensors"),
    "wan14b_i2v": ("Wan 14B I2V", "wan", False, {"videos"}, "adapter_model.safetensors"),
    "qwen": ("Qwen Image", "qwen_image", False, {"images"}, "adapter_model.safetensors"),
    "z_image_turbo": ("Z Image Turbo", "z_image", False, {"images"}, "adapter_model.safetensors"),
    "tiny": (
        "Tiny (minipipe, CPU)",
        "tiny",
        False,
        {"images"},
        "adapter_model.safetensors",
    ),
}


def _plain(value: object) -> object:
    return list(value) if isinstance(value, tuple) else value


def test_public_model_types_are_the_seeds_seven_in_order() -> None:
    assert MODEL_TYPES == (
        "flux",
        "sdxl",
        "wan13",
        "wan14b_t2v",
        "wan14b_i2v",
        "qwen",
        "z_image_turbo",
    )
    assert (*MODEL_TYPES, "tiny") == ALL_MODEL_TYPES
    assert set(CATALOGUE) == set(ALL_MODEL_TYPES)


@pytest.mark.parametrize("model_type", ALL_MODEL_TYPES)
def test_entry_fields(model_type: str) -> None:
    entry = get_model(model_type)
    display, dp_type, gated, media, lora_file = EXPECTED[model_type]
    assert entry.model_type == model_type
    assert entry.display_name == display
    assert entry.diffusion_pipe_type == dp_type
    assert entry.gated is gated
    assert entry.media == frozenset(media)
    assert entry.lora_file == lora_file
    assert entry.trains_images is ("images" in media)
    assert entry.trains_videos is ("videos" in media)


# The known-good Hearmeman templates (peers.md §1.3), typed out by hand: what each model changes
# from the seed README. Keys a template does not set keep the seed's value.
TEMPLATE_OVERRIDES: dict[str, dict[str, object]] = {
    "flux": {"epochs": 80, "learning_rate": 2e-4},
    "sdxl": {
        "learning_rate": 2e-4,
        "batch_size": 2,
        "gradient_accumulation_steps": 1,
        "optimizer_type": "adamw8bit",
    },
    "wan13": {"epochs": 200},
    "wan14b_t2v": {"epochs": 200},
    "wan14b_i2v": {"epochs": 200},
    "qwen": {
        "epochs": 80,
        "learning_rate": 2e-4,
        "save_every_n_epochs": 20,
        "gradient_accumulation_steps": 1,
    },
    "z_image_turbo": {"epochs": 80, "learning_rate": 2e-4, "gradient_accumulation_steps": 1},
}
# The one deliberate change for every model: the seed's 120 minutes can lose two hours of
# training on preemption.
OUR_CHANGES = {"checkpoint_every_n_minutes": 20}


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_public_models_default_to_their_template_values(model_type: str) -> None:
    defaults = {k: _plain(v) for k, v in get_model(model_type).defaults.items()}
    assert defaults == {**SEED_DEFAULTS, **OUR_CHANGES, **TEMPLATE_OVERRIDES[model_type]}
    assert list(defaults) == list(SEED_DEFAULTS)  # the README's order


def test_learning_rates_follow_the_templates() -> None:
    lrs = {t: get_model(t).defaults["learning_rate"] for t in MODEL_TYPES}
    assert {t for t, lr in lrs.items() if lr == 2e-5} == {"wan13", "wan14b_t2v", "wan14b_i2v"}
    assert {t for t, lr in lrs.items() if lr == 2e-4} == {"flux", "sdxl", "qwen", "z_image_turbo"}


def test_every_model_checkpoints_every_20_minutes() -> None:
    assert {get_model(t).defaults["checkpoint_every_n_minutes"] for t in ALL_MODEL_TYPES} == {20}


def test_base_defaults_are_the_seed_defaults_but_for_checkpointing() -> None:
    assert {k: _plain(v) for k, v in BASE_DEFAULTS.items()} == {**SEED_DEFAULTS, **OUR_CHANGES}


def test_tiny_overrides_make_cpu_runs_quick_and_keep_everything_else() -> None:
    tiny = get_model("tiny").defaults
    assert tiny["epochs"] < SEED_DEFAULTS["epochs"]
    assert tiny["resolution"] <= 128
    assert set(tiny) == set(SEED_DEFAULTS)
    base = {**SEED_DEFAULTS, **OUR_CHANGES}
    changed = {k for k in base if _plain(tiny[k]) != base[k]}
    assert changed >= {"epochs", "resolution"}
    assert "optimizer_type" not in changed


def test_only_flux_is_gated() -> None:
    assert [t for t in ALL_MODEL_TYPES if get_model(t).gated] == ["flux"]


def test_unknown_model_type_error_is_clear() -> None:
    with pytest.raises(UnknownModelTypeError) as info:
        get_model("fluxx")
    assert isinstance(info.value, ValueError)
    assert str(info.value) == (
        'model_type "fluxx" is not implemented; use one of: '
        "flux, sdxl, wan13, wan14b_t2v, wan14b_i2v, qwen, z_image_turbo"
    )


def test_unhashable_model_type_is_the_same_clear_error() -> None:
    with pytest.raises(UnknownModelTypeError):
        get_model(["flux"])  # type: ignore[arg-type]


def test_entries_and_defaults_are_read_only() -> None:
    entry = get_model("qwen")
    with pytest.raises(dataclasses.FrozenInstanceError):
        entry.lora_file = "x"  # type: ignore[misc]
    with pytest.raises(TypeError):
        entry.defaults["epochs"] = 1  # type: ignore[index]
    with pytest.raises(TypeError):
        BASE_DEFAULTS["epochs"] = 1  # type: ignore[index]
    assert isinstance(entry.defaults["frame_buckets"], tuple)


def test_a_misspelt_override_is_refused() -> None:
    with pytest.raises(ValueError, match="epoch"):
        _entry("x", "X", "x", media=frozenset({"images"}), overrides={"epoch": 3})


def test_per_model_override_changes_only_that_model() -> None:
    entry = _entry("x", "X", "x", media=frozenset({"images"}), overrides={"learning_rate": 3e-4})
    assert entry.defaults["learning_rate"] == 3e-4
    assert get_model("qwen").defaults["learning_rate"] == 2e-4
    assert BASE_DEFAULTS["learning_rate"] == 2e-5


# --- weights and the [model] table --------------------------------------------------------------

# model_type: the [model] table for weights under /m, typed out from diffusion-pipe.md §2.2.
EXPECTED_MODEL_TABLES: dict[str, dict[str, object]] = {
    "flux": {
        "type": "flux",
        "diffusers_path": "/m/flux",
        "dtype": "bfloat16",
        "transformer_dtype": "float8",
        "flux_shift": True,
    },
    "sdxl": {
        "type": "sdxl",
        "checkpoint_path": "/m/sdxl/sdXL_v10VAEFix.safetensors",
        "dtype": "bfloat16",
    },
    "wan13": {
        "type": "wan",
        "ckpt_path": "/m/Wan/Wan2.1-T2V-1.3B",
        "dtype": "bfloat16",
        "timestep_sample_method": "logit_normal",
    },
    "wan14b_t2v": {
        "type": "wan",
        "ckpt_path": "/m/Wan/Wan2.1-T2V-14B",
        "dtype": "bfloat16",
        "timestep_sample_method": "logit_normal",
    },
    "wan14b_i2v": {
        "type": "wan",
        "ckpt_path": "/m/Wan/Wan2.1-I2V-14B-480P",
        "dtype": "bfloat16",
        "timestep_sample_method": "logit_normal",
    },
    "qwen": {
        "type": "qwen_image",
        "diffusers_path": "/m/Qwen-Image",
        "dtype": "bfloat16",
        "transformer_dtype": "float8",
        "timestep_sample_method": "logit_normal",
    },
    "z_image_turbo": {
        "type": "z_image",
        "diffusion_model": "/m/z_image/z_image_turbo_bf16.safetensors",
        "vae": "/m/z_image/ae.safetensors",
        "text_encoders": [{"path": "/m/z_image/qwen_3_4b.safetensors", "type": "lumina2"}],
        "merge_adapters": ["/m/z_image/zimage_turbo_training_adapter_v2.safetensors"],
        "dtype": "bfloat16",
    },
    "tiny": {"type": "tiny", "path": "/m/tiny", "dtype": "float32"},
}


@pytest.mark.parametrize("model_type", ALL_MODEL_TYPES)
def test_model_table(model_type: str) -> None:
    assert get_model(model_type).model_table("/m") == EXPECTED_MODEL_TABLES[model_type]


@pytest.mark.parametrize("model_type", ALL_MODEL_TYPES)
def test_every_model_path_is_something_the_downloads_leave_behind(model_type: str) -> None:
    entry = get_model(model_type)
    targets = {f"/m/{t}" for t in entry.download_targets()}

    def paths(value: object) -> list[str]:
        if isinstance(value, str):
            return [value] if value.startswith("/m/") else []
        if isinstance(value, dict):
            return [p for v in value.values() for p in paths(v)]
        if isinstance(value, list):
            return [p for v in value for p in paths(v)]
        return []

    found = paths(entry.model_table("/m"))
    assert found
    assert set(found) <= targets


def test_model_table_is_a_fresh_copy() -> None:
    entry = get_model("z_image_turbo")
    table = entry.model_table("/m")
    table["text_encoders"][0]["path"] = "/elsewhere"
    assert entry.model_table("/m")["text_encoders"][0]["path"] == "/m/z_image/qwen_3_4b.safetensors"


def test_z_image_downloads_are_flattened_and_include_the_training_adapter() -> None:
    comfy, adapter = get_model("z_image_turbo").downloads
    assert comfy.repo_id == "Comfy-Org/z_image_turbo"
    assert comfy.files == (
        "split_files/diffusion_models/z_image_turbo_bf16.safetensors",
        "split_files/vae/ae.safetensors",
        "split_files/text_encoders/qwen_3_4b.safetensors",
    )
    assert comfy.targets() == (
        "z_image/z_image_turbo_bf16.safetensors",
        "z_image/ae.safetensors",
        "z_image/qwen_3_4b.safetensors",
    )
    assert adapter.repo_id == "ostris/zimage_turbo_training_adapter"
    assert adapter.targets() == ("z_image/zimage_turbo_training_adapter_v2.safetensors",)


def test_download_repos() -> None:
    repos = {t: [d.repo_id for d in get_model(t).downloads] for t in ALL_MODEL_TYPES}
    assert repos == {
        "flux": ["black-forest-labs/FLUX.1-dev"],
        "sdxl": ["timoshishi/sdXL_v10VAEFix", "stabilityai/stable-diffusion-xl-base-1.0"],
        "wan13": ["Wan-AI/Wan2.1-T2V-1.3B"],
        "wan14b_t2v": ["Wan-AI/Wan2.1-T2V-14B"],
        "wan14b_i2v": ["Wan-AI/Wan2.1-I2V-14B-480P"],
        "qwen": ["Qwen/Qwen-Image"],
        "z_image_turbo": ["Comfy-Org/z_image_turbo", "ostris/zimage_turbo_training_adapter"],
        "tiny": [],
    }
    # Only Flux's repo is gated, and the entry says so too.
    gated = {d.repo_id for t in ALL_MODEL_TYPES for d in get_model(t).downloads if d.gated}
    assert gated == {"black-forest-labs/FLUX.1-dev"}


def test_tiny_is_built_locally_not_downloaded() -> None:
    tiny = get_model("tiny")
    assert tiny.downloads == ()
    assert tiny.built_by == "minipipe"
    assert tiny.download_targets() == ("tiny",)
    assert all(get_model(t).built_by is None for t in MODEL_TYPES)


def test_unflattened_download_keeps_the_repo_layout() -> None:
    download = HubFiles("o/r", "d", files=("a/b.safetensors",))
    assert download.targets() == ("d/a/b.safetensors",)
    assert HubFiles("o/r", "whole").targets() == ("whole",)


# The model card's facts, typed out by hand: (licence id, base_model, pipeline_tag, LoRA node).
CARD_FACTS = {
    "flux": ("other", "black-forest-labs/FLUX.1-dev", "text-to-image", "LoraLoaderModelOnly"),
    "sdxl": (
        "openrail++",
        "stabilityai/stable-diffusion-xl-base-1.0",
        "text-to-image",
        "LoraLoader",  # the kohya file has text encoder LoRAs too
    ),
    "wan13": ("apache-2.0", "Wan-AI/Wan2.1-T2V-1.3B", "text-to-video", "LoraLoaderModelOnly"),
    "wan14b_t2v": ("apache-2.0", "Wan-AI/Wan2.1-T2V-14B", "text-to-video", "LoraLoaderModelOnly"),
    "wan14b_i2v": (
        "apache-2.0",
        "Wan-AI/Wan2.1-I2V-14B-480P",
        "image-to-video",
        "LoraLoaderModelOnly",
    ),
    "qwen": ("apache-2.0", "Qwen/Qwen-Image", "text-to-image", "LoraLoaderModelOnly"),
    "z_image_turbo": (
        "apache-2.0",
        "Tongyi-MAI/Z-Image-Turbo",
        "text-to-image",
        "LoraLoaderModelOnly",
    ),
}


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_card_facts_reach_the_stages(model_type: str) -> None:
    info = get_model(model_type).info
    assert info.licence is not None
    assert info.usage is not None
    hub_id, base, tag, node = CARD_FACTS[model_type]
    assert (info.licence.hub_id, info.usage.base_model, info.usage.pipeline_tag) == (
        hub_id,
        base,
        tag,
    )
    assert info.usage.comfy_node == node
    # license_name only where the Hub's list has no id for the licence.
    assert (info.licence.slug is not None) is (hub_id == "other")
    assert info.usage.comfy_files


def test_wan_snippets_load_the_diffusers_repos_of_what_is_trained() -> None:
    for model_type in ("wan13", "wan14b_t2v", "wan14b_i2v"):
        entry = get_model(model_type)
        usage = entry.info.usage
        assert usage is not None
        assert usage.base_model == entry.downloads[0].repo_id
        assert usage.diffusers_repo == f"{entry.downloads[0].repo_id}-Diffusers"


def test_z_image_comfy_files_are_the_downloaded_ones() -> None:
    entry = get_model("z_image_turbo")
    usage = entry.info.usage
    assert usage is not None
    files = entry.downloads[0].files
    assert files is not None
    downloaded = {f.rsplit("/", 1)[-1] for f in files}
    assert {f.name for f in usage.comfy_files} == downloaded


def test_tiny_has_no_card_facts() -> None:
    info = get_model("tiny").info
    assert info.licence is None
    assert info.usage is None
