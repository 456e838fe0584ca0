"""minipipe end to end: real subprocess runs, kills, signal files and resumes on tiny data."""

from __future__ import annotations

import io
import math
import os
import re
import signal
import struct
import subprocess
import sys
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import tomli_w
import torch
from PIL import Image
from safetensors.torch import load_file

from minipipe.config import DatasetConfig, DirectoryConfig
from minipipe.data import load_items
from minipipe.model import build_tiny_model
from stages.dataset.probe import probe_image
from stages.training.driver import TAIL_LINES
from stages.training.leftovers import clear_leftovers
from stages.training.log_lines import classify_failure

STEP_RE = re.compile(r"^steps: (\d+) loss: (\S+) iter time \(s\): (\S+) samples/sec: (\S+)$")
EPOCHS = 3
STEPS_PER_EPOCH = 4  # 4 images x 2 repeats / global batch 2


@dataclass(frozen=True)
class Setup:
    root: Path
    config: Path
    output_dir: Path


def _write_setup(root: Path, **overrides: object) -> Setup:
    model_dir = root / "model"
    build_tiny_model(model_dir)
    images = root / "images"
    images.mkdir()
    for i in range(4):
        Image.new("RGB", (40, 32), (i * 60, 100, 200 - i * 40)).save(images / f"img{i}.png")
        (images / f"img{i}.txt").write_text(f"a photo of colour {i}", encoding="utf-8")
    dataset = root / "dataset.toml"
    dataset.write_bytes(
        tomli_w.dumps(
            {
                "resolutions": [32],
                "enable_ar_bucket": False,
                "frame_buckets": [1],
                "directory": [{"path": str(images), "num_repeats": 2}],
            }
        ).encode()
    )
    output_dir = root / "out"
    main: dict[str, object] = {
        "output_dir": str(output_dir),
        "dataset": str(dataset),
        "epochs": EPOCHS,
        "micro_batch_size_per_gpu": 2,
        "gradient_accumulation_steps": 1,
        "gradient_clipping": 1.0,
        "warmup_steps": 2,
        "save_every_n_epochs": 1,
        "checkpoint_every_n_epochs": 1,
        "activation_checkpointing": True,
        "model": {"type": "tiny", "path": str(model_dir), "dtype": "float32"},
        "adapter": {"type": "lora", "rank": 4, "dtype": "float32"},
        "optimizer": {"type": "adamw_optimi", "lr": 2e-3, "betas": [0.9, 0.99], "eps": 1e-8},
    }
    main.update(overrides)
    main = {k: v for k, v in main.items() if v is not None}  # None removes a key
    config = root / "main.toml"
    config.write_bytes(tomli_w.dumps(main).encode())
    return Setup(root=root, config=config, output_dir=output_dir)


def _cmd(config: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "minipipe", "--config", str(config), *extra]


def _run(config: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        _cmd(config, *extra), check=False, capture_output=True, text=True, timeout=120
    )


def _steps(log: str) -> list[tuple[int, float]]:
    found = [STEP_RE.match(line) for line in log.splitlines()]
    return [(int(m[1]), float(m[2])) for m in found if m]


def _run_dir(output_dir: Path) -> Path:
    (run_dir,) = output_dir.iterdir()
    return run_dir


def _final_lora(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / f"epoch{EPOCHS}" / "adapter_model.safetensors"))


@pytest.fixture(scope="module")
def full_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Setup, str]:
    setup = _write_setup(tmp_path_factory.mktemp("full"))
    done = _run(setup.config)
    assert done.returncode == 0, done.stderr
    return setup, done.stdout


