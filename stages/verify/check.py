"""Check one saved LoRA against its family's format and its base model's modules.

Read from the LoRA's safetensors header: every key is a pair half (or kohya's `.alpha`) of a
module under one of the format's prefixes; every module has both halves; the rank is the one
asked for and the same in both halves; every half is in the dtype asked for; each module exists
in the base model with a shape the pair fits (A is rank x in, B is out x rank). Then every
tensor's values are scanned for NaN and Inf (a float32 sum per tensor; an exact scan only of a
tensor whose sum is not finite). A file that fails raises `LoraRejected`, naming the first bad
keys and what they should be.
"""

from __future__ import annotations

import difflib
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from safetensors import safe_open

from stages.errors import StageFailed
from stages.verify.base import BaseModules, read_header
from stages.verify.rules import LoraFormat

# save_dtype / lora_dtype names -> safetensors' dtype names. Others are not checked.
DTYPES = {"bfloat16": "BF16", "float16": "F16", "float32": "F32"}
_SHOWN = 3  # bad keys named per kind of problem


class LoraRejected(StageFailed):
    """The saved LoRA does not fit its base model or the request; it is not published."""


@dataclass(frozen=True)
class Expected:
    """What the request asked for."""

    rank: int
    dtype: str | None  # "bfloat16", ...; None: not checked


@dataclass(frozen=True)
class Verified:
    """What the check found: the LORA_VERIFIED fact's content for one file."""

    file: str
    tensors: int
    modules: int
    rank: int
    dtype: str
    base_modules: int
    base_files: int
    seconds: float


@dataclass(slots=True)
class _Pair:
    down: tuple[str, list[int]] | None = None  # (dtype, shape)
    up: tuple[str, list[int]] | None = None
    alpha: tuple[str, list[int]] | None = None


@dataclass
class _Problems:
    kinds: dict[str, list[str]] = field(default_factory=dict)

    def add(self, kind: str, detail: str) -> None:
        self.kinds.setdefault(kind, []).append(detail)

    def message(self, name: str, what: str) -> str:
        parts = []
        for kind, details in self.kinds.items():
            shown = "; ".join(details[:_SHOWN])
            more = f" (and {len(details) - _SHOWN} more)" if len(details) > _SHOWN else ""
            parts.append(f"{kind}: {shown}{more}")
        return f"the trained LoRA {name} failed its check against {what}: " + " | ".join(parts)


def _split(key: str, fmt: LoraFormat) -> tuple[str, str] | None:
    """(module, part) for a key of `fmt`, part one of down/up/alpha; None for any other key.
    (Both pair halves end in two dotted parts, `lora_A.weight`; kohya's alpha in one.)"""
    module, _, last = key.rpartition(".")
    if last == "alpha":
        return (module, "alpha") if fmt.alpha and module else None
    module, _, half = module.rpartition(".")
    ending = f"{half}.{last}"
    if ending == fmt.down:
        return module, "down"
    if ending == fmt.up:
        return module, "up"
    return None


def _format_name(fmt: LoraFormat) -> str:
    return f"{fmt.name}-format"


def _closest(module: str, names: Iterable[str]) -> str:
    found = difflib.get_close_matches(module, list(names), n=1, cutoff=0.6)
    return f"; the closest base module is {found[0]}" if found else ""


def verify_lora(
    path: Path,
    fmt: LoraFormat,
    base: BaseModules,
    expected: Expected,
    *,
    name: str | None = None,
    what: str = "its base model",
    values: bool = True,
) -> Verified:
    """Check `path` (see the module doc); `name` is how messages name the file. `values`
    False skips the NaN/Inf scan (headers only: the benchmark's split)."""
    started = time.perf_counter()
    shown = name or path.name
    try:
        header = read_header(path)
    except StageFailed as exc:
        raise LoraRejected(f"the trained LoRA {shown}: {exc}; nothing was published") from None
    if not header:
        raise LoraRejected(f"the trained LoRA {shown} holds no tensors; nothing was published")
    problems = _Problems()
    pairs = _pairs(header, fmt, problems)
    found = _Found(fmt, base, expected, problems)
    for module, pair in pairs.items():
        found.check(module, pair)
    if not pairs and not problems.kinds:
        problems.add("keys that are not LoRA pairs", "none of its keys is a LoRA pair")
    if values and not problems.kinds:
        _scan_values(path, header, problems)
    if problems.kinds:
        raise LoraRejected(problems.message(shown, what) + "; nothing was published")
    return Verified(
        file=shown,
        tensors=len(header),
        modules=len(pairs),
        rank=next(iter(found.ranks)) if len(found.ranks) == 1 else expected.rank,
        dtype="/".join(sorted(found.dtypes)),
        base_modules=len(base.shapes),
        base_files=len(base.files),
        seconds=round(time.perf_counter() - started, 4),
    )


