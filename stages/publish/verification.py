"""The verify step, run before any byte is published: every LoRA file the publish would send
(the final one; every epoch's with upload_epochs "all") is checked against the base model's
modules (`stages.verify`). A file that fails stops the publish with `LoraRejected`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from stages.publish.common import PublishInputs, trained_loras
from stages.verify.base import base_modules
from stages.verify.check import Expected, Verified, verify_lora

OnVerified = Callable[[Verified], object]


def expected(inputs: PublishInputs) -> Expected:
    """The rank and dtype the request asked for (its effective training values)."""
    training = inputs.spec.card_training
    dtype = training.get("save_dtype") or training.get("lora_dtype")
    rank = training.get("lora_rank")
    return Expected(
        rank=int(rank) if isinstance(rank, int | str) else 0,
        dtype=str(dtype) if dtype else None,
    )


def verify_published(
    inputs: PublishInputs, models_root: Path, on_verified: OnVerified | None = None
) -> list[Verified]:
    """Check each LoRA file the publish sends; `on_verified` sees each as it passes."""
    rules = inputs.model.lora_rules
    if rules is None:
        return []
    loras = trained_loras(inputs)
    base = base_modules(rules.base, models_root)
    what = f"{inputs.model.display_name} ({', '.join(base.files[:3])})"
    want = expected(inputs)
    done: list[Verified] = []
    # The final LoRA is checked as published (its metadata added); its epoch's own file, when
    # upload_epochs "all" sends it too, holds the same tensors.
    seen: set[Path] = {inputs.lora_path.resolve()}
    for art in loras:
        assert art.source is not None
        if art.source.resolve() in seen:
            continue
        seen.add(art.source.resolve())
        verified = verify_lora(art.source, rules.format, base, want, name=art.name, what=what)
        if on_verified is not None:
            on_verified(verified)
        done.append(verified)
    return done