def test_full_run_trains_and_saves(full_run: tuple[Setup, str]) -> None:
    setup, log = full_run
    assert "TRAINING COMPLETE!" in log.splitlines()
    steps = _steps(log)
    assert [s for s, _ in steps] == list(range(1, EPOCHS * STEPS_PER_EPOCH + 1))
    assert all(math.isfinite(loss) for _, loss in steps)
    assert log.count("Started new epoch: ") == EPOCHS - 1
    run_dir = _run_dir(setup.output_dir)
    assert re.fullmatch(r"\d{8}_\d{2}-\d{2}-\d{2}", run_dir.name)
    assert (run_dir / "main.toml").is_file()
    assert (run_dir / "dataset.toml").is_file()
    for epoch in range(1, EPOCHS + 1):
        assert f"Saving model to directory epoch{epoch}" in log
        assert (run_dir / f"epoch{epoch}" / "adapter_config.json").is_file()
        assert not (run_dir / f"epoch{epoch}" / "tmp").exists()
    assert (run_dir / "latest").read_text() == f"global_step{EPOCHS * STEPS_PER_EPOCH}"
    first = load_file(str(run_dir / "epoch1" / "adapter_model.safetensors"))
    final = _final_lora(run_dir)
    assert set(first) == set(final)
    assert all(k.startswith("diffusion_model.") and ".default" not in k for k in final)
    # peft initialises lora_B to zero: a trained adapter has moved it, and kept moving.
    b_keys = [k for k in final if ".lora_B." in k]
    assert b_keys
    assert all(final[k].abs().sum() > 0 for k in b_keys)
    assert any(not torch.equal(first[k], final[k]) for k in final)


def _kill_after_first_checkpoint(proc: subprocess.Popen[str]) -> str:
    """SIGKILL the process group at the first step line after a checkpoint was announced
    (the announcement comes before the files, so killing on it would race the write)."""
    assert proc.stdout is not None
    seen: list[str] = []
    checkpointed = False
    for line in proc.stdout:
        seen.append(line)
        checkpointed = checkpointed or "Saving model checkpoint" in line
        if checkpointed and STEP_RE.match(line.strip()):
            os.killpg(proc.pid, signal.SIGKILL)
            break
    rest, _ = proc.communicate(timeout=30)
    return "".join(seen) + rest


def test_sigkill_then_resume_continues_from_checkpoint(
    tmp_path: Path, full_run: tuple[Setup, str]
) -> None:
    # Only the minutes timer checkpoints here, every 0.003 min = 0.18 s; steps sleep 0.05 s.
    setup = _write_setup(tmp_path, checkpoint_every_n_epochs=None, checkpoint_every_n_minutes=0.003)
    env = {**os.environ, "MINIPIPE_STEP_SLEEP": "0.05"}
    proc = subprocess.Popen(
        _cmd(setup.config),
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )
    first_log = _kill_after_first_checkpoint(proc)
    assert proc.returncode == -signal.SIGKILL
    assert "TRAINING COMPLETE!" not in first_log
    run_dir = _run_dir(setup.output_dir)
    ckpt_step = int((run_dir / "latest").read_text().removeprefix("global_step"))
    trained_before = max(s for s, _ in _steps(first_log))
    assert ckpt_step <= trained_before < EPOCHS * STEPS_PER_EPOCH
    # The reader lags the trainer under load: the kill can land inside the epoch save, leaving
    # epochN/tmp/, on which diffusion-pipe's saver (and minipipe's) trips at the next save. The
    # training stage clears it before every launch; so does this test.
    clear_leftovers(setup.output_dir)

    resumed = _run(setup.config, "--resume_from_checkpoint")
    assert resumed.returncode == 0, resumed.stderr
    assert "TRAINING COMPLETE!" in resumed.stdout
    assert "Resuming training from checkpoint. Resuming at epoch:" in resumed.stdout
    steps = [s for s, _ in _steps(resumed.stdout)]
    assert steps == list(range(ckpt_step + 1, EPOCHS * STEPS_PER_EPOCH + 1))
    # Steps trained twice are exactly those after the checkpoint.
    assert len(set(range(1, trained_before + 1)) & set(steps)) == trained_before - ckpt_step
    # Same seeds, same order, exact optimizer state: the result equals the uninterrupted run.
    expected = _final_lora(_run_dir(full_run[0].output_dir))
    got = _final_lora(run_dir)
    assert all(torch.allclose(expected[k], got[k], atol=1e-6) for k in expected)


