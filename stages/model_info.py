"""What the stages know of the model a LoRA is trained for: a plain view of its catalogue entry.

The catalogue (`orchestrator.catalogue`) holds everything about a model; the stages get this
subset, built once per job, so no stage reads the catalogue or the request.
"""

from __future__ import annotations

from dataclasses import dataclass

from stages.verify.rules import LoraRules

# A generation argument of the card's snippet: its keyword and literal value.
CallArg = tuple[str, int | float | str]


@dataclass(frozen=True, slots=True)
class Licence:
    """The base model's licence, as the Hub's card metadata and the card body name it."""

    hub_id: str  # `license:`, one of the Hub's licence identifiers (docs/hub/repositories-licenses)
    name: str  # the licence's own name, for the card body
    link: str  # the licence text
    # `license_name`: only with hub_id "other" (the Hub's list names the common licences itself).
    slug: str | None = None


@dataclass(frozen=True, slots=True)
class ComfyFile:
    """A base-model file a ComfyUI workflow loads beside the LoRA."""

    name: str
    folder: str  # under ComfyUI/models/
    node: str  # the loader node that reads it


@dataclass(frozen=True, slots=True)
class Usage:
    """How the model card says to run the LoRA: Hub metadata, the diffusers snippet, ComfyUI."""

    base_model: str  # the canonical base repo (`base_model:`, the Hub's model tree)
    pipeline_tag: str  # text-to-image | text-to-video | image-to-video
    diffusers_repo: str  # the diffusers-layout repo the snippet loads (the base or its -Diffusers)
    pipeline_class: str  # the diffusers pipeline class that loads it
    call: tuple[CallArg, ...]  # explicit generation arguments, in the snippet's order
    comfy_node: str  # the LoRA loader node
    comfy_files: tuple[ComfyFile, ...]  # the base files the workflow loads
    vae_class: str | None = None  # loaded apart in float32, as diffusers' docs do (Wan)
    extra_pip: tuple[str, ...] = ()  # packages the pipeline needs beyond diffusers' own
    gated: bool = False  # the base repo is licence-gated: the download needs an accepting token
    diffusers_note: str | None = None  # a known limit of diffusers' loader for this LoRA
    # A converter in stages.publish.diffusers_copy: the LoRA is also published under diffusers'
    # names in diffusers/, and the snippet loads that copy (Z-Image).
    diffusers_copy: str | None = None
    # ModelSpec's `architecture` of the base (`<id>/lora` in the LoRA's metadata): Stability's
    # ids for SDXL and Flux, ours in their style for the rest.
    architecture: str = ""


class TrainsOn:
    """`trains_images` / `trains_videos`, from a `media` set ("images", "videos")."""

    __slots__ = ()
    media: frozenset[str]

    @property
    def trains_images(self) -> bool:
        return "images" in self.media

    @property
    def trains_videos(self) -> bool:
        return "videos" in self.media


@dataclass(frozen=True, slots=True)
class ModelInfo(TrainsOn):
    model_type: str
    display_name: str
    diffusion_pipe_type: str  # the `[model] type` diffusion-pipe dispatches on
    media: frozenset[str]  # "images", "videos"
    lora_file: str  # the file name diffusion-pipe saves the adapter under
    # The frame rate diffusion-pipe resamples videos to (16 for Wan 2.1); None for image models.
    video_fps: float | None = None
    licence: Licence | None = None  # the base model's licence (None: the tiny CPU model)
    usage: Usage | None = None  # how the model card says to run the LoRA (None: tiny)
    needs_flash_attn: bool = False  # the trainer's code for it asserts flash-attn (Wan)
    # How diffusion-pipe names this family's LoRA and where its base modules are read from:
    # the verify step's rules (None: not checked).
    lora_rules: LoraRules | None = None
