"""The model catalogue: one frozen entry per `model_type`, declared once as data.

Everything that differs between models (the diffusion-pipe `[model] type`, which media a model
trains on, the file name of the saved LoRA, the weights to download, the `[model]` table and the
training defaults) lives here, so the request schema, the TOML writer, the weights stage and the
docs read one table instead of scattering `if model_type == ...`.

Sources: the `[model]` keys follow reference/diffusion-pipe.md §2.2 and §6.3; downloads and
per-model defaults follow the Hearmeman templates (reference/peers.md §1.2, §1.3), with the two
mistakes of the existing serverless port fixed (SDXL's key is `checkpoint_path`; Z-Image needs the
Comfy files laid out flat plus Ostris' training adapter).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

from orchestrator.errors import UnknownModelTypeError
from stages.captions.joycaption import MODEL_ID as JOYCAPTION_ID
from stages.model_info import CallArg, ComfyFile, Licence, ModelInfo, TrainsOn, Usage
from stages.training.model_table import ModelPath, model_table
from stages.verify import rules
from stages.verify.rules import LoraRules
from stages.weights.sources import Built, HubFiles, Source, build_tiny, hub_cache_files

Medium = Literal["images", "videos"]

IMAGES: frozenset[Medium] = frozenset({"images"})
VIDEOS: frozenset[Medium] = frozenset({"videos"})
IMAGES_AND_VIDEOS: frozenset[Medium] = frozenset({"images", "videos"})

# The seed README's documented training defaults (its "Training Configuration" tables), in the
# README's order, with one deliberate change (checkpoint_every_n_minutes, below). Every model
# starts from these; an entry's `overrides` replace single keys.
# Sequences are tuples so the shared table cannot be mutated through one entry.
BASE_DEFAULTS: Mapping[str, Any] = MappingProxyType(
    {
        "epochs": 100,
        "learning_rate": 2e-5,
        "batch_size": 1,
        "gradient_accumulation_steps": 4,
        "gradient_clipping": 1.0,
        "warmup_steps": 100,
        "lora_rank": 32,
        "lora_dtype": "bfloat16",
        "save_every_n_epochs": 10,
        # The seed README says 120, but diffusion-pipe has no signal handling: a preempted worker
        # loses everything since the last checkpoint. 20 minutes bounds that loss.
        "checkpoint_every_n_minutes": 20,
        "save_dtype": "bfloat16",
        "optimizer_type": "adamw_optimi",
        "optimizer_betas": (0.9, 0.99),
        "optimizer_weight_decay": 0.01,
        "optimizer_eps": 1e-8,
        "video_clip_mode": "single_middle",
        "frame_buckets": (1, 33),
        "resolution": 1024,
        "activation_checkpointing": True,
        "caching_batch_size": 1,
        "eval_every_n_epochs": 1,
        "eval_before_first_step": True,
    }
)


@dataclass(frozen=True, slots=True)
class ModelEntry(TrainsOn):
    model_type: str
    display_name: str
    diffusion_pipe_type: str  # the `[model] type` value diffusion-pipe dispatches on
    gated: bool  # the weights need a Hugging Face token whose account accepted a licence
    media: frozenset[Medium]
    lora_file: str  # the file name diffusion-pipe saves the adapter under
    defaults: Mapping[str, Any]  # BASE_DEFAULTS with this entry's overrides applied
    downloads: tuple[HubFiles, ...] = ()
    # The `[model]` table without `type`; ModelPath values are filled from the models root.
    model_template: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    # Set when the weights are not downloaded but built on the worker (the tiny CPU model).
    built_by: str | None = None
    weights_dir: str = ""  # the folder under the models root that holds this model's weights
    # The frame rate diffusion-pipe resamples videos to (models/wan/wan.py: 16 for Wan 2.1).
    video_fps: float | None = None
    licence: Licence | None = None  # the base model's licence (the model card's `license`)
    usage: Usage | None = None  # the model card's base_model, pipeline_tag and snippets
    # diffusion-pipe's code for this model asserts flash-attn (Wan: models/wan/attention.py),
    # so a worker that cannot import it refuses the job at STARTING, before any download.
    needs_flash_attn: bool = False
    lora_rules: LoraRules | None = None  # what the verify step checks the saved LoRA against

    def model_table(self, models_root: str) -> dict[str, Any]:
        """diffusion-pipe's `[model]` table for weights under `models_root`."""
        return model_table(self.diffusion_pipe_type, self.model_template, models_root)

    def download_targets(self) -> tuple[str, ...]:
        """Every path (relative to the models root) that must exist before training."""
        if not self.downloads:
            return (self.weights_dir,)
        return tuple(t for d in self.downloads for t in d.targets())

    @property
    def info(self) -> ModelInfo:
        """What the stages are told about this model."""
        return ModelInfo(
            model_type=self.model_type,
            display_name=self.display_name,
            diffusion_pipe_type=self.diffusion_pipe_type,
            media=frozenset(self.media),
            lora_file=self.lora_file,
            video_fps=self.video_fps,
            licence=self.licence,
            usage=self.usage,
            needs_flash_attn=self.needs_flash_attn,
            lora_rules=self.lora_rules,
        )

    def sources(self) -> tuple[Source, ...]:
        """What the weights stage makes this model's files from."""
        if self.built_by is not None:
            return (Built(self.weights_dir or self.model_type, build_tiny, self.built_by),)
        return self.downloads


