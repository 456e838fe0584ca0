"""The model catalogue: the seed's seven models plus the CPU test model, as data."""

from __future__ import annotations

import dataclasses

import pytest

from orchestrator.catalogue import (
    ALL_MODEL_TYPES,
    BASE_DEFAULTS,
    CATALOGUE,
    MODEL_TYPES,
    UnknownModelTypeError,
    _entry,
    get_model,
)

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
    "checkpoint_every_n_minutes": 120,
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
        {"images", "videos"},
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


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_public_models_default_to_the_seed_readme_values(model_type: str) -> None:
    defaults = {k: _plain(v) for k, v in get_model(model_type).defaults.items()}
    assert defaults == SEED_DEFAULTS
    assert list(defaults) == list(SEED_DEFAULTS)  # the README's order


def test_base_defaults_are_the_seed_defaults() -> None:
    assert {k: _plain(v) for k, v in BASE_DEFAULTS.items()} == SEED_DEFAULTS


def test_tiny_overrides_make_cpu_runs_quick_and_keep_everything_else() -> None:
    tiny = get_model("tiny").defaults
    assert tiny["epochs"] < SEED_DEFAULTS["epochs"]
    assert tiny["resolution"] <= 128
    assert set(tiny) == set(SEED_DEFAULTS)
    changed = {k for k in SEED_DEFAULTS if _plain(tiny[k]) != SEED_DEFAULTS[k]}
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
    entry = _entry("x", "X", "x", media=frozenset({"images"}), overrides={"learning_rate": 2e-4})
    assert entry.defaults["learning_rate"] == 2e-4
    assert get_model("qwen").defaults["learning_rate"] == 2e-5
    assert BASE_DEFAULTS["learning_rate"] == 2e-5
