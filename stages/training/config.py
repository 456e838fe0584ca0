"""diffusion-pipe's two TOML files, rendered from the job's `TrainerSpec`.

Pure functions: `render(spec, paths)` returns the dataset and main configs as dicts and
`write_configs(...)` is the only function that touches the disk. The TOML text comes from
`tomli_w`, never from string formatting, so no user value can inject a key or a table.

Before anything is written, the configs are checked for the diffusion-pipe traps that otherwise
cost a model download and a GPU start to discover (`traps`). Keys the service owns are refused
here too (`owned_keys`), whatever the request let through. The golden files under
`tests/golden/` are rendered by `tests/support/golden.py`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from events.atomic import write_atomic
from events.store import job_path
from stages.errors import ConfigError
from stages.model_info import ModelInfo
from stages.training.model_table import model_key, model_table
from stages.training.owned_keys import (
    OWNED_ADAPTER,
    OWNED_MODEL,
    OWNED_OPTIMIZER,
    OWNED_TOP_LEVEL,
    TABLES,
)
from stages.training.traps import (
    CUT_BY_SERVICE,
    check_batch,
    check_clip_mode,
    check_dataset,
    check_main,
)

DATASET_FILE = "dataset.toml"
# Aspect-ratio bucketing as the known-good template's dataset.toml (peers.md §1.3). Without it
# diffusion-pipe centre-crops every image to a square.
AR_BUCKETS: Mapping[str, Any] = {
    "enable_ar_bucket": True,
    "min_ar": 0.5,
    "max_ar": 2.0,
    "num_ar_buckets": 7,
}


@dataclass(frozen=True)
class TrainerSpec:
    """What the configs are rendered from: the model, the effective training values and the
    dataset's repeats. Built once per job by the pipeline from the request and the catalogue."""

    model: ModelInfo
    # The `[model]` table without `type`; ModelPath values are filled from the models root.
    model_template: Mapping[str, Any]
    # Documented keys, then passthrough keys, then the model/adapter/optimizer tables.
    training: Mapping[str, Any]
    passthrough: Mapping[str, Any] = field(default_factory=dict)  # the undocumented top keys
    image_repeats: int = 1
    video_repeats: int = 5


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
        job = job_path(root, job_id)
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
    spec: TrainerSpec,
    paths: JobPaths,
    *,
    image_count: int | None = None,
    video_count: int | None = None,
    num_gpus: int = 1,
) -> RenderedConfigs:
    """Both configs for `spec`; raises ConfigError on a known diffusion-pipe trap.

    `image_count` / `video_count`, when the dataset has been unpacked, enable the batch-size
    check; left out, it is skipped.
    """
    check_clip_mode(spec.training)
    dataset = render_dataset(spec, paths, image_count=image_count, video_count=video_count)
    main = render_main(spec, paths)
    check_dataset(dataset)
    check_main(main)
    check_batch(spec, image_count=image_count, video_count=video_count, num_gpus=num_gpus)
    return RenderedConfigs(spec.model.model_type, dataset, main)


def preflight(spec: TrainerSpec) -> None:
    """The checks that need only the request, for use before any download: render against
    placeholder paths and discard the result."""
    render(spec, JobPaths.for_job(Path("/preflight"), "job"))


def _directories(
    spec: TrainerSpec,
    paths: JobPaths,
    image_count: int | None = None,
    video_count: int | None = None,
) -> list[dict[str, Any]]:
    """One entry per medium the model trains on (an i2v model given images would fail an assert)
    and the dataset has: diffusion-pipe stops on a directory that does not exist, and Wan given
    only videos has no images folder worth listing. A count of None (not known yet) keeps it."""
    model = spec.model
    cut = spec.training.get("video_clip_mode") == CUT_BY_SERVICE
    videos_dir = paths.clips_dir if cut else paths.videos_dir
    dirs: list[dict[str, Any]] = []
    if model.trains_images and paths.images_dir is not None and image_count != 0:
        dirs.append({"path": str(paths.images_dir), "num_repeats": spec.image_repeats})
    if model.trains_videos and videos_dir is not None and video_count != 0:
        dirs.append({"path": str(videos_dir), "num_repeats": spec.video_repeats})
    if not dirs:
        media = " or ".join(sorted(model.media))
        raise ConfigError("dataset", f"{model.display_name} needs a directory of {media}")
    return dirs


