"""Which checkpoints are pruned (`to_prune`, a pure decision) and how (`prune_run`,
`before_launch`, on real folders laid out as diffusion-pipe writes them)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stages.training import checkpoints
from stages.training.checkpoints import PRUNING_PREFIX, before_launch, prune_run, to_prune
from stages.training.resume import plan_launch
from stages.training.run_folder import resumable_checkpoint
from tests.support.helpers import Recorded, stage_context

LORA = "adapter_model.safetensors"


def _tags(*steps: int) -> dict[str, bool]:
    return {f"global_step{s}": True for s in steps}


# --- the decision ------------------------------------------------------------------------------
def test_keeps_the_newest_n_counting_the_one_latest_names() -> None:
    folders = _tags(4, 8, 12, 16)
    assert to_prune(folders, "global_step16", keep=2) == ["global_step4", "global_step8"]
    assert to_prune(folders, "global_step16", keep=1) == [
        "global_step4",
        "global_step8",
        "global_step12",
    ]
    assert to_prune(folders, "global_step16", keep=4) == []
    assert to_prune(folders, "global_step16", keep=10) == []


def test_orders_by_step_number_not_by_name() -> None:
    # "global_step100" sorts before "global_step20" as text.
    folders = _tags(20, 100, 1000)
    assert to_prune(folders, "global_step1000", keep=2) == ["global_step20"]


def test_nothing_goes_unless_latest_names_a_complete_folder() -> None:
    folders = _tags(4, 8, 12)
    assert to_prune(folders, None, keep=1) == []
    assert to_prune(folders, "global_step99", keep=1) == []  # latest names a missing folder
    assert to_prune(folders, "garbage", keep=1) == []
    half = {**folders, "global_step16": False}  # latest written, files not all there
    assert to_prune(half, "global_step16", keep=1) == []


def test_never_a_folder_newer_than_latest() -> None:
    # global_step16 is being written (or a kill left it before `latest` moved): it stays, and
    # it does not count as one of the kept.
    folders = {**_tags(4, 8, 12), "global_step16": False}
    assert to_prune(folders, "global_step8", keep=1) == ["global_step4"]
    folders = _tags(4, 8, 12, 16)
    assert to_prune(folders, "global_step8", keep=2) == []


def test_an_older_incomplete_folder_goes_and_does_not_count() -> None:
    folders = {**_tags(4, 12, 16), "global_step8": False}
    assert to_prune(folders, "global_step16", keep=2) == ["global_step4", "global_step8"]
    assert to_prune(folders, "global_step16", keep=3) == ["global_step8"]


def test_saves_and_other_names_are_never_chosen() -> None:
    folders = {
        **_tags(4, 8),
        "epoch1": True,
        "step5": True,
        "global_step": True,
        "global_step4.bak": True,
        ".global_step2.tmp": True,
        f"{PRUNING_PREFIX}global_step1-abcd": True,
    }
    assert to_prune(folders, "global_step8", keep=1) == ["global_step4"]


def test_keep_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        to_prune(_tags(4, 8), "global_step8", keep=0)


@given(
    steps=st.sets(st.integers(0, 10_000), min_size=1, max_size=30),
    incomplete=st.sets(st.integers(0, 10_000), max_size=10),
    keep=st.integers(1, 12),
    data=st.data(),
)
def test_decision_properties(
    steps: set[int], incomplete: set[int], keep: int, data: st.DataObject
) -> None:
    newest = data.draw(st.sampled_from(sorted(steps)))
    complete = {s: s not in incomplete or s == newest for s in steps}
    doomed = {
        int(n.removeprefix("global_step"))
        for n in to_prune(_named(complete), f"global_step{newest}", keep)
    }
    older = [s for s in steps if s < newest]
    kept_older = sorted((s for s in older if complete[s]), reverse=True)[: keep - 1]
    # Exactly the older folders beyond the newest keep-1 complete ones go; newer ones stay.
    assert doomed == set(older) - set(kept_older)


def _named(complete: dict[int, bool]) -> dict[str, bool]:
    return {f"global_step{s}": done for s, done in complete.items()}


# --- the edge ----------------------------------------------------------------------------------
def _checkpoint(run: Path, step: int, *, complete: bool = True) -> Path:
    folder = run / f"global_step{step}"
    folder.mkdir(parents=True)
    (folder / "layer_00-model_states.pt").write_bytes(b"x" * 64)
    if complete:
        (folder / "mp_rank_00_model_states.pt").write_bytes(b"y" * 64)
    return folder


def _run_folder(output: Path, name: str = "20250101_00-00-00") -> Path:
    run = output / name
    run.mkdir(parents=True)
    return run


def _save(run: Path, name: str) -> None:
    (run / name).mkdir()
    (run / name / LORA).write_bytes(b"lora")


def _latest(run: Path, step: int) -> None:
    (run / "latest").write_text(f"global_step{step}")  # no newline, as DeepSpeed writes it


def _listed(run: Path) -> list[str]:
    return sorted(p.name for p in run.iterdir())


def test_prune_run_deletes_only_the_chosen_folders(tmp_path: Path) -> None:
    run = _run_folder(tmp_path)
    for step in (4, 8, 12):
        _checkpoint(run, step)
    _checkpoint(run, 16, complete=False)  # being written, `latest` not moved yet
    _save(run, "epoch1")
    _save(run, "step5")
    _latest(run, 12)
    pruned = prune_run(run, keep=2)
    assert pruned.removed == ["global_step4"]
    assert pruned.failed == []
    assert _listed(run) == [
        "epoch1",
        "global_step12",
        "global_step16",
        "global_step8",
        "latest",
        "step5",
    ]
    assert resumable_checkpoint(run) == "global_step12"


def test_a_checkpoint_without_its_files_is_not_counted_as_kept(tmp_path: Path) -> None:
    run = _run_folder(tmp_path)
    _checkpoint(run, 4)
    _checkpoint(run, 8, complete=False)  # a kill mid-write, later resumed past it
    _checkpoint(run, 12)
    _latest(run, 12)
    assert prune_run(run, keep=2).removed == ["global_step8"]  # global_step4 is the second
    assert _listed(run) == ["global_step12", "global_step4", "latest"]


def test_without_latest_nothing_is_deleted(tmp_path: Path) -> None:
    run = _run_folder(tmp_path)
    for step in (4, 8, 12):
        _checkpoint(run, step)
    assert prune_run(run, keep=1).removed == []
    (run / "latest").write_text("global_step99")
    assert prune_run(run, keep=1).removed == []
    assert _listed(run) == ["global_step12", "global_step4", "global_step8", "latest"]


def test_the_folder_is_renamed_before_it_is_deleted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A kill during the delete leaves a .pruning-* folder, never a half global_stepN.
    run = _run_folder(tmp_path)
    _checkpoint(run, 4)
    _checkpoint(run, 8)
    _latest(run, 8)
    seen: list[list[str]] = []

    def killed_mid_delete(path: str | os.PathLike[str], *args: object, **kw: object) -> None:
        seen.append(_listed(run))
        (Path(path) / "mp_rank_00_model_states.pt").unlink()  # half deleted, then the kill
        raise KeyboardInterrupt  # stands in for the kill: nothing after it runs

    monkeypatch.setattr(shutil, "rmtree", killed_mid_delete)
    with pytest.raises(KeyboardInterrupt):
        prune_run(run, keep=1)
    assert len(seen) == 1
    assert "global_step4" not in seen[0]
    leftovers = [n for n in _listed(run) if n.startswith(PRUNING_PREFIX)]
    assert len(leftovers) == 1
    assert leftovers[0].startswith(f"{PRUNING_PREFIX}global_step4-")
    assert to_prune(checkpoints.listing(run), "global_step8", keep=1) == []
    assert plan_launch(tmp_path, LORA).note == "resuming run 20250101_00-00-00 from global_step8"


def test_before_launch_clears_leftovers_and_prunes_every_run_folder(tmp_path: Path) -> None:
    old = _run_folder(tmp_path, "20250101_00-00-00")
    for step in (3, 6):
        _checkpoint(old, step)
    _latest(old, 6)
    new = _run_folder(tmp_path, "20250102_00-00-00")
    for step in (4, 8, 12):
        _checkpoint(new, step)
    _latest(new, 12)
    leftover = new / f"{PRUNING_PREFIX}global_step2-0000"
    leftover.mkdir()
    (leftover / "layer_00-model_states.pt").write_bytes(b"half")
    _save(new, "epoch1")
    recorded = Recorded()
    before_launch(stage_context(tmp_path, recorded.record), tmp_path, keep=1)
    assert _listed(old) == ["global_step6", "latest"]
    assert _listed(new) == ["epoch1", "global_step12", "latest"]
    [(kind, note)] = recorded
    assert kind == "PROGRESS"
    assert note["pruned_checkpoints"] == [
        "20250101_00-00-00/global_step3",
        f"{PRUNING_PREFIX}global_step2-0000",
        "global_step4",
        "global_step8",
    ]
    assert "keeping the newest 1" in note["message"]


def test_a_failed_delete_is_reported_not_raised(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = _run_folder(tmp_path)
    for step in (4, 8):
        _checkpoint(run, step)
    _latest(run, 8)

    def refuse(src: object, dst: object) -> None:
        raise PermissionError(13, "Permission denied", str(src))

    monkeypatch.setattr(os, "rename", refuse)
    recorded = Recorded()
    before_launch(stage_context(tmp_path, recorded.record), tmp_path, keep=1)
    messages = [data["message"] for _, data in recorded]
    assert messages == ["could not remove old checkpoint(s): global_step4 (Permission denied)"]
    assert str(tmp_path) not in messages[0]  # no worker path
    assert _listed(run) == ["global_step4", "global_step8", "latest"]
