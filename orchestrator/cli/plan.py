"""`dpserve plan REQUEST`: the diffusion-pipe configs and downloads a request would produce.
Runs and downloads nothing."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import tomli_w
import typer

from events.redact import mask_keys
from orchestrator.cli.console import fail, read_request
from orchestrator.cli.models import download_text
from orchestrator.plan import trainer_spec
from stages.errors import ConfigError
from stages.training.config import JobPaths, render
from stages.training.traps import CUT_BY_SERVICE


def plan(
    request_file: Annotated[Path, typer.Argument(help="A request JSON: {'input': {...}} or bare")],
    root: Annotated[
        Path, typer.Option("--root", help="Working folder the job paths are shown under")
    ] = Path("./work"),
    images: Annotated[
        int | None, typer.Option("--images", min=0, help="Image count, to check the batch size")
    ] = None,
    videos: Annotated[
        int | None, typer.Option("--videos", min=0, help="Video count, to check the batch size")
    ] = None,
) -> None:
    """Print the diffusion-pipe configs and the downloads a request would produce. Runs and
    downloads nothing."""
    request = read_request(request_file)
    paths = JobPaths.for_job(root.absolute(), "JOB_ID")
    try:
        configs = render(trainer_spec(request), paths, image_count=images, video_count=videos)
    except ConfigError as exc:
        raise fail(f"{request_file}: {exc}", 1) from None
    entry = request.model
    # Plain writes: the TOML's [tables] would be read as rich markup.
    if entry.trains_videos and request.training.video_clip_mode == CUT_BY_SERVICE:
        sys.stdout.write(
            f"# video_clip_mode {CUT_BY_SERVICE}: before training, each video is cut into "
            f"overlapping clips of its frame bucket in {paths.clips_dir} (each with the video's "
            "caption); diffusion-pipe takes each clip from its beginning\n"
        )
    # Passthrough credentials (monitoring.wandb_api_key) would otherwise be printed.
    sys.stdout.write(f"# {paths.dataset_file}\n{tomli_w.dumps(mask_keys(configs.dataset))}\n")
    main_file = paths.config_dir / configs.main_file_name
    sys.stdout.write(f"# {main_file}\n{tomli_w.dumps(mask_keys(configs.main))}\n")
    sys.stdout.write(f"# weights, into {paths.models_root}\n")
    if not entry.downloads:
        sys.stdout.write(
            f"- built locally by {entry.built_by}: {paths.models_root / entry.weights_dir}\n"
        )
    for download in entry.downloads:
        gated = " [gated: needs a Hugging Face token that accepted the licence]"
        sys.stdout.write(
            f"- {download_text(download)} -> {paths.models_root / download.dest}"
            f"{gated if download.gated else ''}\n"
        )