def render_dataset(
    spec: TrainerSpec,
    paths: JobPaths,
    *,
    image_count: int | None = None,
    video_count: int | None = None,
) -> dict[str, Any]:
    """The dataset TOML as a dict: one `[[directory]]` per medium, each with its own repeats."""
    eff = spec.training
    dataset: dict[str, Any] = {"resolutions": [eff["resolution"]], **AR_BUCKETS}
    if spec.model.trains_videos:
        # Frame buckets mean nothing to an image model; 1 (images) is always added anyway.
        dataset["frame_buckets"] = list(eff["frame_buckets"])
    dataset["directory"] = _directories(spec, paths, image_count, video_count)
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


def render_main(spec: TrainerSpec, paths: JobPaths) -> dict[str, Any]:
    """The main TOML as a dict. Passthrough keys go to the top level, `training.model`,
    `.adapter` and `.optimizer` into those tables; keys the service owns are refused."""
    eff = spec.training
    main: dict[str, Any] = {
        "output_dir": str(paths.output_dir),
        "dataset": str(paths.dataset_file),
    }
    for seed_key, dp_key in _TOP_LEVEL:
        main[dp_key] = eff[seed_key]
    if spec.model.trains_videos:
        mode = eff["video_clip_mode"]
        main["video_clip_mode"] = "single_beginning" if mode == CUT_BY_SERVICE else mode

    owned_top = {*OWNED_TOP_LEVEL, *main, *TABLES}
    for key, value in spec.passthrough.items():
        if key in owned_top:
            raise ConfigError(f"training.{key}", _owned_reason(key, OWNED_TOP_LEVEL))
        main[key] = value

    for name, table, owned in (
        ("model", _model(spec, paths), OWNED_MODEL),
        ("adapter", _adapter(eff), OWNED_ADAPTER),
        ("optimizer", _optimizer(eff), OWNED_OPTIMIZER),
    ):
        given: dict[str, str] = {}  # rendered key -> the request's key
        for key, value in (eff.get(name) or {}).items():
            if key in owned:
                raise ConfigError(f"training.{name}.{key}", _owned_reason(key, owned))
            dp_key = model_key(spec.model.diffusion_pipe_type, key) if name == "model" else key
            if dp_key in given:  # transformer_dtype and diffusion_model_dtype, both given
                raise ConfigError(
                    f"training.{name}.{key}",
                    f'"{key}" and "{given[dp_key]}" both set {spec.model.display_name}\'s '
                    f'"{dp_key}"; give one',
                )
            given[dp_key] = key
            table[dp_key] = value
        main[name] = table
    return main


def _model(spec: TrainerSpec, paths: JobPaths) -> dict[str, Any]:
    return model_table(spec.model.diffusion_pipe_type, spec.model_template, str(paths.models_root))


def _adapter(eff: Mapping[str, Any]) -> dict[str, Any]:
    return {"type": "lora", "rank": eff["lora_rank"], "dtype": eff["lora_dtype"]}


def _optimizer(eff: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "type": eff["optimizer_type"],
        "lr": eff["learning_rate"],
        "betas": list(eff["optimizer_betas"]),
        "weight_decay": eff["optimizer_weight_decay"],
        "eps": eff["optimizer_eps"],
    }


def _owned_reason(key: str, owned: Mapping[str, str]) -> str:
    reason = owned.get(key, "is set by the service")
    return f'"{key}" {reason}' if reason.startswith("is ") else f'"{key}" cannot be set; {reason}'


# --- writing -----------------------------------------------------------------------------------


def write_configs(configs: RenderedConfigs, config_dir: Path) -> tuple[Path, Path]:
    """Write `dataset.toml` and `<model_type>.toml` into `config_dir`; returns (dataset, main)."""
    config_dir.mkdir(parents=True, exist_ok=True)
    dataset_path = config_dir / DATASET_FILE
    main_path = config_dir / configs.main_file_name
    write_atomic(dataset_path, configs.dataset_toml())
    write_atomic(main_path, configs.main_toml())
    return dataset_path, main_path
