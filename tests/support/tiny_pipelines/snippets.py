"""Run a model card's diffusers snippet as a user would, against a tiny pipeline on the CPU.

`python_block(card)` takes the card's first ```python block; `substitute(code)` applies the
documented substitution table below and nothing else; `python -m
tests.support.tiny_pipelines.snippets JOBS RESULTS` executes every job of the JSON list JOBS
(`{"name", "code", "workdir"}`, and `strength_call`: generation arguments to render with the
LoRA at strength 0, at 1 and disabled, at a fixed seed) in its own folder, in one process
(diffusers is imported once), and writes what each produced to RESULTS.

The substitution table (the only edits made to a card's code):

| in the card                 | run as                  | why                                   |
|-----------------------------|-------------------------|---------------------------------------|
| `"cuda"`                    | `"cpu"`                 | the test machine has no GPU           |
| `height=<n>`, `width=<n>`   | `height=32`, `width=32` | tiny models, tiny images              |
| `num_inference_steps=<n>`   | `num_inference_steps=2` | two denoising steps prove the loop    |
| `num_frames=<n>`            | `num_frames=5`          | Wan needs 4k+1 frames; 5 is the least |

Two stand-ins, used only where the test environment lacks the package the card tells users to
install (`pip install ... ftfy imageio imageio-ffmpeg` for Wan): `ftfy` (Wan's prompt cleaning;
an identity `fix_text`) and `diffusers.utils.export_to_video`'s imageio/OpenCV backend (replaced by
an mp4 writer on PyAV, which the environment has). Both are reported in the results.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import re
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np
from peft.tuners.tuners_utils import BaseTunerLayer
from PIL import Image
from torch import nn


@dataclass(frozen=True)
class Substitution:
    pattern: str
    replacement: str
    video_only: bool = False  # only a video snippet has it


SUBSTITUTIONS = (
    Substitution(r'"cuda"', '"cpu"'),
    Substitution(r"\bheight=\d+", "height=32"),
    Substitution(r"\bwidth=\d+", "width=32"),
    Substitution(r"\bnum_inference_steps=\d+", "num_inference_steps=2"),
    Substitution(r"\bnum_frames=\d+", "num_frames=5", video_only=True),
)
FRAMES, SIZE = 5, 32  # what the substituted snippets produce
START_FRAME = "first_frame.png"  # the image-to-video snippet's input, written beside it

_BLOCK = re.compile(r"```python\n(.*?)```", re.DOTALL)


def python_block(card: str) -> str:
    """The card's first ```python block."""
    match = _BLOCK.search(card)
    if match is None:
        raise AssertionError("the model card has no ```python block")
    return match.group(1)


def substitute(code: str) -> str:
    """`code` with the table's substitutions; each must match exactly once (a video-only one: at
    most once), so a snippet that changes shape fails here instead of running something else."""
    for sub in SUBSTITUTIONS:
        code, count = re.subn(sub.pattern, sub.replacement, code)
        allowed = {0, 1} if sub.video_only else {1}
        if count not in allowed:
            raise AssertionError(f"{sub.pattern!r} matched {count} times in:\n{code}")
    return code


# --- the runner (a subprocess: HF_ENDPOINT and HF_HOME must be set before huggingface_hub loads)


def _ftfy_stand_in(root: Path) -> bool:
    """An identity `ftfy` with distribution metadata (diffusers checks for it by distribution)."""
    if importlib.util.find_spec("ftfy") is not None:
        return False
    (root / "ftfy").mkdir(parents=True, exist_ok=True)
    (root / "ftfy" / "__init__.py").write_text("def fix_text(text, *a, **k):\n    return text\n")
    info = root / "ftfy-0.0.0.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: ftfy\nVersion: 0.0.0\n")
    (info / "top_level.txt").write_text("ftfy\n")
    sys.path.insert(0, str(root))
    return True


