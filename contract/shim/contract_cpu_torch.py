"""torch on a CPU for diffusion-pipe, which hard-codes CUDA (imported by `sitecustomize`).

CUDA device arguments become the CPU, `torch.cuda.set_device` and friends are no-ops, and
`torch.autocast('cuda')` is CPU autocast (without it: "mat1 and mat2 must have the same dtype").
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

CPU = torch.device("cpu")


def _cpu(value: Any) -> Any:
    """A device argument with CUDA replaced by the CPU; anything else as it is."""
    if isinstance(value, torch.device) and value.type == "cuda":
        return CPU
    if isinstance(value, str) and value.startswith("cuda"):
        return CPU
    if isinstance(value, int) and not isinstance(value, bool):
        return value  # a bare index is only a device in .to()/.cuda(), handled below
    return value


class _CudaToCpu(TorchFunctionMode):
    """Every torch call (factories, Tensor.to, Tensor.cuda) with a CUDA device gets the CPU."""

    def __torch_function__(
        self,
        func: Callable[..., Any],
        types: Sequence[type],
        args: Sequence[Any] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        kwargs = dict(kwargs or {})
        if func in (torch.Tensor.cuda, torch.Tensor.cpu):
            return args[0]
        if "device" in kwargs:
            kwargs["device"] = _cpu(kwargs["device"])
        if func is torch.Tensor.to:
            args = [_cpu(a) for a in args]
        return func(*args, **kwargs)


def _no_op(name: str) -> Callable[..., None]:
    """A do-nothing stand-in; one object per name (torch._dynamo refuses one object under two)."""

    def no_op(*_args: Any, **_kwargs: Any) -> None:
        return None

    no_op.__name__ = name
    return no_op


def install() -> None:
    _CudaToCpu().__enter__()  # type: ignore[no-untyped-call]  # held for the life of the process
    for name in ("set_device", "empty_cache", "synchronize", "reset_peak_memory_stats"):
        setattr(torch.cuda, name, _no_op(name))
    torch.cuda.current_device = lambda: 0
    for name in ("memory_allocated", "max_memory_allocated", "memory_reserved"):
        setattr(torch.cuda, name, lambda *_a, **_k: 0)
    torch.cuda.get_rng_state_all = lambda: []
    torch.cuda.set_rng_state_all = _no_op("set_rng_state_all")
    # Modules keep CUDA when moved there (Module.to parses the device before calling Tensor.to).
    torch.nn.Module.cuda = lambda self, *_a, **_k: self  # type: ignore[method-assign]

    class CpuAutocast(torch.autocast):
        def __init__(self, device_type: str, *args: Any, **kwargs: Any) -> None:
            super().__init__("cpu" if device_type == "cuda" else device_type, *args, **kwargs)

    torch.autocast = CpuAutocast  # type: ignore[misc]
    torch.amp.autocast = CpuAutocast  # type: ignore[misc]
