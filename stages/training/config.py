"""diffusion-pipe's two TOML files, rendered from a parsed request.

Pure functions: `render(request, paths)` returns the dataset and main configs as dicts and
`write_configs(...)` is the only function that touches the disk. The TOML text comes from
`tomli_w`, never from string formatting, so no user value can inject a key or a table.

Before anything is written, the configs are checked for the diffusion-pipe traps that otherwise
cost a model download and a GPU start to discover (reference/diffusion-pipe.md §2, §3): a missing
`save_every_*` key (assert), `alpha` in `[adapter]` (NotImplementedError), more than three
resolutions (`quit()` with exit 0), eval datasets as bare strings (crash on a fresh run), a global
batch larger than a dataset directory (every bucket dropped: "Processed dataset was empty") and a
`video_clip_mode` diffusion-pipe does not implement. Each raises `ConfigError` naming the field.

    python -m stages.training.config --regen-golden   # rewrite tests/golden/ from GOLDEN_*
"""

from __future__ import annotations

import argparse
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w

from orchestrator.catalogue import ALL_MODEL_TYPES, ModelEntry, get_model
from orchestrator.request import (
    OWNED_ADAPTER,
    OWNED_MODEL,
    OWNED_OPTIMIZER,
    OWNED_TOP_LEVEL,
    TABLES,
    TrainingRequest,
    effective_training,
    parse_request,
)
from stages.errors import ConfigError

DATASET_FILE = "dataset.toml"
# models/base.py keeps multiple_overlapping commented out; anything else is a KeyError at caching.
VIDEO_CLIP_MODES: tuple[str, ...] = ("single_beginning", "single_middle")
# The service does multiple_overlapping itself: it cuts the clips (stages.training.clips) into
# JobPaths.clips_dir and diffusion-pipe takes each from its beginning.
CUT_BY_SERVICE = "multiple_overlapping"
SAVE_KEYS: tuple[str, ...] = ("save_every_n_epochs", "save_every_n_steps", "save_every_n_examples")
MAX_RESOLUTIONS = 3  # more makes diffusion-pipe quit() with exit code 0 (no training, no error)
# Aspect-ratio bucketing as the known-good template's dataset.toml (peers.md §1.3). Without it
# diffusion-pipe centre-crops every image to a square.
AR_BUCKETS: Mapping[str, Any] = {
    "enable_ar_bucket": True,
    "min_ar": 0.5,
    "max_ar": 2.0,
    "num_ar_buckets": 7,
}


@dataclass(frozen=True, slots=True)
class JobPaths:
    """The folders one job's configs point at. Paths are written as given (make them absolute)."""

    config_dir: Path
    output_dir: Path
    models_root: Path
    images_dir: Path | None = None
    videos_dir: Path | None = None
    clips_dir: Path | None = None  # the cut clips, for multiple_overlapping

    @classmethod
    def for_job(cls, root: Path, job_id: str) -> JobPaths:
        """DESIGN.md's layout: `<root>/jobs/<id>/{config,output,dataset/*}` and `<root>/models`."""
        job = root / "jobs" / job_id
        return cls(
            config_dir=job / "config",
            output_dir=job / "output",
            models_root=root / "models",
            images_dir=job / "dataset" / "images",
            videos_dir=job / "dataset" / "videos",
            clips_dir=job / "dataset" / "clips",
        )

    @property
    def dataset_file(self) -> Path:
        return self.config_dir / DATASET_FILE


@dataclass(frozen=True, slots=True)
class RenderedConfigs:
    model_type: str
    dataset: dict[str, Any]
    main: dict[str, Any]

    @property
    def main_file_name(self) -> str:
        return f"{self.model_type}.toml"

    def dataset_toml(self) -> str:
        return tomli_w.dumps(self.dataset)

    def main_toml(self) -> str:
        return tomli_w.dumps(self.main)


# --- rendering ---------------------------------------------------------------------------------


def render(
    request: TrainingRequest,
    paths: JobPaths,
    *,
    image_count: int | None = None,
    video_count: int | None = None,
    num_gpus: int = 1,
) -> RenderedConfigs:
    """Both configs for `request`; raises ConfigError on a known diffusion-pipe trap.

    `image_count` / `video_count`, when the dataset has been unpacked, enable the batch-size
    check; left out, it is skipped.
    """
    entry = request.model
    eff = effective_training(request)
    _check_clip_mode(eff)
    dataset = render_dataset(request, paths, eff, image_count=image_count, video_count=video_count)
    main = render_main(request, paths, eff)
    check_dataset(dataset)
    check_main(main)
    check_batch(
        request, eff, entry, image_count=image_count, video_count=video_count, num_gpus=num_gpus
    )
    return RenderedConfigs(request.model_type, dataset, main)


