"""A trainer that fails the ways diffusion-pipe fails, for the driver's classification tests.

`python -m tests.support.fake_trainer --config main.toml`; the TOML's `fake_mode` picks the failure.
It prints diffusion-pipe's real lines (see the reference) and lays out a run folder.

Before "training" it makes the checks diffusion-pipe makes at startup that a rendered config
can fail: every `[model]` path exists, every dataset directory exists and holds media, the clip
mode is one it implements. `install_deepspeed` puts a stand-in `deepspeed` on PATH that runs
this module, so the GPU launch path (`deepspeed ... train.py --deepspeed --config X`) runs here.
`FAKE_LORA_FILE` names the LoRA file it saves (diffusion-pipe's name differs per model);
`FAKE_MODE` overrides the TOML's `fake_mode`. Like diffusion-pipe it leaves a latent `cache/`
in each dataset folder.

Modes for the driver's robustness tests: `echo_config` prints a passthrough key that looks like
a progress line (diffusion-pipe echoes its config), `chatty` prints more than a pipe holds,
`orphan` exits 1 leaving a helper in its process group that holds its output open, `stubborn`
ignores SIGTERM and save_quit and has a helper outside its group holding its output. Helpers
write their pid to `<output_dir>/helper.pid`. For the verify step: `nan_lora` saves a LoRA with a
NaN (training diverged), `wrong_family` one whose module no base model here has.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
import tomllib
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tests.support.paths import REPO

if TYPE_CHECKING:
    import pytest


def _save_lora(path: Path, config: dict[str, Any], mode: str) -> None:
    """A real safetensors LoRA in the family's format (tests.support.family_loras), at the rank
    and dtype the TOML asks for, as diffusion-pipe saves it. `nan_lora`: training diverged;
    `wrong_family`: a module no base model of the tests has."""
    from tests.support.family_loras import SAMPLES, SAVE_DTYPES, WRONG, lora_bytes  # noqa: PLC0415

    adapter = config.get("adapter", {})
    model_type = config.get("model", {}).get("type", "z_image")
    sample = WRONG if mode == "wrong_family" else SAMPLES.get(model_type, SAMPLES["z_image"])
    dtype = SAVE_DTYPES[config.get("save_dtype") or adapter.get("dtype", "bfloat16")]
    path.write_bytes(lora_bytes(sample, int(adapter.get("rank", 4)), dtype, nan=mode == "nan_lora"))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", required=True)
    parser.add_argument("--resume_from_checkpoint", nargs="?", const=True, default=None)
    args, _ = parser.parse_known_args()
    config = tomllib.loads(Path(args.config).read_text())
    mode = os.environ.get("FAKE_MODE") or config.get("fake_mode", "ok")
    problem = startup_problem(config)
    if problem is not None:
        print(problem, flush=True)
        return 1
    cache_latents(config)
    run = Path(config["output_dir"]) / datetime.now(UTC).strftime("%Y%m%d_%H-%M-%S")
    run.mkdir(parents=True, exist_ok=True)
    print("Global batch size = 1", flush=True)
    if mode == "echo_config":
        print('"steps: 1 loss: - iter time (s): 1" = 1', flush=True)
    if mode == "stubborn":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        spawn_helper(Path(config["output_dir"]), own_session=True)
    print("Started new epoch: 1", flush=True)
    print("steps: 1 loss: 0.5000 iter time (s): 0.010 samples/sec: 100.0", flush=True)
    if mode == "oom":
        print_cuda_oom()
        return 1
    if mode == "empty":
        print(
            "RuntimeError: Processed dataset was empty. Probably caused by rounding down for "
            "each size bucket.",
            flush=True,
        )
        return 1
    if mode == "incomplete":
        return 0  # e.g. a validation refusal: exit 0, no TRAINING COMPLETE!
    if mode == "killed":
        return 247
    if mode == "orphan":
        spawn_helper(Path(config["output_dir"]), own_session=False)
        return 1
    if mode == "stubborn":
        for step in range(2, 600):  # about 30 s, then it gives up on its own
            print(f"steps: {step} loss: 0.5000 iter time (s): 0.050 samples/sec: 20.0", flush=True)
            time.sleep(0.05)
        return 1
    if mode == "chatty":
        for i in range(CHATTER_LINES):
            print(f"chatter {i:05d} " + "." * 60, flush=True)
    epoch = run / f"epoch{config['epochs']}"
    epoch.mkdir()
    if mode != "no_output":
        lora = os.environ.get("FAKE_LORA_FILE") or config.get("fake_lora_file")
        _save_lora(epoch / (lora or "adapter_model.safetensors"), config, mode)
    print(f"Saving model to directory epoch{config['epochs']}", flush=True)
    print("TRAINING COMPLETE!", flush=True)
    return 0


CHATTER_LINES = 2000  # about 150 KB: more than a pipe's buffer


def spawn_helper(output_dir: Path, *, own_session: bool) -> None:
    """A process that inherits this trainer's output and outlives it (as a deepspeed rank can)."""
    helper = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=own_session
    )
    (output_dir / "helper.pid").write_text(str(helper.pid))


