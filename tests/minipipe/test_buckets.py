"""minipipe buckets like diffusion-pipe: aspect-ratio buckets from the dataset config, each
trimmed to the global batch, small ones dropped with diffusion-pipe's warning, and batches that
never mix buckets."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import tomli_w
from PIL import Image

from minipipe.config import ConfigError, DatasetConfig, load_dataset_config
from minipipe.data import BatchOrder, load_items

AR = {"enable_ar_bucket": True, "min_ar": 0.5, "max_ar": 2.0, "num_ar_buckets": 7}
DP_RATIOS = (0.5, 0.63, 0.794, 1.0, 1.26, 1.587, 2.0)  # dedup_and_sort(geomspace(0.5, 2, 7))


def _images(folder: Path, sizes: dict[tuple[int, int], int]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for (width, height), count in sizes.items():
        for i in range(count):
            stem = f"{width}x{height}_{i}"
            Image.new("RGB", (width, height), (i * 30, 60, 90)).save(folder / f"{stem}.png")
            (folder / f"{stem}.txt").write_text(f"{stem}", encoding="utf-8")
    return folder


def _dataset(tmp_path: Path, images: Path, **keys: Any) -> DatasetConfig:
    path = tmp_path / "dataset.toml"
    body = {"resolutions": [32], **keys, "directory": [{"path": str(images), "num_repeats": 1}]}
    path.write_text(tomli_w.dumps(body), encoding="utf-8")
    cfg, _ = load_dataset_config(path)
    return cfg


def test_the_ratio_buckets_are_diffusion_pipes(tmp_path: Path) -> None:
    images = _images(tmp_path / "i", {(32, 32): 1})
    assert _dataset(tmp_path, images, **AR).directories[0].ars == DP_RATIOS
    assert _dataset(tmp_path, images).directories[0].ars == (1.0,)  # AR bucketing off
    assert _dataset(
        tmp_path, images, enable_ar_bucket=True, ar_buckets=[[3, 2], 1.0, [2, 3]]
    ).directories[0].ars == (0.667, 1.0, 1.5)


def test_ar_bucketing_without_its_bounds_is_a_config_error(tmp_path: Path) -> None:
    images = _images(tmp_path / "i", {(32, 32): 1})
    with pytest.raises(ConfigError, match="min_ar"):
        _dataset(tmp_path, images, enable_ar_bucket=True, max_ar=2.0, num_ar_buckets=7)


def test_images_go_to_their_ratio_bucket_at_its_size(tmp_path: Path) -> None:
    images = _images(tmp_path / "i", {(32, 32): 2, (48, 32): 1, (32, 48): 1, (100, 20): 1})
    buckets = load_items(_dataset(tmp_path, images, **AR), print)
    # sqrt(32^2 x ar) by 32^2 / that, each rounded to a multiple of 16.
    assert {key: len(items) for key, items in buckets.items()} == {
        (1.0, 32, 32, 1): 2,
        (1.587, 48, 32, 1): 1,
        (0.63, 32, 48, 1): 1,
        (2.0, 48, 16, 1): 1,
    }
    for (_, width, height, _), items in buckets.items():
        assert {tuple(item.pixels.shape) for item in items} == {(3, height, width)}


def test_small_buckets_are_dropped_with_diffusion_pipes_warning(tmp_path: Path) -> None:
    images = _images(tmp_path / "i", {(32, 32): 5, (48, 32): 3, (32, 48): 1})
    lines: list[str] = []
    buckets = load_items(_dataset(tmp_path, images, **AR), lines.append)
    order = BatchOrder(buckets, 2, 2, seed=1, log=lines.append)
    assert lines == [  # in file-name order: 32x48 before 48x32
        "WARNING: size bucket (0.63, 32, 48, 1) is being completely dropped because it "
        "doesn't have enough images",
        "WARNING: size bucket (1.587, 48, 32, 1) is being completely dropped because it "
        "doesn't have enough images",
    ]
    assert order.steps_per_epoch == 1  # 5 square -> one batch of 4; 9 // 4 would be 2
    keys = {id(item): key for key, items in buckets.items() for item in items}
    for epoch in (1, 2):
        (batch,) = order.epoch_batches(epoch)
        assert {keys[id(item)] for micro in batch.micro_batches for item in micro} == {
            (1.0, 32, 32, 1)
        }


def test_batches_never_mix_buckets(tmp_path: Path) -> None:
    images = _images(tmp_path / "i", {(32, 32): 4, (64, 32): 4, (32, 64): 6})
    buckets = load_items(_dataset(tmp_path, images, **AR), print)
    order = BatchOrder(buckets, 1, 2, seed=3, log=print)
    assert order.steps_per_epoch == 2 + 2 + 3
    keys = {id(item): key for key, items in buckets.items() for item in items}
    batches = order.epoch_batches(1)
    assert len(batches) == order.steps_per_epoch
    for batch in batches:
        assert len({keys[id(item)] for micro in batch.micro_batches for item in micro}) == 1


def test_no_bucket_left_is_the_empty_dataset_error(tmp_path: Path) -> None:
    images = _images(tmp_path / "i", {(32, 32): 1, (48, 32): 1})
    buckets = load_items(_dataset(tmp_path, images, **AR), print)
    with pytest.raises(RuntimeError, match=r"^Processed dataset was empty\. Probably caused by"):
        BatchOrder(buckets, 2, 1, seed=1, log=print)