def _export_with_av(frames: Any, path: str, fps: float = 10, **_: Any) -> str:
    arrays = [np.asarray(f) for f in frames]
    arrays = [(a * 255).round().astype(np.uint8) if a.dtype != np.uint8 else a for a in arrays]
    with av.open(path, "w") as out:
        stream: Any = out.add_stream("mpeg4", rate=int(fps))
        stream.height, stream.width = arrays[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        for array in arrays:
            for packet in stream.encode(av.VideoFrame.from_ndarray(array, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def _video_frames(path: Path) -> int:
    with av.open(str(path)) as video:
        return sum(1 for _ in video.decode(video=0))


class _Unexpected(logging.Handler):
    """diffusers' "unexpected keys" warning: LoRA keys that reached no module."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if "unexpected keys" in record.getMessage():
            self.messages.append(record.getMessage())


def _lora_modules(pipe: Any) -> int:
    """Modules of the pipeline that received a LoRA (peft tuner layers)."""
    return sum(
        isinstance(sub, BaseTunerLayer)
        for part in pipe.components.values()
        if isinstance(part, nn.Module)
        for sub in part.modules()
    )


def _render(pipe: Any, call: dict[str, Any]) -> np.ndarray:
    """One generation at a fixed seed, as floats (no 8-bit rounding hides a small change)."""
    import torch  # noqa: PLC0415

    kwargs = dict(call)
    if "image" in kwargs:
        kwargs["image"] = Image.open(kwargs["image"]).convert("RGB")
    out = pipe(**kwargs, output_type="np", generator=torch.Generator("cpu").manual_seed(0))
    frames = getattr(out, "frames", None)
    return np.asarray(frames if frames is not None else out.images, dtype=np.float64)


def _strength(pipe: Any, call: dict[str, Any]) -> dict[str, float]:
    """The LoRA's effect: the largest change of the output between strength 0 and 1 (every
    adapter the snippet loaded), and between strength 0 and the LoRA disabled (must be 0)."""
    adapters = sorted({a for names in pipe.get_list_adapters().values() for a in names})
    outputs = {}
    for weight in (0.0, 1.0):
        pipe.set_adapters(adapters, adapter_weights=[weight] * len(adapters))
        outputs[weight] = _render(pipe, call)
    pipe.disable_lora()
    off = _render(pipe, call)
    pipe.enable_lora()
    return {
        "strength_1_vs_0": float(np.abs(outputs[1.0] - outputs[0.0]).max()),
        "strength_0_vs_off": float(np.abs(outputs[0.0] - off).max()),
    }


def _run_one(job: dict[str, Any], unexpected: _Unexpected) -> dict[str, Any]:
    workdir = Path(job["workdir"])
    workdir.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (SIZE, SIZE), (200, 120, 40)).save(workdir / START_FRAME)
    os.chdir(workdir)
    unexpected.messages.clear()
    ns: dict[str, Any] = {"__name__": "__snippet__"}
    try:
        exec(compile(job["code"], f"<card snippet {job['name']}>", "exec"), ns)
    except Exception:
        return {"error": traceback.format_exc()}
    result: dict[str, Any] = {
        "lora_modules": _lora_modules(ns["pipe"]),
        "unexpected_keys": list(unexpected.messages),
    }
    if job.get("strength_call"):
        try:
            result |= _strength(ns["pipe"], job["strength_call"])
        except Exception:
            return {"error": traceback.format_exc()}
    if (workdir / "output.png").is_file():
        with Image.open(workdir / "output.png") as image:
            result["image_size"] = list(image.size)
    if (workdir / "output.mp4").is_file():
        result["video_frames"] = _video_frames(workdir / "output.mp4")
        result["frames_returned"] = len(ns["video"])
    return result


def main(jobs_path: str, results_path: str) -> None:
    jobs_file, results_file = Path(jobs_path).resolve(), Path(results_path).resolve()
    jobs = json.loads(jobs_file.read_text())
    stand_ins = []
    if _ftfy_stand_in(jobs_file.parent / "stand-ins"):
        stand_ins.append("ftfy")
    # Only now: diffusers looks for ftfy once, when it is first imported.
    utils: Any = importlib.import_module("diffusers.utils")

    if importlib.util.find_spec("imageio") is None and importlib.util.find_spec("cv2") is None:
        utils.export_to_video = _export_with_av
        stand_ins.append("export_to_video")
    unexpected = _Unexpected()
    logging.getLogger("diffusers").addHandler(unexpected)
    results = {}
    for job in jobs:
        wall, cpu = time.monotonic(), time.process_time()
        results[job["name"]] = _run_one(job, unexpected) | {
            "seconds": time.monotonic() - wall,
            "cpu_seconds": time.process_time() - cpu,
        }
    results_file.write_text(json.dumps({"results": results, "stand_ins": stand_ins}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