def preflight(request: TrainingRequest) -> None:
    """The checks that need only the request, for use before any download: render against
    placeholder paths and discard the result."""
    render(request, JobPaths.for_job(Path("/preflight"), "job"))


def _directories(
    request: TrainingRequest,
    paths: JobPaths,
    eff: Mapping[str, Any],
    image_count: int | None = None,
    video_count: int | None = None,
) -> list[dict[str, Any]]:
    """One entry per medium the model trains on (an i2v model given images would fail an assert)
    and the dataset has: diffusion-pipe stops on a directory that does not exist, and Wan given
    only videos has no images folder worth listing. A count of None (not known yet) keeps it."""
    entry = request.model
    cut = eff.get("video_clip_mode") == CUT_BY_SERVICE
    videos_dir = paths.clips_dir if cut else paths.videos_dir
    dirs: list[dict[str, Any]] = []
    if entry.trains_images and paths.images_dir is not None and image_count != 0:
        dirs.append({"path": str(paths.images_dir), "num_repeats": request.dataset.image_repeats})
    if entry.trains_videos and videos_dir is not None and video_count != 0:
        dirs.append({"path": str(videos_dir), "num_repeats": request.dataset.video_repeats})
    if not dirs:
        media = " or ".join(sorted(entry.media))
        raise ConfigError("dataset", f"{entry.display_name} needs a directory of {media}")
    return dirs


def render_dataset(
    request: TrainingRequest,
    paths: JobPaths,
    eff: Mapping[str, Any] | None = None,
    *,
    image_count: int | None = None,
    video_count: int | None = None,
) -> dict[str, Any]:
    """The dataset TOML as a dict: one `[[directory]]` per medium, each with its own repeats."""
    eff = effective_training(request) if eff is None else eff
    dataset: dict[str, Any] = {"resolutions": [eff["resolution"]], **AR_BUCKETS}
    if request.model.trains_videos:
        # Frame buckets mean nothing to an image model; 1 (images) is always added anyway.
        dataset["frame_buckets"] = list(eff["frame_buckets"])
    dataset["directory"] = _directories(request, paths, eff, image_count, video_count)
    return dataset


# Seed field -> diffusion-pipe top-level key, in the order they are written.
_TOP_LEVEL: tuple[tuple[str, str], ...] = (
    ("epochs", "epochs"),
    ("batch_size", "micro_batch_size_per_gpu"),
    ("gradient_accumulation_steps", "gradient_accumulation_steps"),
    ("gradient_clipping", "gradient_clipping"),
    ("warmup_steps", "warmup_steps"),
    ("save_every_n_epochs", "save_every_n_epochs"),
    ("checkpoint_every_n_minutes", "checkpoint_every_n_minutes"),
    ("activation_checkpointing", "activation_checkpointing"),
    ("save_dtype", "save_dtype"),
    ("caching_batch_size", "caching_batch_size"),
    ("eval_every_n_epochs", "eval_every_n_epochs"),
    ("eval_before_first_step", "eval_before_first_step"),
)


