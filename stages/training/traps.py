"""The diffusion-pipe traps a rendered config is checked for before anything is written.

Each would otherwise cost a model download and a GPU start to discover (reference/
diffusion-pipe.md §2, §3): a missing `save_every_*` key (assert), `alpha` in `[adapter]`
(NotImplementedError), more than three resolutions (`quit()` with exit 0), eval datasets as bare
strings (crash on a fresh run), a global batch larger than a dataset directory (every bucket
dropped: "Processed dataset was empty") and a `video_clip_mode` diffusion-pipe does not
implement. Each raises `ConfigError` naming the request field to fix.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from stages.errors import ConfigError

if TYPE_CHECKING:
    from stages.training.config import TrainerSpec

# models/base.py keeps multiple_overlapping commented out; anything else is a KeyError at caching.
VIDEO_CLIP_MODES: tuple[str, ...] = ("single_beginning", "single_middle")
# The service does multiple_overlapping itself: it cuts the clips (stages.training.clips) into
# JobPaths.clips_dir and diffusion-pipe takes each from its beginning.
CUT_BY_SERVICE = "multiple_overlapping"
SAVE_KEYS: tuple[str, ...] = ("save_every_n_epochs", "save_every_n_steps", "save_every_n_examples")
MAX_RESOLUTIONS = 3  # more makes diffusion-pipe quit() with exit code 0 (no training, no error)


def check_clip_mode(
    eff: Mapping[str, Any], allowed: tuple[str, ...] = (*VIDEO_CLIP_MODES, CUT_BY_SERVICE)
) -> None:
    mode = eff.get("video_clip_mode")
    if mode not in allowed:
        shown = mode if isinstance(mode, str) else repr(mode)
        raise ConfigError(
            "training.video_clip_mode",
            f'"{shown[:60]}" is not a clip mode diffusion-pipe runs; use one of: '
            f"{', '.join(allowed)}",
        )


def check_main(main: Mapping[str, Any]) -> None:
    """Traps in a rendered main config (defensive: the renderer should never produce them)."""
    if not any(key in main for key in SAVE_KEYS):
        raise ConfigError(
            "training.save_every_n_epochs",
            f"diffusion-pipe asserts that one of {', '.join(SAVE_KEYS)} is set",
        )
    adapter = main.get("adapter")
    if isinstance(adapter, Mapping) and "alpha" in adapter:
        raise ConfigError(
            "training.adapter.alpha",
            "diffusion-pipe refuses alpha (it is always equal to rank); remove it",
        )
    evals = main.get("eval_datasets", [])
    if not isinstance(evals, list) or not all(
        isinstance(e, Mapping) and {"name", "config"} <= set(e) for e in evals
    ):
        raise ConfigError(
            "eval_datasets",
            "must be a list of tables {name = ..., config = ...}; the bare-string form crashes "
            "a fresh diffusion-pipe run",
        )
    if "video_clip_mode" in main:
        check_clip_mode(main, VIDEO_CLIP_MODES)  # what the trainer is given, after any cutting


def check_dataset(dataset: Mapping[str, Any]) -> None:
    """Traps in a rendered dataset config."""
    scopes: list[Mapping[str, Any]] = [dataset, *dataset.get("directory", [])]
    for scope in scopes:
        resolutions = scope.get("resolutions", [])
        if isinstance(resolutions, list) and len(resolutions) > MAX_RESOLUTIONS:
            raise ConfigError(
                "training.resolution",
                f"{len(resolutions)} resolutions given; diffusion-pipe trains every image at "
                f"every resolution and quits (exit 0, no training) above {MAX_RESOLUTIONS}",
            )


def check_batch(
    spec: TrainerSpec,
    *,
    image_count: int | None,
    video_count: int | None,
    num_gpus: int = 1,
) -> None:
    """Refuse a global batch larger than a whole dataset directory.

    diffusion-pipe truncates each size bucket to a multiple of the global batch and drops smaller
    buckets. Bucket sizes are only known after caching, but a bucket never holds more than its
    directory's count x repeats, so a batch above that loses the directory for certain (and
    with one directory, the run dies with "Processed dataset was empty").
    """
    eff = spec.training
    gas = int(eff["gradient_accumulation_steps"])
    image_micro = spec.passthrough.get("image_micro_batch_size_per_gpu", eff["batch_size"])
    for medium, count, repeats, micro, repeats_field in (
        ("image", image_count, spec.image_repeats, image_micro, "image_repeats"),
        ("video", video_count, spec.video_repeats, eff["batch_size"], "video_repeats"),
    ):
        trains = spec.model.trains_images if medium == "image" else spec.model.trains_videos
        if not count or not trains or not isinstance(micro, int):  # 0: the folder is not listed
            continue
        items = count * repeats
        global_batch = micro * gas * num_gpus
        if global_batch > items:
            raise ConfigError(
                "training.batch_size",
                f"global batch {global_batch} (batch_size {micro} × "
                f"gradient_accumulation_steps {gas}"
                + (f" × {num_gpus} GPUs" if num_gpus > 1 else "")
                + f") is larger than the {items} {medium} items ({count} {medium}s × "
                f"dataset.{repeats_field} {repeats}); diffusion-pipe would drop them all. "
                f"Lower training.batch_size or training.gradient_accumulation_steps, or raise "
                f"dataset.{repeats_field}",
            )
