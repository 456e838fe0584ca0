"""A trainer that fails the ways diffusion-pipe fails, for the driver's classification tests.

`python -m tests.fake_trainer --config main.toml`; the TOML's `fake_mode` picks the failure.
It prints diffusion-pipe's real lines (see the reference) and lays out a run folder.
"""

from __future__ import annotations

import argparse
import sys
import tomllib
from datetime import UTC, datetime
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", required=True)
    parser.add_argument("--resume_from_checkpoint", nargs="?", const=True, default=None)
    args, _ = parser.parse_known_args()
    config = tomllib.loads(Path(args.config).read_text())
    mode = config.get("fake_mode", "ok")
    run = Path(config["output_dir"]) / datetime.now(UTC).strftime("%Y%m%d_%H-%M-%S")
    run.mkdir(parents=True, exist_ok=True)
    print("Global batch size = 1", flush=True)
    print("Started new epoch: 1", flush=True)
    print("steps: 1 loss: 0.5000 iter time (s): 0.010 samples/sec: 100.0", flush=True)
    if mode == "oom":
        print("Traceback (most recent call last):", flush=True)
        print('  File "train.py", line 900, in <module>', flush=True)
        print(
            "[rank0]: torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB",
            flush=True,
        )
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
    epoch = run / f"epoch{config['epochs']}"
    epoch.mkdir()
    if mode != "no_output":
        (epoch / config.get("fake_lora_file", "adapter_model.safetensors")).write_bytes(b"x" * 8)
    print(f"Saving model to directory epoch{config['epochs']}", flush=True)
    print("TRAINING COMPLETE!", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