def test_save_quit_checkpoints_exits_zero_and_resumes(tmp_path: Path) -> None:
    setup = _write_setup(tmp_path, checkpoint_every_n_epochs=100)
    env = {**os.environ, "MINIPIPE_STEP_SLEEP": "0.05"}
    proc = subprocess.Popen(
        _cmd(setup.config),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )
    assert proc.stdout is not None
    lines: list[str] = []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("steps: 2 "):
            (_run_dir(setup.output_dir) / "save_quit").touch()
    proc.wait(timeout=60)
    log = "".join(lines)
    assert proc.returncode == 0
    assert "Manually quitting" in log
    assert "TRAINING COMPLETE!" not in log
    run_dir = _run_dir(setup.output_dir)
    assert not (run_dir / "save_quit").exists()
    ckpt_step = int((run_dir / "latest").read_text().removeprefix("global_step"))
    assert 2 <= ckpt_step < EPOCHS * STEPS_PER_EPOCH
    assert (run_dir / f"global_step{ckpt_step}" / "mp_rank_00_model_states.pt").is_file()
    assert max(s for s, _ in _steps(log)) == ckpt_step

    resumed = _run(setup.config, "--resume_from_checkpoint", run_dir.name)
    assert resumed.returncode == 0, resumed.stderr
    assert "TRAINING COMPLETE!" in resumed.stdout
    assert _steps(resumed.stdout)[0][0] == ckpt_step + 1
    assert (run_dir / f"epoch{EPOCHS}" / "adapter_model.safetensors").is_file()


def test_missing_output_dir_is_a_clear_error(tmp_path: Path) -> None:
    setup = _write_setup(tmp_path)
    text = "\n".join(
        line for line in setup.config.read_text().splitlines() if not line.startswith("output_dir")
    )
    setup.config.write_text(text)
    done = _run(setup.config)
    assert done.returncode == 1
    assert "missing required key 'output_dir'" in done.stderr
    assert not setup.output_dir.exists()


def test_unknown_model_type_is_a_clear_error(tmp_path: Path) -> None:
    setup = _write_setup(tmp_path)
    setup.config.write_text(setup.config.read_text().replace('type = "tiny"', 'type = "flux"'))
    done = _run(setup.config)
    assert done.returncode == 1
    assert "unsupported model type 'flux'" in done.stderr


def test_resume_without_checkpoint_fails(tmp_path: Path) -> None:
    setup = _write_setup(tmp_path)
    (setup.output_dir / "20200101_00-00-00").mkdir(parents=True)
    done = _run(setup.config, "--resume_from_checkpoint")
    assert done.returncode != 0
    assert "Unable to find latest file" in done.stderr


def test_tiny_model_build_is_byte_identical(tmp_path: Path) -> None:
    torch.manual_seed(1)
    build_tiny_model(tmp_path / "a")
    torch.manual_seed(2)  # the global RNG must not leak into the build
    build_tiny_model(tmp_path / "b")
    for name in ("config.json", "model.safetensors"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


# Images minipipe must skip, as diffusion-pipe does, instead of crashing. Each is built in a few
# bytes or milliseconds; the name says what Pillow raises for it.
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SKIP_LINE = "WARNING: Media file {path} could not be opened. Skipping. The exception was: "


def _chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def _ihdr(width: int, height: int, bit_depth: int, colour_type: int) -> bytes:
    return struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)