def render_main(
    request: TrainingRequest, paths: JobPaths, eff: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The main TOML as a dict. Passthrough keys go to the top level, `training.model`,
    `.adapter` and `.optimizer` into those tables; keys the service owns are refused."""
    eff = effective_training(request) if eff is None else eff
    entry = request.model
    main: dict[str, Any] = {
        "output_dir": str(paths.output_dir),
        "dataset": str(paths.dataset_file),
    }
    for seed_key, dp_key in _TOP_LEVEL:
        main[dp_key] = eff[seed_key]
    if entry.trains_videos:
        mode = eff["video_clip_mode"]
        main["video_clip_mode"] = "single_beginning" if mode == CUT_BY_SERVICE else mode

    owned_top = {*OWNED_TOP_LEVEL, *main, *TABLES}
    for key, value in request.training.passthrough().items():
        if key in owned_top:
            raise ConfigError(f"training.{key}", _owned_reason(key, OWNED_TOP_LEVEL))
        main[key] = value

    model = entry.model_table(str(paths.models_root))
    adapter: dict[str, Any] = {"type": "lora", "rank": eff["lora_rank"], "dtype": eff["lora_dtype"]}
    optimizer: dict[str, Any] = {
        "type": eff["optimizer_type"],
        "lr": eff["learning_rate"],
        "betas": list(eff["optimizer_betas"]),
        "weight_decay": eff["optimizer_weight_decay"],
        "eps": eff["optimizer_eps"],
    }
    for name, table, owned in (
        ("model", model, OWNED_MODEL),
        ("adapter", adapter, OWNED_ADAPTER),
        ("optimizer", optimizer, OWNED_OPTIMIZER),
    ):
        for key, value in (eff.get(name) or {}).items():
            if key in owned:
                raise ConfigError(f"training.{name}.{key}", _owned_reason(key, owned))
            table[key] = value
        main[name] = table
    return main


def _owned_reason(key: str, owned: Mapping[str, str]) -> str:
    reason = owned.get(key, "is set by the service")
    return f'"{key}" {reason}' if reason.startswith("is ") else f'"{key}" cannot be set; {reason}'


# --- trap checks -------------------------------------------------------------------------------


def _check_clip_mode(
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
        _check_clip_mode(main, VIDEO_CLIP_MODES)  # what the trainer is given, after any cutting


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
    request: TrainingRequest,
    eff: Mapping[str, Any],
    entry: ModelEntry,
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
    gas = int(eff["gradient_accumulation_steps"])
    passthrough = request.training.passthrough()
    image_micro = passthrough.get("image_micro_batch_size_per_gpu", eff["batch_size"])
    for medium, count, repeats, micro, repeats_field in (
        ("image", image_count, request.dataset.image_repeats, image_micro, "image_repeats"),
        ("video", video_count, request.dataset.video_repeats, eff["batch_size"], "video_repeats"),
    ):
        trains = entry.trains_images if medium == "image" else entry.trains_videos
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


# --- writing -----------------------------------------------------------------------------------


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_configs(configs: RenderedConfigs, config_dir: Path) -> tuple[Path, Path]:
    """Write `dataset.toml` and `<model_type>.toml` into `config_dir`; returns (dataset, main)."""
    config_dir.mkdir(parents=True, exist_ok=True)
    dataset_path = config_dir / DATASET_FILE
    main_path = config_dir / configs.main_file_name
    _write_atomic(dataset_path, configs.dataset_toml())
    _write_atomic(main_path, configs.main_toml())
    return dataset_path, main_path


# --- golden files ------------------------------------------------------------------------------

GOLDEN_DIR = Path(__file__).resolve().parents[2] / "tests" / "golden"
GOLDEN_PATHS = JobPaths(
    config_dir=Path("/work/job/config"),
    output_dir=Path("/work/job/output"),
    models_root=Path("/models"),
    images_dir=Path("/work/job/dataset/images"),
    videos_dir=Path("/work/job/dataset/videos"),
    clips_dir=Path("/work/job/dataset/clips"),
)


def golden_request(model_type: str) -> TrainingRequest:
    """The fixed request each golden file is rendered from: catalogue defaults, both media where
    the model takes them, distinct repeats so a swapped mapping shows."""
    entry = get_model(model_type)
    dataset: dict[str, Any] = {"type": "precaptioned", "image_repeats": 2, "video_repeats": 5}
    if entry.trains_images:
        dataset["images_url"] = "https://example.com/images.zip"
    if entry.trains_videos:
        dataset["videos_url"] = "https://example.com/videos.zip"
    body: dict[str, Any] = {"model_type": model_type, "dataset": dataset}
    if entry.gated:
        body["api_keys"] = {"huggingface_token": "hf_golden"}
    return parse_request(body)


def golden_texts(model_type: str) -> dict[str, str]:
    configs = render(golden_request(model_type), GOLDEN_PATHS)
    return {"dataset.toml": configs.dataset_toml(), "main.toml": configs.main_toml()}


def regen_golden(directory: Path = GOLDEN_DIR) -> list[Path]:
    written: list[Path] = []
    for model_type in ALL_MODEL_TYPES:
        folder = directory / model_type
        folder.mkdir(parents=True, exist_ok=True)
        for name, text in golden_texts(model_type).items():
            (folder / name).write_text(text, encoding="utf-8")
            written.append(folder / name)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stages.training.config")
    parser.add_argument("--regen-golden", action="store_true", help="rewrite tests/golden/")
    parser.add_argument("--dir", type=Path, default=GOLDEN_DIR, help="golden folder")
    args = parser.parse_args(argv)
    if not args.regen_golden:
        parser.print_help()
        return 2
    for path in regen_golden(args.dir):
        print(path.relative_to(args.dir))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
