"""JoyCaption throughput: several images per `generate` call against one image per call.

The production captioner (`stages.captions.joycaption`: the recipe's tokenization, LANCZOS
resize and left padding) on the tiny random LLaVA of the tests (tests/support/tiny_llava.py),
on this machine's CPU: `caption_images` over the same 48 images with `batch_size` 8, then 1,
greedy with at most 16 new tokens (the same captions both ways: the test
`test_batched_generation_writes_the_same_files_as_one_by_one` holds that), alternating which
goes first, the median of three rounds each. On a GPU the batched ratio is the figure that
matters (the real model is memory-bound at batch 1); the tiny model on a CPU shows the code
path's own overhead per call, not that.

Standalone: `.venv/bin/python -m bench.caption_bench`.
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch

from bench.table import Result
from stages.captions.joycaption import JoyCaptionSettings, caption_images, load_captioner
from tests.support.tiny_llava import tiny_llava_dir, write_images

IMAGES = 48
ROUNDS = 3
BATCH = 8


def _rate(captioner: object, folder: Path, batch: int) -> float:
    """Captions per second for one pass over fresh copies of the images."""
    shutil.rmtree(folder, ignore_errors=True)
    images = write_images(folder, IMAGES)
    settings = JoyCaptionSettings(do_sample=False, max_new_tokens=16, batch_size=batch)
    started = time.perf_counter()
    report = caption_images(captioner, images, settings=settings)  # type: ignore[arg-type]
    elapsed = time.perf_counter() - started
    assert len(report.captioned) == IMAGES
    return IMAGES / elapsed


def run() -> list[Result]:
    torch.set_num_threads(max(1, torch.get_num_threads()))
    captioner = load_captioner(tiny_llava_dir(), device="cpu")
    batched: list[float] = []
    single: list[float] = []
    with tempfile.TemporaryDirectory(prefix="dps-bench-captions-") as tmp:
        work = Path(tmp)
        _rate(captioner, work / "warm", BATCH)  # first-call costs out of the figures
        for r in range(ROUNDS):
            order = (
                ((BATCH, batched), (1, single)) if r % 2 == 0 else ((1, single), (BATCH, batched))
            )
            for size, into in order:
                into.append(_rate(captioner, work / f"b{size}", size))
                print(f"  round {r} batch {size}: {into[-1]:.1f} captions/s", flush=True)
    captioner.close()
    fast, slow = statistics.median(batched), statistics.median(single)
    return [
        Result(
            f"JoyCaption, tiny model on the CPU, batch {BATCH} vs 1 image per call",
            f"{fast:.1f} captions/s",
            f"one per call {slow:.1f} captions/s",
            round(slow / fast, 2),  # time per caption, batched / one per call
            note=f"{IMAGES} images, at most 16 new tokens each, median of {ROUNDS}; batched is "
            f"{fast / slow:.1f}x the throughput; no GPU here for the real figure (goal >= 3x)",
        )
    ]


if __name__ == "__main__":
    from bench.table import publish

    publish(run(), Path(tempfile.gettempdir()) / "dps-bench-captions.md")