def _entry(
    model_type: str,
    display_name: str,
    diffusion_pipe_type: str,
    *,
    media: frozenset[Medium],
    lora_file: str = "adapter_model.safetensors",
    gated: bool = False,
    overrides: Mapping[str, Any] | None = None,
    downloads: tuple[HubFiles, ...] = (),
    model: Mapping[str, Any] | None = None,
    built_by: str | None = None,
    weights_dir: str = "",
    video_fps: float | None = None,
    licence: Licence | None = None,
    usage: Usage | None = None,
    needs_flash_attn: bool = False,
    lora_rules: LoraRules | None = None,
) -> ModelEntry:
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(BASE_DEFAULTS))
    if unknown:  # a misspelt override would otherwise be a silent no-op
        raise ValueError(f"{model_type}: overrides for unknown training keys {unknown}")
    return ModelEntry(
        model_type=model_type,
        display_name=display_name,
        diffusion_pipe_type=diffusion_pipe_type,
        gated=gated,
        media=media,
        lora_file=lora_file,
        defaults=MappingProxyType({**BASE_DEFAULTS, **overrides}),
        downloads=downloads,
        model_template=MappingProxyType(dict(model or {})),
        built_by=built_by,
        weights_dir=weights_dir or (downloads[0].dest if downloads else model_type),
        video_fps=video_fps,
        licence=licence,
        usage=usage,
        needs_flash_attn=needs_flash_attn,
        lora_rules=lora_rules,
    )


# Per-model training defaults from the Hearmeman templates (peers.md §1.3). Keys a template does
# not set keep the seed README's value (e.g. warmup 100 for SDXL, Qwen and Z-Image).
_IMAGE_LR = 2e-4  # Flux, SDXL, Qwen, Z-Image templates; the seed's single 2e-5 suits only Wan
_WAN = {"epochs": 200, "save_every_n_epochs": 10, "gradient_accumulation_steps": 4}
_WAN_MODEL = {"dtype": "bfloat16", "timestep_sample_method": "logit_normal"}
_WAN_FPS = 16.0
# What diffusers' from_single_file (loaders/single_file.py, _download_diffusers_model_config_
# from_hub, 0.42.1) fetches of the base repo it infers for a checkpoint: every config, tokenizer
# and vocabulary file, no weights. SDXL checkpoints map to this repo (single_file_utils.py).
SINGLE_FILE_CONFIG_PATTERNS = ("**/*.json", "*.json", "*.txt", "**/*.txt", "**/*.model")
SDXL_BASE_REPO = "stabilityai/stable-diffusion-xl-base-1.0"


# The model card's facts per base model. Licence ids are the Hub's (docs/hub/repositories-
# licenses: `apache-2.0`, `openrail++`; `other` plus license_name/license_link for the rest).
# Pipeline classes, repos and generation arguments follow diffusers 0.42.1 (each pipeline's
# EXAMPLE_DOC_STRING and __call__ defaults); ComfyUI files and folders follow ComfyUI_examples.
FLUX_DEV_LICENCE = Licence(
    "other",
    "FLUX.1 [dev] Non-Commercial License",
    "https://huggingface.co/black-forest-labs/FLUX.1-dev/blob/main/LICENSE.md",
    slug="flux-1-dev-non-commercial-license",
)
SDXL_LICENCE = Licence(
    "openrail++",
    "CreativeML Open RAIL++-M License",
    f"https://huggingface.co/{SDXL_BASE_REPO}/blob/main/LICENSE.md",
)
APACHE_2 = Licence(
    "apache-2.0", "Apache License 2.0", "https://www.apache.org/licenses/LICENSE-2.0"
)

