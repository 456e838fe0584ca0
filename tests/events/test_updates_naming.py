"""UPDATES names sort as strings in event order for any count; resumes and cancels project right."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from bench.mirror_bench import Chain, SimClock
from events.projections.updates import (
    ProjectionState,
    UpdateFile,
    project,
    render,
    update_number_of,
    update_prefix,
    update_sort_key,
)

REPO = "me/lora"
URL = "https://huggingface.co/me/lora/resolve/main/adapter_model.safetensors?download=true"


def _name(number: int, kind: str = "PROGRESS") -> str:
    event = Chain("job-1", SimClock()).add(kind)
    return render(event, number=number, repo_id=REPO).path


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=10**12), min_size=1, max_size=40, unique=True))
def test_names_sort_as_strings_in_number_order(numbers: list[int]) -> None:
    by_number = [_name(n) for n in sorted(numbers)]
    assert sorted(by_number) == by_number  # what the seed's script does: sorted(), as strings
    assert sorted(by_number, key=update_sort_key) == by_number
    assert [update_number_of(p) for p in by_number] == sorted(numbers)


def test_the_boundaries_and_the_seeds_four_digits() -> None:
    names = [_name(n) for n in (1, 999, 1000, 9999, 10000, 10001, 99999, 100000, 10**12)]
    assert names[0] == "UPDATES/0001_20260101_120000_PROGRESS.json"  # the seed's NNNN_
    assert names[3].startswith("UPDATES/9999_")
    assert names[4].startswith("UPDATES/9999e10000_")  # e: five digits
    assert names[7].startswith("UPDATES/9999f100000_")
    assert names[8].startswith("UPDATES/9999m1000000000000_")  # m: thirteen digits
    assert sorted(names) == names
    assert update_prefix(10**25) == "9999z" + str(10**25)


def test_sort_key_reads_both_forms_and_ignores_other_names() -> None:
    assert update_number_of("UPDATES/0042_x_TRAINING.json") == 42
    assert update_number_of("UPDATES/10000_x_TRAINING.json") == 10000  # an older mirror's
    assert update_number_of("UPDATES/9999e12345_x.json") == 12345
    assert update_number_of("UPDATES/9999e123_x.json") is None  # the letter disagrees
    assert update_number_of("UPDATES/README.md") is None
    assert update_sort_key("UPDATES/9999e10000_a.json") > update_sort_key("UPDATES/9999_a.json")


def _replay(
    chain: Chain, state: ProjectionState | None = None
) -> tuple[ProjectionState, list[UpdateFile]]:
    state = state or ProjectionState()
    out = []
    for event in chain.events:
        state, update = project(state, event, repo_id=REPO)
        if update is not None:
            out.append(update)
    return state, out


def test_resumed_supersedes_the_halted_file_and_replays_from_the_state() -> None:
    clock = SimClock()
    chain = Chain("job-1", clock)
    for kind in ("INITIALIZED", "TRAINING"):
        chain.add(kind)
    chain.add("ERROR", error="publish refused")
    state, updates = _replay(chain)
    error_path = updates[-1].path
    assert state.halted_path == error_path
    saved = ProjectionState.from_dict(json.loads(json.dumps(state.to_dict())))
    assert saved == state  # survives the cursor file
    chain.add("RESUMED")
    chain.add("COMPLETE", direct_download_url=URL)
    _, again = _replay(chain, saved)  # a later delivery from the saved state
    assert [u.kind for u in again] == ["RESUMED", "COMPLETE"]
    assert again[0].deletes == (error_path,)
    assert again[1].deletes == ()
    _, whole = _replay(chain)  # from scratch: the same files, the same delete
    assert [u for u in whole if u.kind in ("RESUMED", "COMPLETE")] == again


def test_interrupted_then_resumed_deletes_nothing() -> None:
    chain = Chain("job-1", SimClock())
    for kind in ("INITIALIZED", "TRAINING", "INTERRUPTED", "RESUMED"):
        chain.add(kind)
    _, updates = _replay(chain)
    assert all(u.deletes == () for u in updates)
    assert json.loads(updates[2].content)["status"] == "INTERRUPTED"  # the seed keeps polling


def test_cancelled_with_a_published_lora_reads_as_complete_with_its_url() -> None:
    chain = Chain("job-1", SimClock())
    chain.add("TRAINING")
    output = {"download_url": URL, "repo_url": "https://huggingface.co/me/lora"}
    event = chain.add(
        "CANCELLED",
        message="RunPod cancelled the job",
        published={"latest_epoch": "epoch3", "output": output},
    )
    update = render(event, number=7, repo_id=REPO)
    body = json.loads(update.content)
    assert update.path.endswith("_CANCELLED.json")
    assert (body["status"], body["type"]) == ("COMPLETE", "CANCELLED")
    assert body["data"]["direct_download_url"] == URL
    assert body["data"]["repository_url"] == output["repo_url"]
    assert body["data"]["message"] == "RunPod cancelled the job"
    assert update.urgent is True


def test_cancelled_without_a_lora_reads_as_an_error_that_says_why() -> None:
    chain = Chain("job-1", SimClock())
    chain.add("TRAINING")
    none = chain.add("CANCELLED", message="execution timeout", published=None)
    failed = chain.add(
        "CANCELLED", message="cancelled", published={"error": "token refused: needs write"}
    )
    body = json.loads(render(none, number=3, repo_id=REPO).content)
    assert (body["status"], body["type"]) == ("ERROR", "CANCELLED")
    assert body["data"]["error"] == (
        "Job cancelled (execution timeout); no LoRA was published: training had saved no LoRA yet"
    )
    body = json.loads(render(failed, number=4, repo_id=REPO).content)
    assert "publishing the latest saved LoRA failed: token refused" in body["data"]["error"]