def bilevel_png(width: int, height: int) -> bytes:
    """A complete, valid all-black 1-bit PNG, compressed row by row: a 200-megapixel one
    (over twice Pillow's MAX_IMAGE_PIXELS: DecompressionBombError) is about 25 KB."""
    packer = zlib.compressobj(9)
    row = bytes(1 + (width + 7) // 8)  # filter byte 0, then the row's bits
    data = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    return (
        PNG_SIGNATURE
        + _chunk(b"IHDR", _ihdr(width, height, 1, 0))
        + _chunk(b"IDAT", data)
        + _chunk(b"IEND", b"")
    )


def _rgb_png(size: tuple[int, int] = (40, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (10, 200, 30)).save(buf, "PNG")
    return buf.getvalue()


def bomb_png() -> bytes:
    return bilevel_png(20_000, 10_000)


def truncated_png() -> bytes:  # OSError: image file is truncated
    data = _rgb_png()
    return data[: len(data) // 2]


def short_header_png() -> bytes:  # ValueError: Truncated IHDR chunk (in Image.open)
    return PNG_SIGNATURE + _chunk(b"IHDR", _ihdr(40, 30, 8, 2)[:4]) + _chunk(b"IEND", b"")


def broken_chunk_png() -> bytes:  # SyntaxError: broken PNG file (while decoding)
    pixels = zlib.compress(bytes(1 + 3 * 40) * 30)
    garbage = struct.pack(">I", 5) + b'\xc0"\xbb\xde' + b"xxxxx" + bytes(4)
    return (
        PNG_SIGNATURE
        + _chunk(b"IHDR", _ihdr(40, 30, 8, 2))
        + _chunk(b"IDAT", pixels[:10])
        + garbage
        + _chunk(b"IEND", b"")
    )


UNUSABLE: dict[str, tuple[Callable[[], bytes], str]] = {
    "bomb.png": (bomb_png, "could be decompression bomb DOS attack"),
    "truncated.png": (truncated_png, "image file is truncated"),
    "short_header.png": (short_header_png, "Truncated IHDR chunk"),
    "broken_chunk.png": (broken_chunk_png, "broken PNG file"),
}


def _write_unusable(folder: Path) -> dict[Path, str]:
    """Every UNUSABLE image, captioned, in `folder`; returns path -> expected error text."""
    expected: dict[Path, str] = {}
    for name, (build, error) in UNUSABLE.items():
        path = folder / name
        path.write_bytes(build())
        path.with_suffix(".txt").write_text("an unusable image", encoding="utf-8")
        expected[path] = error
    return expected


def _skip_lines(log: str, path: Path) -> list[str]:
    return [line for line in log.splitlines() if line.startswith(SKIP_LINE.format(path=path))]


def test_the_bomb_is_what_the_dataset_report_calls_too_large(tmp_path: Path) -> None:
    path = tmp_path / "bomb.png"
    path.write_bytes(bomb_png())
    assert path.stat().st_size < 100_000
    assert probe_image(path).problem == "image_too_large"


@pytest.mark.parametrize("name", sorted(UNUSABLE))
def test_an_unusable_image_is_skipped_with_diffusion_pipes_warning(
    tmp_path: Path, name: str
) -> None:
    for i in range(2):
        Image.new("RGB", (40, 32), (i * 90, 100, 50)).save(tmp_path / f"good{i}.png")
        (tmp_path / f"good{i}.txt").write_text(f"good {i}", encoding="utf-8")
    build, error = UNUSABLE[name]
    bad = tmp_path / name
    bad.write_bytes(build())
    bad.with_suffix(".txt").write_text("bad", encoding="utf-8")
    cfg = DatasetConfig(
        path=tmp_path / "dataset.toml",
        resolutions=(32,),
        directories=(DirectoryConfig(tmp_path, 1, True, ""),),
    )
    lines: list[str] = []
    buckets = load_items(cfg, lines.append)
    assert [item.caption for item in buckets[1.0, 32, 32, 1]] == ["good 0", "good 1"]
    assert [line for line in lines if error in line] == lines
    assert len(_skip_lines("\n".join(lines), bad)) == 1


def test_a_run_skips_unusable_images_and_trains_on_the_rest(tmp_path: Path) -> None:
    setup = _write_setup(tmp_path, epochs=1)
    expected = _write_unusable(setup.root / "images")
    done = _run(setup.config)
    assert done.returncode == 0, done.stderr
    assert "TRAINING COMPLETE!" in done.stdout.splitlines()
    for path, error in expected.items():
        (line,) = _skip_lines(done.stdout, path)
        assert error in line
    # The 4 good images x 2 repeats / global batch 2, as if the bad ones were not there.
    assert [s for s, _ in _steps(done.stdout)] == list(range(1, STEPS_PER_EPOCH + 1))
    assert (_run_dir(setup.output_dir) / "epoch1" / "adapter_model.safetensors").is_file()


def test_a_dataset_of_only_unusable_images_is_the_empty_dataset_failure(tmp_path: Path) -> None:
    setup = _write_setup(tmp_path, epochs=1)
    images = setup.root / "images"
    for good in images.glob("img*.png"):
        good.unlink()
    expected = _write_unusable(images)
    done = _run(setup.config)
    assert done.returncode == 1
    assert not _steps(done.stdout)
    for path in expected:
        assert len(_skip_lines(done.stdout, path)) == 1
    assert "RuntimeError: Processed dataset was empty." in done.stderr
    tail = (done.stdout + done.stderr).splitlines()[-TAIL_LINES:]
    assert classify_failure(done.returncode, False, tail).reason == "empty_dataset"
