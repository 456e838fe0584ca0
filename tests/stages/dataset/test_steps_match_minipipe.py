"""The report's total_steps is the number of steps minipipe really trains, for the same dataset
and the configs the renderer writes: several aspect-ratio mixes, batches and repeats, and the
mix where every bucket is dropped."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from minipipe.model import build_tiny_model
from orchestrator.plan import trainer_spec
from orchestrator.request import parse_request
from stages.dataset.check import build_report
from stages.dataset.report import DatasetReport
from stages.training.config import JobPaths, render, write_configs
from tests.support.helpers import dataset_rules_for

pytestmark = pytest.mark.slow

DROPPED = "is being completely dropped because it doesn't have enough images"

# (image sizes -> count, image_repeats, batch_size, gradient_accumulation_steps)
MIXES = {
    # 1:1 3 -> 1 batch, 3:2 3 -> 1, 2:3 1 -> dropped: 2 steps (7 // 2 = 3 over the whole set)
    "three ratios": ({(32, 32): 3, (48, 32): 3, (32, 48): 1}, 1, 2, 1),
    # x2 repeats, batch 3: 1:1 4 -> 1, 2:1 4 -> 1, 1:2 2 -> dropped, 5:4 (the 1.26 bucket) 4 -> 1
    "repeats and accumulation": ({(32, 32): 2, (64, 32): 2, (32, 64): 1, (40, 32): 2}, 2, 1, 3),
    "one ratio": ({(32, 32): 5, (33, 32): 2}, 1, 2, 1),
}


def _job(
    tmp_path: Path, sizes: dict[tuple[int, int], int], repeats: int, batch: int, gas: int
) -> tuple[DatasetReport, Path]:
    paths = JobPaths.for_job(tmp_path, "job")
    assert paths.images_dir is not None
    paths.images_dir.mkdir(parents=True)
    for (width, height), count in sizes.items():
        for i in range(count):
            stem = f"{width}x{height}_{i}"
            Image.new("RGB", (width, height), (i * 50 % 255, 80, 200)).save(
                paths.images_dir / f"{stem}.png"
            )
            (paths.images_dir / f"{stem}.txt").write_text(f"shape {width} {height} number {i}")
    build_tiny_model(paths.models_root / "tiny")
    request = parse_request(
        {
            "model_type": "tiny",
            "dataset": {
                "type": "precaptioned",
                "images_url": "https://example.com/d.zip",
                "image_repeats": repeats,
            },
            "training": {
                "epochs": 2,
                "resolution": 32,
                "batch_size": batch,
                "gradient_accumulation_steps": gas,
                "save_every_n_epochs": 2,
            },
            "output": {"method": "local", "local": {"path": str(tmp_path / "out")}},
        }
    )
    report = build_report(paths.images_dir, None, dataset_rules_for(request))
    configs = render(trainer_spec(request), paths, image_count=report.usable_images)
    _, main = write_configs(configs, paths.config_dir)
    return report, main


def _train(main: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "minipipe", "--config", str(main)],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )


def _steps(log: str) -> int:
    return sum(1 for line in log.splitlines() if line.startswith("steps: "))


def _dropped_whole(report: DatasetReport) -> int:
    return sum(1 for b in report.buckets if not b.steps)


@pytest.mark.parametrize("mix", sorted(MIXES))
def test_total_steps_are_the_steps_minipipe_trains(tmp_path: Path, mix: str) -> None:
    report, main = _job(tmp_path, *MIXES[mix])
    assert report.total_steps > 0
    done = _train(main)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "TRAINING COMPLETE!" in done.stdout
    assert _steps(done.stdout) == report.total_steps
    assert sum(DROPPED in line for line in done.stdout.splitlines()) == _dropped_whole(report)


def test_a_dataset_whose_every_bucket_is_too_small_fails_in_both(tmp_path: Path) -> None:
    report, main = _job(tmp_path, {(32, 32): 1, (48, 32): 1, (32, 48): 1}, 1, 2, 1)
    assert report.usable_images == 3
    assert report.steps_per_epoch == 0
    assert report.fatal()
    done = _train(main)
    assert done.returncode == 1
    assert _steps(done.stdout) == 0
    assert sum(DROPPED in line for line in done.stdout.splitlines()) == 3
    assert "RuntimeError: Processed dataset was empty." in done.stderr
