"""The main and dataset TOML files, read with diffusion-pipe's key names and defaults."""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

DTYPES: Mapping[str, torch.dtype] = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}

_TOP_KEYS = {
    "output_dir",
    "dataset",
    "epochs",
    "micro_batch_size_per_gpu",
    "gradient_accumulation_steps",
    "gradient_clipping",
    "warmup_steps",
    "lr_scheduler",
    "save_every_n_epochs",
    "save_every_n_steps",
    "checkpoint_every_n_minutes",
    "checkpoint_every_n_epochs",
    "activation_checkpointing",
    "save_dtype",
    "resume_from_checkpoint",
    "model",
    "adapter",
    "optimizer",
}
_MODEL_KEYS = {"type", "path", "dtype"}
_ADAPTER_KEYS = {"type", "rank", "dtype", "dropout", "init_from_existing"}
_OPTIMIZER_KEYS = {"type", "lr", "betas", "weight_decay", "eps"}
_DATASET_KEYS = {"resolutions", "enable_ar_bucket", "frame_buckets", "num_repeats", "directory"}
_DATASET_KEYS |= {"skip_empty_caption", "caption_prefix"}
_DIRECTORY_KEYS = {"path", "num_repeats", "skip_empty_caption", "caption_prefix"}


class ConfigError(ValueError):
    """A config file is missing a key, has a bad value, or names a missing file."""


@dataclass(frozen=True)
class DirectoryConfig:
    path: Path
    num_repeats: int
    skip_empty_caption: bool
    caption_prefix: str


@dataclass(frozen=True)
class DatasetConfig:
    path: Path
    resolutions: tuple[int, ...]
    directories: tuple[DirectoryConfig, ...]


@dataclass(frozen=True)
class TrainConfig:
    path: Path
    output_dir: Path
    dataset: DatasetConfig
    epochs: int
    micro_batch_size: int
    gradient_accumulation_steps: int
    gradient_clipping: float
    warmup_steps: int
    lr_scheduler: str
    save_every_n_epochs: int | None
    save_every_n_steps: int | None
    checkpoint_every_n_minutes: float | None
    checkpoint_every_n_epochs: int | None
    save_dtype: torch.dtype | None
    resume_from_checkpoint: bool | str | None
    model_path: Path
    model_dtype: torch.dtype
    rank: int
    adapter_dtype: torch.dtype
    lora_dropout: float
    init_from_existing: Path | None  # a saved LoRA folder to start from (not a resume)
    optimizer_type: str
    optimizer_kwargs: Mapping[str, Any]

    @property
    def global_batch_size(self) -> int:
        return self.micro_batch_size * self.gradient_accumulation_steps


def _warn_unknown(table: Mapping[str, Any], known: set[str], where: str) -> list[str]:
    return [
        f"WARNING: minipipe ignores unsupported key '{key}' in {where}"
        for key in sorted(set(table) - known)
    ]


def _require(table: Mapping[str, Any], key: str, where: str) -> Any:
    if key not in table:
        raise ConfigError(f"missing required key '{key}' in {where}")
    return table[key]


def _typed(value: Any, kind: type | tuple[type, ...], key: str, where: str) -> Any:
    # bool is an int subclass; a `true` where a number belongs is a mistake, not 1.
    if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
        raise ConfigError(f"'{key}' in {where} must be {kind}, got {value!r}")
    if not isinstance(value, kind):
        raise ConfigError(f"'{key}' in {where} must be {kind}, got {value!r}")
    return value


def _positive_int(table: Mapping[str, Any], key: str, where: str, default: int | None) -> int:
    value = table.get(key, default) if default is not None else _require(table, key, where)
    value = _typed(value, int, key, where)
    if value < 1:
        raise ConfigError(f"'{key}' in {where} must be >= 1, got {value}")
    return int(value)


def _optional_int(table: Mapping[str, Any], key: str, where: str) -> int | None:
    return None if key not in table else _positive_int(table, key, where, None)


def _dtype(name: Any, key: str, where: str) -> torch.dtype:
    if name not in DTYPES:
        raise ConfigError(f"'{key}' in {where} must be one of {sorted(DTYPES)}, got {name!r}")
    return DTYPES[name]


def _load_toml(path: Path, what: str) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{what} file not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{what} file {path} is not valid TOML: {exc}") from None


