"""The main and dataset TOML files, read with diffusion-pipe's key names and defaults."""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
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
    "max_steps",
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
# Bucket keys diffusion-pipe reads from a [[directory]] first, then from the dataset file.
_BUCKET_KEYS = {
    "resolutions",
    "enable_ar_bucket",
    "min_ar",
    "max_ar",
    "num_ar_buckets",
    "ar_buckets",
    "frame_buckets",
}
_DATASET_KEYS = {"num_repeats", "directory", "skip_empty_caption", "caption_prefix"}
_DATASET_KEYS |= _BUCKET_KEYS
_DIRECTORY_KEYS = {"path", "num_repeats", "skip_empty_caption", "caption_prefix", *_BUCKET_KEYS}
ROUND_DECIMAL_DIGITS = 3  # diffusion-pipe rounds aspect ratios and resolutions to this


class ConfigError(ValueError):
    """A config file is missing a key, has a bad value, or names a missing file."""


@dataclass(frozen=True)
class DirectoryConfig:
    path: Path
    num_repeats: int
    skip_empty_caption: bool
    caption_prefix: str
    # Deduplicated and sorted as diffusion-pipe's DirectoryDataset holds them; empty
    # resolutions: the dataset's.
    resolutions: tuple[float, ...] = ()
    ars: tuple[float, ...] = (1.0,)  # the aspect-ratio buckets (1.0 alone: AR bucketing off)


@dataclass(frozen=True)
class DatasetConfig:
    path: Path
    resolutions: tuple[float, ...]  # as given (side, or sqrt(w * h) of a pair), not deduplicated
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
    max_steps: int | None  # train.py: checked after the end of the last epoch
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


def dedup_and_sort(values: Sequence[Any]) -> tuple[float, ...]:
    """diffusion-pipe's dedup_and_sort: rounded to 3 decimals (numpy's rounding for numpy
    floats, as there), unique, ascending."""
    return tuple(sorted({float(round(x, ROUND_DECIMAL_DIGITS)) for x in values}))


def _resolutions(raw: Any, where: str) -> list[float]:
    if not isinstance(raw, list) or not raw:
        raise ConfigError(f"'resolutions' in {where} must be a non-empty list")
    resolutions: list[float] = []
    for res in raw:
        # [w, h] pairs are areas, as in diffusion-pipe: side = sqrt(w * h).
        if isinstance(res, list) and len(res) == 2 and all(_is_number(v) for v in res):
            resolutions.append(math.sqrt(res[0] * res[1]))
        elif _is_number(res) and res > 0:
            resolutions.append(float(res))
        else:
            raise ConfigError(f"bad entry {res!r} in 'resolutions' in {where}")
    return resolutions


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _ars(entry: Mapping[str, Any], raw: Mapping[str, Any], where: str) -> tuple[float, ...]:
    """The aspect-ratio buckets, as DirectoryDataset builds them: [1.0] without AR bucketing,
    else `ar_buckets` (numbers or [w, h] pairs), else geomspace(min_ar, max_ar, num_ar_buckets).
    The three are read from the dataset file (a directory may override them), and diffusion-pipe
    fails with a KeyError where the dataset file lacks one."""
    if not entry.get("enable_ar_bucket", raw.get("enable_ar_bucket", False)):
        return (1.0,)
    ars: list[float] = []
    for ar in entry.get("ar_buckets", raw.get("ar_buckets")) or []:
        if isinstance(ar, list) and len(ar) == 2 and all(_is_number(v) and v > 0 for v in ar):
            ars.append(ar[0] / ar[1])
        elif _is_number(ar) and ar > 0:
            ars.append(float(ar))
        else:
            raise ConfigError(f"bad entry {ar!r} in 'ar_buckets' in {where}")
    if not ars:
        bounds = []
        for key in ("min_ar", "max_ar"):
            _require(raw, key, f"{where} (enable_ar_bucket needs min_ar, max_ar, num_ar_buckets)")
            value = entry.get(key, raw[key])
            if not _is_number(value) or value <= 0:
                raise ConfigError(f"'{key}' in {where} must be a number > 0, got {value!r}")
            bounds.append(float(value))
        _require(raw, "num_ar_buckets", f"{where} (enable_ar_bucket needs num_ar_buckets)")
        num = _positive_int(entry, "num_ar_buckets", where, raw["num_ar_buckets"])
        return dedup_and_sort(list(np.geomspace(bounds[0], bounds[1], num=num)))
    return dedup_and_sort(ars)


def _frame_buckets(entry: Mapping[str, Any], raw: Mapping[str, Any], where: str) -> tuple[int, ...]:
    """Frame buckets with 1 always added (diffusion-pipe keeps an image bucket), ascending."""
    buckets = entry.get("frame_buckets", raw.get("frame_buckets", [1]))
    if not isinstance(buckets, list) or not all(
        isinstance(b, int) and not isinstance(b, bool) and b >= 1 for b in buckets
    ):
        raise ConfigError(f"'frame_buckets' in {where} must be a list of frame counts >= 1")
    return tuple(sorted({*buckets, 1}))


def load_dataset_config(path: Path) -> tuple[DatasetConfig, list[str]]:
    raw = _load_toml(path, "dataset")
    where = str(path)
    warnings = _warn_unknown(raw, _DATASET_KEYS, where)
    resolutions = _resolutions(_require(raw, "resolutions", where), where)
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
        own = _resolutions(entry["resolutions"], dwhere) if "resolutions" in entry else resolutions
        if _frame_buckets(entry, raw, dwhere) != (1,):
            warnings.append(
                f"WARNING: minipipe trains images only; videos in {dpath} are skipped, so "
                "frame_buckets above 1 stay empty"
            )
        directories.append(
            DirectoryConfig(
                path=dpath,
                num_repeats=_positive_int(entry, "num_repeats", dwhere, raw.get("num_repeats", 1)),
                skip_empty_caption=bool(
                    entry.get("skip_empty_caption", raw.get("skip_empty_caption", True))
                ),
                caption_prefix=str(entry.get("caption_prefix", raw.get("caption_prefix", ""))),
                resolutions=dedup_and_sort(own),
                ars=_ars(entry, raw, dwhere),
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
        "max_steps": _optional_int(raw, "max_steps", where),
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