def print_cuda_oom() -> None:
    """The traceback tail diffusion-pipe dies with when the GPU runs out of memory."""
    print("Traceback (most recent call last):", flush=True)
    print('  File "train.py", line 900, in <module>', flush=True)
    print(
        "[rank0]: torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB",
        flush=True,
    )


MEDIA = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"} | {
    ".mp4",
    ".avi",
    ".mov",
    ".mkv",
    ".webm",
}


def _paths(value: object) -> list[str]:
    if isinstance(value, str):
        return [value] if value.startswith("/") else []
    if isinstance(value, dict):
        return [p for v in value.values() for p in _paths(v)]
    if isinstance(value, list):
        return [p for v in value for p in _paths(v)]
    return []


def startup_problem(config: dict[str, object]) -> str | None:
    """The error diffusion-pipe would stop with on this config, if any (utils/dataset.py,
    models/base.py)."""
    for path in _paths(config.get("model", {})):
        if not Path(path).exists():
            return f"FileNotFoundError: [Errno 2] No such file or directory: '{path}'"
    mode = config.get("video_clip_mode", "single_beginning")
    if mode not in ("single_beginning", "single_middle"):
        return f"NotImplementedError: video_clip_mode={mode} is not recognized"
    if "dataset" not in config:
        return None
    dataset = tomllib.loads(Path(str(config["dataset"])).read_text())
    media = 0
    for directory in dataset.get("directory", []):
        folder = Path(directory["path"])
        if not folder.is_dir():
            return f"RuntimeError: Invalid path: {folder}"
        media += sum(1 for p in folder.iterdir() if p.suffix.lower() in MEDIA)
    if not media:
        return (
            "RuntimeError: Processed dataset was empty. Probably caused by rounding down for "
            "each size bucket."
        )
    return None


def cache_latents(config: dict[str, object]) -> None:
    """What diffusion-pipe leaves in each dataset folder before training: `cache/<model>/`."""
    if "dataset" not in config:
        return
    model = config.get("model", {})
    name = str(model.get("type", "model")) if isinstance(model, dict) else "model"
    dataset = tomllib.loads(Path(str(config["dataset"])).read_text())
    for directory in dataset.get("directory", []):
        cache = Path(directory["path"]) / "cache" / name
        cache.mkdir(parents=True, exist_ok=True)
        (cache / "metadata.json").write_text("{}")


def install_deepspeed(folder: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A `deepspeed` on PATH that records its arguments in `folder/argv` and runs this trainer
    with the `--config` it was given."""
    folder.mkdir(parents=True, exist_ok=True)
    launcher = folder / "deepspeed"
    launcher.write_text(
        "#!/bin/sh\n"
        f'echo "$@" > {folder / "argv"}\n'
        'while [ "$1" != "--config" ]; do shift; done\n'
        f'exec {sys.executable} -m tests.support.fake_trainer --config "$2"\n'
    )
    launcher.chmod(0o755)
    root = REPO
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("PYTHONPATH", str(root))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")  # one "GPU": the deepspeed path, not minipipe
    return folder / "argv"


if __name__ == "__main__":
    sys.exit(main())