def load_dataset_config(path: Path) -> tuple[DatasetConfig, list[str]]:
    raw = _load_toml(path, "dataset")
    where = str(path)
    warnings = _warn_unknown(raw, _DATASET_KEYS, where)
    resolutions_raw = _require(raw, "resolutions", where)
    if not isinstance(resolutions_raw, list) or not resolutions_raw:
        raise ConfigError(f"'resolutions' in {where} must be a non-empty list")
    resolutions: list[int] = []
    for res in resolutions_raw:
        # [w, h] pairs are areas, as in diffusion-pipe: side = sqrt(w * h).
        if isinstance(res, list) and len(res) == 2 and all(isinstance(v, int) for v in res):
            resolutions.append(round((res[0] * res[1]) ** 0.5))
        elif isinstance(res, int) and not isinstance(res, bool) and res > 0:
            resolutions.append(res)
        else:
            raise ConfigError(f"bad entry {res!r} in 'resolutions' in {where}")
    if raw.get("enable_ar_bucket", False):
        warnings.append("WARNING: minipipe trains square buckets only; enable_ar_bucket ignored")
    if any(f != 1 for f in raw.get("frame_buckets", [1])):
        warnings.append("WARNING: minipipe trains images only; frame_buckets ignored")
    dirs_raw = _require(raw, "directory", where)
    if not isinstance(dirs_raw, list) or not dirs_raw:
        raise ConfigError(f"'directory' in {where} must be a non-empty [[directory]] list")
    directories: list[DirectoryConfig] = []
    for i, entry in enumerate(dirs_raw):
        dwhere = f"[[directory]] #{i + 1} of {where}"
        warnings += _warn_unknown(entry, _DIRECTORY_KEYS, dwhere)
        dpath = Path(_typed(_require(entry, "path", dwhere), str, "path", dwhere))
        if not dpath.is_dir():
            raise ConfigError(f"'path' in {dwhere} is not a directory: {dpath}")
        directories.append(
            DirectoryConfig(
                path=dpath,
                num_repeats=_positive_int(entry, "num_repeats", dwhere, raw.get("num_repeats", 1)),
                skip_empty_caption=bool(
                    entry.get("skip_empty_caption", raw.get("skip_empty_caption", True))
                ),
                caption_prefix=str(entry.get("caption_prefix", raw.get("caption_prefix", ""))),
            )
        )
    cfg = DatasetConfig(path=path, resolutions=tuple(resolutions), directories=tuple(directories))
    return cfg, warnings


def _model(raw: Mapping[str, Any], where: str) -> tuple[dict[str, Any], list[str]]:
    """The `[model]` table: minipipe trains `tiny` only."""
    model = _typed(_require(raw, "model", where), dict, "model", where)
    mwhere = f"[model] of {where}"
    warnings = _warn_unknown(model, _MODEL_KEYS, mwhere)
    model_type = _require(model, "type", mwhere)
    if model_type != "tiny":
        raise ConfigError(f"unsupported model type {model_type!r} in {mwhere}: minipipe has 'tiny'")
    fields = {
        "model_path": Path(_typed(_require(model, "path", mwhere), str, "path", mwhere)),
        "model_dtype": _dtype(model.get("dtype", "float32"), "dtype", mwhere),
    }
    return fields, warnings


def _adapter(raw: Mapping[str, Any], where: str) -> tuple[dict[str, Any], list[str]]:
    """The `[adapter]` table: a LoRA, its rank and dtype, maybe seeded from a saved one."""
    adapter = _typed(_require(raw, "adapter", where), dict, "adapter", where)
    awhere = f"[adapter] of {where}"
    warnings = _warn_unknown(adapter, _ADAPTER_KEYS, awhere)
    if adapter.get("type", "lora") != "lora":
        raise ConfigError(f"unsupported adapter type {adapter['type']!r} in {awhere}")
    model_dtype = raw["model"].get("dtype", "float32")
    fields = {
        "rank": _positive_int(adapter, "rank", awhere, None),
        "adapter_dtype": _dtype(adapter.get("dtype", model_dtype), "dtype", awhere),
        "lora_dropout": float(adapter.get("dropout", 0.0)),
        "init_from_existing": Path(adapter["init_from_existing"])
        if adapter.get("init_from_existing")
        else None,
    }
    return fields, warnings


