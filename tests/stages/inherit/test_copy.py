"""The inherit copy: write-once files are linked, files changed in place are copied, and the
earlier job's files never change when the new job writes its own."""

from __future__ import annotations

from pathlib import Path

from stages.inherit.copy import copy_job, copy_saved_lora, written_once
from stages.training.run_folder import newest_lora

RUN = "20261201_10-00-00"


def _origin(root: Path) -> Path:
    job = root / "jobs" / "old"
    files = {
        "dataset/images/a.png": b"png" * 100,
        "dataset/images/a.txt": b"a caption",
        "dataset/images/cache/tiny/metadata.db": b"sqlite",
        "dataset/images/cache/tiny/shard_0.bin": b"latents",
        f"output/{RUN}/latest": b"global_step12",
        f"output/{RUN}/global_step12/mp_rank_00_model_states.pt": b"optimizer" * 50,
        f"output/{RUN}/epoch2/adapter_model.safetensors": b"lora" * 50,
        f"output/{RUN}/epoch2/adapter_config.json": b"{}",
        "events.jsonl": b"{}\n",
        "request.json": b"{}",
        "logs/train.log": b"steps: 1\n",
    }
    for name, data in files.items():
        path = job / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return job


def _same_file(a: Path, b: Path) -> bool:
    return a.stat().st_ino == b.stat().st_ino


def test_which_files_are_written_once() -> None:
    assert written_once(Path("dataset/images/a.png"))
    assert not written_once(Path("dataset/images/cache/tiny/shard_0.bin"))
    assert written_once(Path(f"output/{RUN}/global_step12/x.pt"))
    assert written_once(Path(f"output/{RUN}/epoch2/adapter_model.safetensors"))
    assert not written_once(Path(f"output/{RUN}/latest"))


def test_a_checkpoint_copy_links_what_never_changes_and_copies_the_rest(tmp_path: Path) -> None:
    origin = _origin(tmp_path)
    target = tmp_path / "jobs" / "new"
    report = copy_job(origin, target)
    ckpt = f"output/{RUN}/global_step12/mp_rank_00_model_states.pt"
    assert _same_file(origin / ckpt, target / ckpt)
    assert _same_file(origin / "dataset/images/a.png", target / "dataset/images/a.png")
    for copied in ("dataset/images/cache/tiny/shard_0.bin", f"output/{RUN}/latest"):
        assert not _same_file(origin / copied, target / copied)
        assert (target / copied).read_bytes() == (origin / copied).read_bytes()
    # The new job makes its own log, request and logs.
    assert not (target / "events.jsonl").exists()
    assert not (target / "request.json").exists()
    assert not (target / "logs").exists()
    assert (report.linked, report.copied) == (5, 3)

    # The new job's trainer writes as diffusion-pipe does: `latest` rewritten, a shard
    # appended; the earlier job's files stay as they were.
    (target / f"output/{RUN}/latest").write_text("global_step18")
    with (target / "dataset/images/cache/tiny/shard_0.bin").open("ab") as shard:
        shard.write(b"more")
    assert (origin / f"output/{RUN}/latest").read_text() == "global_step12"
    assert (origin / "dataset/images/cache/tiny/shard_0.bin").read_bytes() == b"latents"


def test_a_copy_cut_short_finishes_when_run_again(tmp_path: Path) -> None:
    origin = _origin(tmp_path)
    target = tmp_path / "jobs" / "new"
    copy_job(origin, target, folders=("dataset",))  # as if killed before output/
    again = copy_job(origin, target)
    assert again.linked + again.copied == 4  # only what was missing
    assert not list(target.rglob(".tmp-inherit-*"))


def test_a_lora_copy_takes_only_the_newest_saved_lora(tmp_path: Path) -> None:
    origin = _origin(tmp_path)
    target = tmp_path / "jobs" / "new"
    saved = newest_lora(origin / "output", "adapter_model.safetensors")
    assert saved is not None
    copy_saved_lora(origin, target, saved)
    names = sorted(str(p.relative_to(target)) for p in target.rglob("*") if p.is_file())
    assert names == [
        f"output/{RUN}/epoch2/adapter_config.json",
        f"output/{RUN}/epoch2/adapter_model.safetensors",
    ]
