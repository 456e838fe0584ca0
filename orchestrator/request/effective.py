"""The training values a job will use: the catalogue's defaults for its model, overlaid with
the request's values and passthrough keys. Computed once per delivery (`orchestrator.plan`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from orchestrator.catalogue import get_model
from orchestrator.request.training import TrainingConfig
from stages.training.owned_keys import TABLES

if TYPE_CHECKING:
    from orchestrator.request.schema import TrainingRequest


def effective_training(req: TrainingRequest) -> dict[str, Any]:
    """The training settings the job will use: the catalogue defaults for `req.model_type`,
    overlaid with the user's values and passthrough keys.

    Documented keys come first in the catalogue's order, then passthrough keys as given, then the
    `model`, `adapter` and `optimizer` tables, always present (empty when nothing was given).
    Real values, secrets included: this feeds the TOML writer; log `req.masked()` instead.
    """
    defaults = get_model(req.model_type).defaults
    result: dict[str, Any] = {k: _plain(v) for k, v in defaults.items() if k not in TABLES}
    user = req.training.model_dump(mode="python", exclude_none=True, exclude=set(TABLES))
    result.update({k: v for k, v in user.items() if k in TrainingConfig.model_fields})
    result.update(_plain(req.training.model_extra or {}))
    for table in TABLES:
        base = defaults.get(table)
        merged: dict[str, Any] = dict(_plain(base)) if isinstance(base, Mapping) else {}
        merged.update(_plain(getattr(req.training, table) or {}))
        result[table] = merged
    return result


def _plain(value: Any) -> Any:
    """A deep, JSON-ready copy: tuples become lists, mappings dicts."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value
