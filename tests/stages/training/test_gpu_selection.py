"""Which GPUs the trainer's command line gives deepspeed, and the environment it runs in.

DeepSpeed's runner (launcher/runner.py, 0.18.4) deletes CUDA_VISIBLE_DEVICES when `--num_gpus`
is given and then uses GPUs 0..N-1, so a worker told `CUDA_VISIBLE_DEVICES=2,3` must name those
GPUs with `--include localhost:2,3` instead.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from stages.errors import StageFailed
from stages.training.command import TrainerCommand, trainer_command, visible_gpus


def _command(tmp_path: Path, model_type: str = "sdxl", **kw: object) -> TrainerCommand:
    return trainer_command(
        model_type=model_type,
        config=tmp_path / "main.toml",
        resume_from=None,
        diffusion_pipe_dir=tmp_path / "dp",
        master_port=29500,
        **kw,  # type: ignore[arg-type]
    )


def _launcher_args(argv: list[str]) -> list[str]:
    """What comes between `deepspeed` and `train.py`."""
    assert argv[0] == "deepspeed"
    return argv[1 : argv.index("train.py")]


@pytest.fixture
def nvidia_smi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A stand-in `nvidia-smi` on PATH that lists two GPUs; CUDA_VISIBLE_DEVICES unset."""
    folder = tmp_path / "bin"
    folder.mkdir()
    tool = folder / "nvidia-smi"
    tool.write_text(
        "#!/bin/sh\n"
        'echo "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-aaaa)"\n'
        'echo "GPU 1: NVIDIA H100 80GB HBM3 (UUID: GPU-bbbb)"\n'
    )
    tool.chmod(0o755)
    monkeypatch.setenv("PATH", str(folder))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    return tool


def test_unset_counts_nvidia_smi_and_passes_num_gpus(tmp_path: Path, nvidia_smi: Path) -> None:
    assert _launcher_args(_command(tmp_path).argv) == ["--num_gpus=2"]
    assert visible_gpus() == 2


@pytest.mark.parametrize(
    ("visible", "include", "count"),
    [
        ("0", "localhost:0", 1),
        ("2,3", "localhost:2,3", 2),
        (" 1, 0 ", "localhost:1,0", 2),
        ("1,-1,2", "localhost:1", 1),  # CUDA ignores everything from the first invalid index
    ],
)
def test_set_names_those_gpus_and_never_passes_num_gpus(
    tmp_path: Path,
    nvidia_smi: Path,
    monkeypatch: pytest.MonkeyPatch,
    visible: str,
    include: str,
    count: int,
) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    argv = _command(tmp_path).argv
    assert _launcher_args(argv) == ["--include", include]
    assert not any(a.startswith("--num_gpus") for a in argv)
    assert visible_gpus() == count  # the batch maths multiplies by this


def test_an_explicit_count_does_not_override_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert _launcher_args(_command(tmp_path, num_gpus=1).argv) == ["--include", "localhost:2,3"]
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert _launcher_args(_command(tmp_path, num_gpus=3).argv) == ["--num_gpus=3"]


@pytest.mark.parametrize("visible", ["-1", "", " "])
def test_no_visible_gpu_is_a_clear_error(
    tmp_path: Path, nvidia_smi: Path, monkeypatch: pytest.MonkeyPatch, visible: str
) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    with pytest.raises(StageFailed, match="no GPU is visible") as exc:
        _command(tmp_path)
    assert f"CUDA_VISIBLE_DEVICES={visible!r}" in str(exc.value)
    assert visible_gpus() == 0


def test_no_gpu_and_no_nvidia_smi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    with pytest.raises(StageFailed, match="no GPU is visible to this worker;"):
        _command(tmp_path)


def test_gpus_named_by_uuid_are_refused_with_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """deepspeed's runner int()s the list: a UUID would crash it after the downloads."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-8a1b2c3d")
    with pytest.raises(StageFailed, match=r"CUDA_VISIBLE_DEVICES.*indices such as 0,1"):
        _command(tmp_path)


@pytest.mark.parametrize("model_type", ["sdxl", "flux", "wan13", "qwen", "z_image_turbo", "tiny"])
def test_the_trainer_runs_with_the_hub_offline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, model_type: str
) -> None:
    """Every file the trainer reads was fetched in the weights stage; one it would otherwise
    download at training time fails at once instead (see the weights stage's hf_cache)."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_HUB_CACHE", "/somewhere/else")
    command = _command(tmp_path, model_type, hub_cache=tmp_path / "models" / "hub")
    assert command.env["HF_HUB_OFFLINE"] == "1"
    assert command.env["HF_HUB_CACHE"] == str(tmp_path / "models" / "hub")
    assert _command(tmp_path, model_type).env["HF_HUB_CACHE"] == "/somewhere/else"
