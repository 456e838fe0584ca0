"""The rules over passthrough keys: keys the service owns, likely typos, values TOML can hold.

`training_problems(raw)` reads a raw `training` mapping (maybe invalid) and lists every problem
with its field path. Unknown keys go to diffusion-pipe as they are, so a misspelt documented
field would be ignored silently: near-misses of known keys are refused instead.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from orchestrator.catalogue import BASE_DEFAULTS
from orchestrator.errors import Problem
from orchestrator.request.fields import closest, echo
from stages.training.owned_keys import OWNED_TABLES, OWNED_TOP_LEVEL, TABLES

_MAX_TOML_DEPTH = 8
_INT64 = 2**63
# diffusion-pipe's settings are short: a bigger passthrough value is a mistake or an attack on
# the worker's memory (it is written to the TOML, the log and the model card).
_MAX_TEXT = 65_536  # characters in a string value
_MAX_ITEMS = 10_000  # entries in a list or a table
_PER_VALUE = 20  # problems reported for one value (its first ones)
_MAX_KEY = 256  # characters in a key
DOCUMENTED: frozenset[str] = frozenset(BASE_DEFAULTS)

# Top-level diffusion-pipe keys that may pass through as they are. Known, so the typo check below
# does not mistake e.g. save_every_n_steps for a misspelt save_every_n_epochs.
KNOWN_PASSTHROUGH: frozenset[str] = frozenset(
    {
        "max_steps",
        "image_micro_batch_size_per_gpu",
        "pipeline_stages",
        "lr_scheduler",
        "force_constant_lr",
        "eval_every_n_steps",
        "eval_every_n_examples",
        "eval_micro_batch_size_per_gpu",
        "eval_image_micro_batch_size_per_gpu",
        "eval_gradient_accumulation_steps",
        "disable_block_swap_for_eval",
        "save_every_n_steps",
        "save_every_n_examples",
        "checkpoint_every_n_epochs",
        "reentrant_activation_checkpointing",
        "partition_method",
        "partition_split",
        "map_num_proc",
        "steps_per_print",
        "logging_steps",
        "x_axis_examples",
        "blocks_to_swap",
        "compile",
        "uncond_fraction",
        "huber_delta",
        "smooth_l1_beta",
        "monitoring",
    }
)


def _toml_problems(path: str, value: Any, depth: int = 0) -> list[Problem]:
    """Why `value` cannot be written to the TOML config (diffusion-pipe reads TOML)."""
    if depth > _MAX_TOML_DEPTH:
        return [(path, "nested too deeply")]
    if value is None:
        return [(path, "null cannot be written to the TOML config; leave the key out")]
    if isinstance(value, str):
        if len(value) > _MAX_TEXT:
            return [(path, f"a string of more than {_MAX_TEXT} characters is not a setting")]
        return []
    if isinstance(value, bool):
        return []
    if isinstance(value, list | tuple | Mapping) and len(value) > _MAX_ITEMS:
        return [(path, f"more than {_MAX_ITEMS} entries is not a setting")]
    if isinstance(value, int):
        return [] if -_INT64 <= value < _INT64 else [(path, "integer out of the 64-bit range")]
    if isinstance(value, float):
        return [] if math.isfinite(value) else [(path, "must be a finite number")]
    if isinstance(value, list | tuple):
        out: list[Problem] = []
        for i, item in enumerate(value):
            out += _toml_problems(f"{path}[{i}]", item, depth + 1)
            if len(out) >= _PER_VALUE:  # a list of 10,000 nulls needs one answer, not 10,000
                break
        return out
    if isinstance(value, Mapping):
        out = []
        for key, item in value.items():
            if not isinstance(key, str) or not key.strip():
                out.append((path, f"keys must be non-empty strings, got {echo(repr(key))}"))
                continue
            if len(key) > _MAX_KEY:
                out.append((path, f"keys must be at most {_MAX_KEY} characters"))
                continue
            out += _toml_problems(f"{path}.{echo(key)}", item, depth + 1)
            if len(out) >= _PER_VALUE:
                break
        return out
    return [(path, f"unsupported value of type {type(value).__name__}")]


def _refusal(key: str, reason: str) -> str:
    return (
        f'"{key}" {reason}' if reason.startswith("is ") else f'"{key}" cannot be set here; {reason}'
    )


def _table_problems(path: str, table: Mapping[Any, Any], owned: Mapping[str, str]) -> list[Problem]:
    """One passthrough table (`model`, `adapter`, `optimizer`...): owned keys and TOML values."""
    if len(table) > _MAX_ITEMS:
        return [(path, f"more than {_MAX_ITEMS} entries is not a setting")]
    problems: list[Problem] = []
    for sub, item in table.items():
        if not isinstance(sub, str):
            problems.append((path, f"keys must be strings, got {echo(sub)}"))
        elif sub in owned:
            problems.append((f"{path}.{echo(sub)}", _refusal(sub, owned[sub])))
        elif len(sub) > _MAX_KEY:
            problems.append((path, f"keys must be at most {_MAX_KEY} characters"))
        else:
            problems += _toml_problems(f"{path}.{echo(sub)}", item)
    return problems


def training_problems(
    raw: Mapping[Any, Any],
    *,
    field_home: Mapping[str, str],
    fields: Iterable[str] = (),
    prefix: str = "training",
) -> list[Problem]:
    """Passthrough rules over a raw `training` mapping: owned keys, likely typos, TOML values.

    `field_home` says which section each schema field belongs to (for keys put in the wrong
    place); `fields` are the training section's own field names (validated by the schema)."""
    problems: list[Problem] = []
    # Our own fields too (keep_checkpoints): a misspelt one would pass through unseen.
    documented = set(DOCUMENTED) | (set(fields) - set(TABLES))
    if len(raw) > _MAX_ITEMS:
        return [(prefix, f"more than {_MAX_ITEMS} keys is not a training configuration")]
    for key, value in raw.items():
        if not isinstance(key, str) or not key.strip():
            problems.append((prefix, f"keys must be non-empty strings, got {echo(repr(key))}"))
            continue
        if len(key) > _MAX_KEY:
            problems.append((prefix, f"keys must be at most {_MAX_KEY} characters"))
            continue
        path = f"{prefix}.{echo(key)}"
        if key in TABLES:
            if isinstance(value, Mapping):  # else pydantic reports the type (None: not set)
                problems += _table_problems(path, value, OWNED_TABLES[key])
            continue
        if key in documented or key in fields:
            continue  # pydantic validates documented fields
        if key in OWNED_TOP_LEVEL:
            problems.append((path, _refusal(key, OWNED_TOP_LEVEL[key])))
            continue
        if key in field_home and field_home[key] != "training":
            home = field_home[key]
            where = f"{home}.{key}" if home else key
            problems.append((path, f"unknown training key; it belongs in {where}"))
            continue
        if key not in KNOWN_PASSTHROUGH:
            # Unknown keys go to diffusion-pipe as they are, so a misspelt documented field
            # would be ignored silently. Only near-misses are refused.
            near = closest(key, documented | KNOWN_PASSTHROUGH, cutoff=0.85)
            if near is not None:
                problems.append((path, f"unknown field; did you mean {near}?"))
                continue
        problems += _toml_problems(path, value)
    return problems