_DIFFUSION_MODELS, _TEXT_ENCODERS, _VAE = "diffusion_models", "text_encoders", "vae"
_LOAD_DIFFUSION_MODEL, _LOAD_VAE = "UNETLoader (Load Diffusion Model)", "VAELoader (Load VAE)"
_WAN_TEXT = (
    ComfyFile("umt5_xxl_fp8_e4m3fn_scaled.safetensors", _TEXT_ENCODERS, "CLIPLoader, type wan"),
    ComfyFile("wan_2.1_vae.safetensors", _VAE, _LOAD_VAE),
)
_WAN_PIP = ("ftfy", "imageio", "imageio-ffmpeg")  # Wan's prompt cleaning; export_to_video
_WAN_T2V_480P: tuple[CallArg, ...] = (
    ("height", 480),
    ("width", 832),
    ("num_frames", 81),
    ("num_inference_steps", 50),
    ("guidance_scale", 5.0),
)


def _wan_usage(repo: str, diffusion_model: str, call: tuple[CallArg, ...]) -> Usage:
    i2v = "I2V" in repo
    files: tuple[ComfyFile, ...] = (
        ComfyFile(diffusion_model, _DIFFUSION_MODELS, _LOAD_DIFFUSION_MODEL),
        *_WAN_TEXT,
    )
    if i2v:
        files += (ComfyFile("clip_vision_h.safetensors", "clip_vision", "CLIPVisionLoader"),)
    return Usage(
        base_model=repo,
        pipeline_tag="image-to-video" if i2v else "text-to-video",
        diffusers_repo=f"{repo}-Diffusers",
        pipeline_class="WanImageToVideoPipeline" if i2v else "WanPipeline",
        call=call,
        comfy_node="LoraLoaderModelOnly",
        comfy_files=files,
        vae_class="AutoencoderKLWan",
        extra_pip=_WAN_PIP,
        architecture=repo.split("/")[1].lower().replace("wan2.1", "wan-2.1"),
    )


def _wan_download(repo: str) -> tuple[HubFiles, ...]:
    # The whole official folder: ckpt_path needs config.json, the VAE, the T5 and its tokenizer.
    return (HubFiles(repo, f"Wan/{repo.split('/')[1]}"),)