def _optimizer(raw: Mapping[str, Any], where: str) -> tuple[dict[str, Any], list[str]]:
    """The `[optimizer]` table: its type and the keyword arguments it is built with."""
    optimizer = _typed(_require(raw, "optimizer", where), dict, "optimizer", where)
    owhere = f"[optimizer] of {where}"
    warnings = _warn_unknown(optimizer, _OPTIMIZER_KEYS, owhere)
    opt_type = str(_require(optimizer, "type", owhere))
    opt_kwargs: dict[str, Any] = {
        "lr": float(_typed(_require(optimizer, "lr", owhere), (int, float), "lr", owhere))
    }
    if "betas" in optimizer:
        betas = optimizer["betas"]
        if not (isinstance(betas, list) and len(betas) == 2):
            raise ConfigError(f"'betas' in {owhere} must be a list of two numbers")
        opt_kwargs["betas"] = (float(betas[0]), float(betas[1]))
    for key in ("weight_decay", "eps"):
        if key in optimizer:
            opt_kwargs[key] = float(_typed(optimizer[key], (int, float), key, owhere))
    return {"optimizer_type": opt_type, "optimizer_kwargs": opt_kwargs}, warnings


def _schedule(raw: Mapping[str, Any], where: str) -> dict[str, Any]:
    """When to save, checkpoint and change the learning rate."""
    save_n_epochs = _optional_int(raw, "save_every_n_epochs", where)
    save_n_steps = _optional_int(raw, "save_every_n_steps", where)
    if save_n_epochs is None and save_n_steps is None:
        raise ConfigError(f"{where} needs save_every_n_epochs or save_every_n_steps")
    minutes = raw.get("checkpoint_every_n_minutes")
    if minutes is not None:
        minutes = float(_typed(minutes, (int, float), "checkpoint_every_n_minutes", where))
        if minutes <= 0:
            raise ConfigError(f"'checkpoint_every_n_minutes' in {where} must be > 0")
    scheduler = str(raw.get("lr_scheduler", "constant"))
    if scheduler not in ("constant", "linear"):
        raise ConfigError(f"'lr_scheduler' in {where} must be 'constant' or 'linear' in minipipe")
    return {
        "lr_scheduler": scheduler,
        "save_every_n_epochs": save_n_epochs,
        "save_every_n_steps": save_n_steps,
        "checkpoint_every_n_minutes": minutes,
        "checkpoint_every_n_epochs": _optional_int(raw, "checkpoint_every_n_epochs", where),
    }


def load_config(path: Path) -> tuple[TrainConfig, list[str]]:
    """Parse and validate the main TOML; returns the config and warning lines to print."""
    raw = _load_toml(path, "config")
    where = str(path)
    warnings = _warn_unknown(raw, _TOP_KEYS, where)
    output_dir = Path(_typed(_require(raw, "output_dir", where), str, "output_dir", where))
    dataset_path = Path(_typed(_require(raw, "dataset", where), str, "dataset", where))
    if not dataset_path.is_absolute():
        dataset_path = path.parent / dataset_path
    model, model_warnings = _model(raw, where)
    adapter, adapter_warnings = _adapter(raw, where)
    optimizer, optimizer_warnings = _optimizer(raw, where)
    schedule = _schedule(raw, where)
    resume = raw.get("resume_from_checkpoint")
    dataset, dataset_warnings = load_dataset_config(dataset_path)
    cfg = TrainConfig(
        path=path,
        output_dir=output_dir,
        dataset=dataset,
        epochs=_positive_int(raw, "epochs", where, None),
        micro_batch_size=_positive_int(raw, "micro_batch_size_per_gpu", where, 1),
        gradient_accumulation_steps=_positive_int(raw, "gradient_accumulation_steps", where, 1),
        gradient_clipping=float(
            _typed(raw.get("gradient_clipping", 1.0), (int, float), "gradient_clipping", where)
        ),
        warmup_steps=int(_typed(raw.get("warmup_steps", 0), int, "warmup_steps", where)),
        save_dtype=None
        if "save_dtype" not in raw
        else _dtype(raw["save_dtype"], "save_dtype", where),
        resume_from_checkpoint=resume if isinstance(resume, bool | str) else None,
        **model,
        **adapter,
        **optimizer,
        **schedule,
    )
    warnings += model_warnings + adapter_warnings + optimizer_warnings
    return cfg, warnings + dataset_warnings