@dataclass
class _Found:
    """Each pair checked against the format, the request and the base; what was seen."""

    fmt: LoraFormat
    base: BaseModules
    expected: Expected
    problems: _Problems
    ranks: set[int] = field(default_factory=set)
    dtypes: set[str] = field(default_factory=set)

    @property
    def want_dtype(self) -> str | None:
        return DTYPES.get(self.expected.dtype or "")

    def check(self, module: str, pair: _Pair) -> None:
        fmt, problems = self.fmt, self.problems
        if pair.down is None or pair.up is None:
            half = fmt.up if pair.down is not None else fmt.down
            problems.add("incomplete pairs", f"{module}.{half} is missing")
            return
        (down_dtype, down), (up_dtype, up) = pair.down, pair.up
        if len(down) != 2 or len(up) != 2 or down[0] != up[1]:
            problems.add(
                "pairs whose halves disagree",
                f"{module}: {fmt.down} {down} and {fmt.up} {up} (expected [r, in] and [out, r])",
            )
            return
        self.ranks.add(down[0])
        rank = self.expected.rank
        if down[0] != rank:
            problems.add("rank", f"{module} has rank {down[0]}, the request asked for {rank}")
        self.dtypes.add(down_dtype)
        self.dtypes.add(up_dtype)
        want = self.want_dtype
        if want is not None and (down_dtype != want or up_dtype != want):
            asked = self.expected.dtype
            for half, dtype in ((fmt.down, down_dtype), (fmt.up, up_dtype)):
                if dtype != want:
                    problems.add(
                        "dtype", f"{module}.{half} is {dtype}, save_dtype {asked} is {want}"
                    )
        if pair.alpha is not None and pair.alpha[1] not in ([], [1]):
            problems.add("alpha", f"{module}.alpha has shape {pair.alpha[1]}, not a scalar")
        self._fits_base(module, down, up)

    def _fits_base(self, module: str, down: list[int], up: list[int]) -> None:
        fmt, shape = self.fmt, self.base.shape(module)
        if shape is None:
            self.problems.add(
                "modules the base model does not have",
                f"{module}{_closest(module, self.base.shapes)}",
            )
        elif (up[0], down[1]) != shape:
            self.problems.add(
                "shapes that do not fit the base model",
                f"{module} is {up[0]}x{down[1]} (out x in), the base module is "
                f"{shape[0]}x{shape[1]}: {fmt.down} should be [{down[0]}, {shape[1]}] and "
                f"{fmt.up} [{shape[0]}, {down[0]}]",
            )


def _pairs(
    header: dict[str, tuple[str, list[int]]], fmt: LoraFormat, problems: _Problems
) -> dict[str, _Pair]:
    """The header's keys grouped by module; a key of no pair half is a problem."""
    pairs: dict[str, _Pair] = {}
    for key, info in header.items():
        split = _split(key, fmt)
        if ".default." in key or split is None:
            problems.add(
                "keys that are not LoRA pairs",
                f"{key} (expected <module>.{fmt.down} / .{fmt.up})",
            )
            continue
        module, part = split
        if not module.startswith(fmt.prefixes):
            starts = " or ".join(repr(p) for p in fmt.prefixes)
            problems.add(
                "keys without the format's prefix",
                f"{key} ({_format_name(fmt)} keys start with {starts})",
            )
            continue
        pair = pairs.get(module)
        if pair is None:  # (setdefault would build a _Pair for every key)
            pair = pairs[module] = _Pair()
        setattr(pair, part, info)
    return pairs


def _scan_values(path: Path, header: dict[str, tuple[str, list[int]]], problems: _Problems) -> None:
    """NaN or Inf in any tensor: training diverged, and the LoRA would break every image."""
    import torch  # noqa: PLC0415

    with safe_open(str(path), framework="pt") as handle:
        for key in header:
            tensor = handle.get_tensor(key)
            if not tensor.is_floating_point():
                continue
            if torch.isfinite(torch.sum(tensor, dtype=torch.float32)):
                continue
            bad = int((~torch.isfinite(tensor)).sum())
            if bad:  # a finite tensor whose float32 sum overflowed is fine
                problems.add(
                    "NaN or Inf values (training diverged: try a lower learning_rate)",
                    f"{key} has {bad} of {tensor.numel()}",
                )