_ENTRIES: tuple[ModelEntry, ...] = (
    _entry(
        "flux",
        "Flux",
        "flux",
        licence=FLUX_DEV_LICENCE,
        usage=Usage(
            base_model="black-forest-labs/FLUX.1-dev",
            architecture="flux-1-dev",
            pipeline_tag="text-to-image",
            diffusers_repo="black-forest-labs/FLUX.1-dev",  # the repo has the diffusers layout
            pipeline_class="FluxPipeline",
            call=(
                ("height", 1024),
                ("width", 1024),
                ("num_inference_steps", 28),
                ("guidance_scale", 3.5),
            ),
            comfy_node="LoraLoaderModelOnly",
            comfy_files=(
                ComfyFile("flux1-dev.safetensors", _DIFFUSION_MODELS, _LOAD_DIFFUSION_MODEL),
                ComfyFile("clip_l.safetensors", _TEXT_ENCODERS, "DualCLIPLoader, type flux"),
                ComfyFile("t5xxl_fp16.safetensors", _TEXT_ENCODERS, "DualCLIPLoader, type flux"),
                ComfyFile("ae.safetensors", _VAE, _LOAD_VAE),
            ),
            gated=True,
        ),
        media=IMAGES,
        lora_file="pytorch_lora_weights.safetensors",
        lora_rules=rules.FLUX,
        gated=True,  # black-forest-labs/FLUX.1-dev is licence-gated
        overrides={"epochs": 80, "learning_rate": _IMAGE_LR},
        downloads=(
            HubFiles(
                "black-forest-labs/FLUX.1-dev",
                "flux",
                # diffusers_path reads the Diffusers subfolders; the BFL single files at the
                # repo root (about 24 GB) are never read.
                ignore_patterns=("flux1-dev.safetensors", "ae.safetensors", "*.jpg", "*.png"),
                gated=True,
            ),
        ),
        model={
            "diffusers_path": ModelPath("flux"),
            "dtype": "bfloat16",
            "transformer_dtype": "float8",
            "flux_shift": True,
        },
    ),
    _entry(
        "sdxl",
        "SDXL",
        "sdxl",
        licence=SDXL_LICENCE,
        usage=Usage(
            # Trained on timoshishi/sdXL_v10VAEFix: SDXL base 1.0 with the fixed VAE baked in.
            base_model=SDXL_BASE_REPO,
            architecture="stable-diffusion-xl-v1-base",
            pipeline_tag="text-to-image",
            diffusers_repo=SDXL_BASE_REPO,
            pipeline_class="StableDiffusionXLPipeline",
            call=(
                ("height", 1024),
                ("width", 1024),
                ("num_inference_steps", 30),
                ("guidance_scale", 5.0),
            ),
            # The kohya file holds text encoder LoRAs too (lora_te1_, lora_te2_): LoraLoader
            # applies them, LoraLoaderModelOnly would drop them.
            comfy_node="LoraLoader",
            comfy_files=(
                ComfyFile("sdXL_v10VAEFix.safetensors", "checkpoints", "CheckpointLoaderSimple"),
            ),
        ),
        media=IMAGES,
        lora_file="lora.safetensors",
        lora_rules=rules.SDXL,
        # The template's unet_lr / text_encoder_*_lr (1e-4) are left out on purpose: they would
        # override [optimizer].lr for every parameter group, so training.learning_rate would be
        # silently ignored. They can still be passed in training.model.
        overrides={
            "learning_rate": _IMAGE_LR,
            "batch_size": 2,
            "gradient_accumulation_steps": 1,
            "optimizer_type": "adamw8bit",
        },
        downloads=(
            HubFiles("timoshishi/sdXL_v10VAEFix", "sdxl", files=("sdXL_v10VAEFix.safetensors",)),
            # diffusion-pipe loads the checkpoint with from_single_file and no config=, so
            # diffusers asks the Hub for the SDXL base repo's configs and tokenizers at training
            # time. They are fetched here, into the trainer's HF cache, so training runs offline.
            hub_cache_files(SDXL_BASE_REPO, SINGLE_FILE_CONFIG_PATTERNS),
        ),
        # diffusion-pipe's key is checkpoint_path (the existing port wrote ckpt_path).
        model={
            "checkpoint_path": ModelPath("sdxl/sdXL_v10VAEFix.safetensors"),
            "dtype": "bfloat16",
        },
    ),
    _entry(
        "wan13",
        "Wan 1.3B",
        "wan",
        licence=APACHE_2,
        usage=_wan_usage(
            "Wan-AI/Wan2.1-T2V-1.3B", "wan2.1_t2v_1.3B_fp16.safetensors", _WAN_T2V_480P
        ),
        media=IMAGES_AND_VIDEOS,
        overrides=_WAN,
        downloads=_wan_download("Wan-AI/Wan2.1-T2V-1.3B"),
        lora_rules=rules.wan("Wan/Wan2.1-T2V-1.3B"),
        model={"ckpt_path": ModelPath("Wan/Wan2.1-T2V-1.3B"), **_WAN_MODEL},
        video_fps=_WAN_FPS,
        needs_flash_attn=True,
    ),
    _entry(
        "wan14b_t2v",
        "Wan 14B T2V",
        "wan",
        licence=APACHE_2,
        usage=_wan_usage(
            "Wan-AI/Wan2.1-T2V-14B",
            "wan2.1_t2v_14B_fp16.safetensors",
            (("height", 720), ("width", 1280), *_WAN_T2V_480P[2:]),  # the 14B's 720P
        ),
        media=IMAGES_AND_VIDEOS,
        overrides=_WAN,
        downloads=_wan_download("Wan-AI/Wan2.1-T2V-14B"),
        lora_rules=rules.wan("Wan/Wan2.1-T2V-14B"),
        model={"ckpt_path": ModelPath("Wan/Wan2.1-T2V-14B"), **_WAN_MODEL},
        video_fps=_WAN_FPS,
        needs_flash_attn=True,
    ),
    # diffusion-pipe asserts that i2v trains on videos only (the first frame is the condition).
    _entry(
        "wan14b_i2v",
        "Wan 14B I2V",
        "wan",
        licence=APACHE_2,
        usage=_wan_usage(
            "Wan-AI/Wan2.1-I2V-14B-480P", "wan2.1_i2v_480p_14B_fp16.safetensors", _WAN_T2V_480P
        ),
        media=VIDEOS,
        overrides=_WAN,
        downloads=_wan_download("Wan-AI/Wan2.1-I2V-14B-480P"),
        lora_rules=rules.wan("Wan/Wan2.1-I2V-14B-480P"),
        model={"ckpt_path": ModelPath("Wan/Wan2.1-I2V-14B-480P"), **_WAN_MODEL},
        video_fps=_WAN_FPS,
        needs_flash_attn=True,
    ),
    _entry(
        "qwen",
        "Qwen Image",
        "qwen_image",
        licence=APACHE_2,
        usage=Usage(
            base_model="Qwen/Qwen-Image",
            architecture="qwen-image",
            pipeline_tag="text-to-image",
            diffusers_repo="Qwen/Qwen-Image",
            pipeline_class="QwenImagePipeline",
            # true_cfg_scale applies only with a negative prompt (pipeline_qwenimage.py).
            call=(
                ("negative_prompt", " "),
                ("height", 1024),
                ("width", 1024),
                ("num_inference_steps", 50),
                ("true_cfg_scale", 4.0),
            ),
            comfy_node="LoraLoaderModelOnly",
            comfy_files=(
                ComfyFile(
                    "qwen_image_fp8_e4m3fn.safetensors", _DIFFUSION_MODELS, _LOAD_DIFFUSION_MODEL
                ),
                ComfyFile(
                    "qwen_2.5_vl_7b_fp8_scaled.safetensors",
                    _TEXT_ENCODERS,
                    "CLIPLoader, type qwen_image",
                ),
                ComfyFile("qwen_image_vae.safetensors", _VAE, _LOAD_VAE),
            ),
        ),
        media=IMAGES,
        overrides={
            "epochs": 80,
            "learning_rate": _IMAGE_LR,
            "save_every_n_epochs": 20,
            "gradient_accumulation_steps": 1,
        },
        downloads=(HubFiles("Qwen/Qwen-Image", "Qwen-Image"),),
        lora_rules=rules.QWEN_IMAGE,
        model={
            "diffusers_path": ModelPath("Qwen-Image"),
            "dtype": "bfloat16",
            "transformer_dtype": "float8",
            "timestep_sample_method": "logit_normal",
        },
    ),
    _entry(
        "z_image_turbo",
        "Z Image Turbo",
        "z_image",
        licence=APACHE_2,
        usage=Usage(
            base_model="Tongyi-MAI/Z-Image-Turbo",
            architecture="z-image-turbo",
            pipeline_tag="text-to-image",
            diffusers_repo="Tongyi-MAI/Z-Image-Turbo",
            pipeline_class="ZImagePipeline",
            # Turbo is step-distilled and runs without CFG (pipeline_z_image.py's example).
            call=(
                ("height", 1024),
                ("width", 1024),
                ("num_inference_steps", 8),
                ("guidance_scale", 0.0),
            ),
            comfy_node="LoraLoaderModelOnly",
            # diffusion-pipe saves ComfyUI's NextDiT names; diffusers 0.42's converter
            # (_convert_non_diffusers_z_image_lora_to_diffusers) maps neither the fused
            # attention.qkv nor attention.out, and drops them with a warning: a converted copy
            # is published beside the LoRA, and the snippet loads it.
            diffusers_copy="z_image",
            diffusers_note=(
                "`adapter_model.safetensors` is ComfyUI's format, as diffusion-pipe saves it "
                "(a fused `attention.qkv`, a bare `attention.out`). diffusers (0.42) would "
                "drop those attention layers, so `diffusers/adapter_model.safetensors` holds "
                "the same LoRA under diffusers' names (`to_q`/`to_k`/`to_v`, `to_out.0`): "
                "load that one in diffusers, the other in ComfyUI."
            ),
            # The three files the weights stage downloads from Comfy-Org/z_image_turbo.
            comfy_files=(
                ComfyFile(
                    "z_image_turbo_bf16.safetensors", _DIFFUSION_MODELS, _LOAD_DIFFUSION_MODEL
                ),
                ComfyFile("qwen_3_4b.safetensors", _TEXT_ENCODERS, "CLIPLoader, type lumina2"),
                ComfyFile("ae.safetensors", _VAE, _LOAD_VAE),
            ),
        ),
        media=IMAGES,
        overrides={"epochs": 80, "learning_rate": _IMAGE_LR, "gradient_accumulation_steps": 1},
        lora_rules=rules.Z_IMAGE,
        downloads=(
            HubFiles(
                "Comfy-Org/z_image_turbo",
                "z_image",
                files=(
                    "split_files/diffusion_models/z_image_turbo_bf16.safetensors",
                    "split_files/vae/ae.safetensors",
                    "split_files/text_encoders/qwen_3_4b.safetensors",
                ),
                flatten=True,  # the existing port left them under split_files/
            ),
            # Turbo is step-distilled; training on it directly breaks the distillation, so
            # Ostris' adapter is merged in before training (the existing port never fetched it).
            HubFiles(
                "ostris/zimage_turbo_training_adapter",
                "z_image",
                files=("zimage_turbo_training_adapter_v2.safetensors",),
            ),
        ),
        model={
            "diffusion_model": ModelPath("z_image/z_image_turbo_bf16.safetensors"),
            "vae": ModelPath("z_image/ae.safetensors"),
            "text_encoders": (
                MappingProxyType(
                    {"path": ModelPath("z_image/qwen_3_4b.safetensors"), "type": "lumina2"}
                ),
            ),
            "merge_adapters": (ModelPath("z_image/zimage_turbo_training_adapter_v2.safetensors"),),
            "dtype": "bfloat16",
        },
    ),
    # Not a public model: a tiny CPU model (minipipe) for tests and local runs, built on the
    # worker instead of downloaded. Its defaults are shrunk so an end-to-end CPU run takes
    # seconds, not hours.
    _entry(
        "tiny",
        "Tiny (minipipe, CPU)",
        "tiny",
        media=IMAGES,  # minipipe trains on images; video jobs need a GPU model
        overrides={
            "epochs": 2,
            "resolution": 64,
            "lora_rank": 4,
            "warmup_steps": 0,
            "gradient_accumulation_steps": 1,
            "save_every_n_epochs": 1,
        },
        built_by="minipipe",
        lora_rules=rules.TINY,
        weights_dir="tiny",
        model={"path": ModelPath("tiny"), "dtype": "float32"},
    ),
)

