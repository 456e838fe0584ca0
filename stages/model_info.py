"""What the stages know of the model a LoRA is trained for: a plain view of its catalogue entry.

The catalogue (`orchestrator.catalogue`) holds everything about a model; the stages get this
subset, built once per job, so no stage reads the catalogue or the request.
"""

from __future__ import annotations

from dataclasses import dataclass


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
    base_repo: str | None = None  # the Hub repo the weights come from (named in the model card)
    licence: str | None = None  # the base model's licence, named in the model card
    needs_flash_attn: bool = False  # the trainer's code for it asserts flash-attn (Wan)