CATALOGUE: Mapping[str, ModelEntry] = MappingProxyType({e.model_type: e for e in _ENTRIES})

# The seven models the seed README promises, in its order. Error messages list only these.
MODEL_TYPES: tuple[str, ...] = (
    "flux",
    "sdxl",
    "wan13",
    "wan14b_t2v",
    "wan14b_i2v",
    "qwen",
    "z_image_turbo",
)
# Everything the request accepts: the public models plus the CPU test model.
ALL_MODEL_TYPES: tuple[str, ...] = (*MODEL_TYPES, "tiny")


def get_model(model_type: str) -> ModelEntry:
    """The catalogue entry for `model_type`; raises UnknownModelTypeError (a ValueError)."""
    try:
        return CATALOGUE[model_type]
    except (KeyError, TypeError):  # TypeError: an unhashable value from a malformed request
        raise UnknownModelTypeError(model_type, MODEL_TYPES) from None


# JoyCaption beta one, the image captioner (stages.captions), fetched by the weights machinery
# like a base model: under the folder lock, with the completion manifest, from RunPod's cached
# models when the endpoint has it. Pinned to a commit of the model repo (about 15.8 GB: four
# bf16 shards, the tokenizer and the configs), so a change upstream cannot change the captions.
JOYCAPTION_REVISION = "ebf414ea497a020da0f82df3913e5b6cb8e9663a"
JOYCAPTION: tuple[Source, ...] = (
    HubFiles(
        JOYCAPTION_ID,
        "joycaption",
        revision=JOYCAPTION_REVISION,
        allow_patterns=("*.json", "*.safetensors", "*.jinja"),
    ),
)
