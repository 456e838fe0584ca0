"""The runner with small real stages: start, skip what the log proves, resume, fail, decline."""

from __future__ import annotations

import multiprocessing as mp
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
import structlog
import structlog.testing

from events.audit import audit
from events.errors import LeaseHeld
from events.lease import FileLease
from events.store import EventStore
from events.vocabulary import Status
from orchestrator.response import respond
from orchestrator.runner import run_job
from stages.errors import PublishDeferred
from tests.support.rehearsal import Download, Publish, Train, Weights

SEED_WALK = [
    "INITIALIZED",
    "STARTING",
    "DOWNLOADING",
    "MODEL_DOWNLOAD",
    "TRAINING",
    "TRAINING_COMPLETE",
    "UPLOADING",
    "COMPLETE",
]


def _stages(tmp_path: Path, **train: Any) -> list[Any]:
    return [Download(), Weights(), Train(**train), Publish(tmp_path / "published")]


def _statuses(root: Path, job: str) -> list[str]:
    return [e.status for e in EventStore.on_disk(root).read(job) if e.type == e.status]


def test_a_new_job_runs_every_stage_and_completes(tmp_path: Path) -> None:
    root = tmp_path / "root"
    stages = _stages(tmp_path)
    outcome = run_job(root=root, job_id="job-1", stages=stages, start_data={"model_type": "tiny"})
    assert outcome.status is Status.COMPLETE
    assert outcome.ran == ["dataset", "weights", "training", "publish"]
    assert _statuses(root, "job-1") == SEED_WALK
    assert (tmp_path / "published" / "job-1.bin").read_bytes() == bytes([3]) * 16
    assert outcome.result is not None
    assert outcome.result["download_url"].endswith("job-1.bin")
    events = EventStore.on_disk(root).read("job-1")
    assert audit(events).ok
    assert [e.data["epoch"] for e in events if e.type == "EPOCH_SAVED"] == [1, 2, 3]
    assert outcome.view.dataset_report == {
        "model_type": "tiny",
        "dataset_type": "precaptioned",
        "images": 1,
        "videos": 0,
        "usable_images": 1,
        "usable_videos": 0,
        "captions": {"found": 1},
    }


def test_a_complete_job_delivered_again_returns_the_recorded_result(tmp_path: Path) -> None:
    root = tmp_path / "root"
    first = run_job(root=root, job_id="job-1", stages=_stages(tmp_path))
    count = len(EventStore.on_disk(root).read("job-1"))
    stages = _stages(tmp_path)
    again = run_job(root=root, job_id="job-1", stages=stages)
    assert again.status is Status.COMPLETE
    assert again.result == first.result
    assert again.ran == []
    assert all(s.runs == 0 for s in stages)
    assert len(EventStore.on_disk(root).read("job-1")) == count


def test_an_interrupted_job_resumes_and_skips_finished_stages(tmp_path: Path) -> None:
    root = tmp_path / "root"
    first = run_job(root=root, job_id="job-1", stages=_stages(tmp_path, interrupt_at=2))
    assert first.status is Status.INTERRUPTED
    assert first.view.epochs_saved == ({"name": "epoch1", "step": 1, "epoch": 1},)
    stages = _stages(tmp_path)
    second = run_job(root=root, job_id="job-1", stages=stages)
    assert second.status is Status.COMPLETE
    assert second.attempt == 2
    assert second.skipped == ["dataset", "weights"]
    assert second.ran == ["training", "publish"]
    assert stages[0].runs == 0
    events = EventStore.on_disk(root).read("job-1")
    resumed = next(e for e in events if e.type == "RESUMED")
    assert resumed.attempt == 2
    assert resumed.data["from_status"] == "INTERRUPTED"
    # Training continued from epoch 2: epoch 1 was not trained twice.
    assert [e.data["epoch"] for e in events if e.type == "EPOCH_SAVED"] == [1, 2, 3]
    assert audit(events).ok


def test_a_stage_whose_output_vanished_runs_again(tmp_path: Path) -> None:
    root = tmp_path / "root"
    run_job(root=root, job_id="job-1", stages=_stages(tmp_path, interrupt_at=1))
    shutil.rmtree(root / "jobs" / "job-1" / "dataset")
    stages = _stages(tmp_path)
    outcome = run_job(root=root, job_id="job-1", stages=stages)
    assert outcome.status is Status.COMPLETE
    assert outcome.ran == ["dataset", "training", "publish"]
    assert outcome.skipped == ["weights"]  # its file is still there
    assert (root / "jobs" / "job-1" / "dataset" / "a.txt").exists()
    assert audit(EventStore.on_disk(root).read("job-1")).ok


def test_a_failed_stage_records_error_and_the_next_delivery_resumes_it(tmp_path: Path) -> None:
    root = tmp_path / "root"
    secret = "hf_TopSecretTokenValue0987654321"
    failing = run_job(
        root=root,
        job_id="job-1",
        stages=_stages(tmp_path, fail_with=f"dataset has no captions (token {secret})"),
        secrets=[secret],
    )
    assert failing.status is Status.ERROR
    assert failing.error == "dataset has no captions (token ***)"
    assert secret not in (root / "jobs" / "job-1" / "events.jsonl").read_text()
    # POST /retry after the cause is fixed: the same id, the same input, and it resumes.
    stages = _stages(tmp_path)
    resumed = run_job(root=root, job_id="job-1", stages=stages)
    assert resumed.status is Status.COMPLETE
    assert resumed.attempt == 2
    assert resumed.ran == ["training", "publish"]  # the dataset stage's output still verifies
    events = EventStore.on_disk(root).read("job-1")
    resumed_event = next(e for e in events if e.type == "RESUMED")
    assert resumed_event.data["from_status"] == "ERROR"


def test_the_failure_log_line_names_the_failed_status_and_its_attempt(tmp_path: Path) -> None:
    root = tmp_path / "root"
    failing = _stages(tmp_path, fail_with="dataset has no captions")
    with structlog.testing.capture_logs() as first:
        run_job(root=root, job_id="job-1", stages=failing)
    again = _stages(tmp_path, fail_with="still no captions")
    with structlog.testing.capture_logs() as second:
        run_job(root=root, job_id="job-1", stages=again)
    lines = [line for line in first + second if line["event"] == "job failed"]
    assert [(line["status"], line["attempt"], line["stage"]) for line in lines] == [
        ("ERROR", 1, "training"),
        ("ERROR", 2, "training"),
    ]


def test_an_unexpected_exception_names_the_stage(tmp_path: Path) -> None:
    class Broken(Download):
        def run(self, ctx):  # type: ignore[no-untyped-def]
            raise KeyError("images")

    outcome = run_job(root=tmp_path, job_id="job-1", stages=[Broken()])
    assert outcome.status is Status.ERROR
    assert outcome.error == "stage dataset failed: KeyError: 'images'"


def test_a_second_worker_is_refused_while_the_first_holds_the_job(tmp_path: Path) -> None:
    holder = FileLease(tmp_path / "jobs" / "job-1", owner="other-worker", ttl_s=60)
    holder.acquire()
    stages = _stages(tmp_path)
    with pytest.raises(LeaseHeld, match="other-worker"):
        run_job(root=tmp_path, job_id="job-1", stages=stages)
    assert EventStore.on_disk(tmp_path).read("job-1") == []


def _die_mid_training(root: str, dest: str) -> None:
    lease = FileLease(Path(root) / "jobs" / "job-1", owner="doomed", ttl_s=0.5)
    stages = [Download(), Weights(), Train(kill_at=2), Publish(Path(dest))]
    run_job(root=Path(root), job_id="job-1", stages=stages, lease=lease)


def test_a_killed_worker_loses_only_the_unsaved_work(tmp_path: Path) -> None:
    root = tmp_path / "root"
    proc = mp.get_context("spawn").Process(
        target=_die_mid_training, args=(str(root), str(tmp_path / "published"))
    )
    proc.start()
    proc.join(60)
    assert proc.exitcode == -9  # SIGKILL: no INTERRUPTED, no cleanup
    assert _statuses(root, "job-1")[-1] == "TRAINING"
    time.sleep(0.6)  # the dead worker's lease runs out
    stages = _stages(tmp_path)
    outcome = run_job(root=root, job_id="job-1", stages=stages)
    assert outcome.status is Status.COMPLETE
    assert outcome.attempt == 2
    events = EventStore.on_disk(root).read("job-1")
    assert next(e for e in events if e.type == "RESUMED").data["from_status"] == "TRAINING"
    assert [e.data["epoch"] for e in events if e.type == "EPOCH_SAVED"] == [1, 2, 3]
    assert audit(events).ok


class _Cancelled(Train):
    def run(self, ctx):  # type: ignore[no-untyped-def]
        from stages.errors import JobCancelled  # noqa: PLC0415

        (ctx.job_dir / "output").mkdir(exist_ok=True)
        (ctx.job_dir / "output" / "epoch1.bin").write_bytes(b"lora")
        raise JobCancelled("cancelled by the client")


def test_a_cancel_publishes_the_latest_lora_then_records_cancelled(tmp_path: Path) -> None:
    seen: list[str] = []

    def salvage(ctx: Any) -> dict[str, Any]:
        return {"lora": str(ctx.job_dir / "output" / "epoch1.bin")}

    outcome = run_job(
        root=tmp_path,
        job_id="job-1",
        stages=[Download(), Weights(), _Cancelled()],
        salvage=salvage,
        observers=[lambda e: seen.append(e.status)],
    )
    assert outcome.status is Status.CANCELLED
    assert outcome.result is not None
    assert outcome.result["published"]["lora"].endswith("epoch1.bin")
    assert seen[-2:] == ["UPLOADING", "CANCELLED"]
    assert seen == _statuses_all(tmp_path, "job-1")
    assert audit(EventStore.on_disk(tmp_path).read("job-1")).ok


def test_a_failing_salvage_still_records_the_cancel(tmp_path: Path) -> None:
    def salvage(ctx: Any) -> dict[str, Any]:
        raise OSError("disk full")

    outcome = run_job(
        root=tmp_path, job_id="job-1", stages=[Download(), Weights(), _Cancelled()], salvage=salvage
    )
    assert outcome.status is Status.CANCELLED
    assert outcome.result is not None
    assert outcome.result["salvage_error"] == "OSError: disk full"


def _statuses_all(root: Path, job: str) -> list[str]:
    return [e.status for e in EventStore.on_disk(root).read(job)]


def test_the_first_answer_is_whole_while_the_log_keeps_it_redacted(tmp_path: Path) -> None:
    class Presign(Publish):
        def run(self, ctx: Any) -> dict[str, Any]:
            return {"download_url": "https://s3/x?X-Amz-Credential=AKIAABCDEFGHIJKLMNOP%2F"}

    stages = [Download(), Weights(), Train(), Presign(tmp_path / "p")]
    outcome = run_job(
        root=tmp_path, job_id="job-1", stages=stages, secrets=["AKIAABCDEFGHIJKLMNOP"]
    )
    assert outcome.result is not None
    assert "AKIAABCDEFGHIJKLMNOP" in outcome.result["download_url"]
    assert "AKIAABCDEFGHIJKLMNOP" not in (tmp_path / "jobs" / "job-1" / "events.jsonl").read_text()


class _DeferredPublish(Publish):
    """A publish the Hub defers (its commit limit): the first `defer` runs raise."""

    def __init__(self, dest: Path, defer: int = 1) -> None:
        super().__init__(dest)
        self.defer = defer

    def run(self, ctx: Any) -> dict[str, Any]:
        if self.defer > 0:
            self.defer -= 1
            raise PublishDeferred(
                "Hugging Face takes no commit to alice/r before 2027-01-15T09:00:00Z",
                retry_at=1_800_003_600.0,
                repo_id="alice/r",
                lora_path=str(ctx.job_dir / "lora.bin"),
            )
        return super().run(ctx)


def test_a_deferred_publish_is_interrupted_not_an_error_and_a_retry_only_publishes(
    tmp_path: Path,
) -> None:
    root = tmp_path / "root"
    stages = [Download(), Weights(), Train(), _DeferredPublish(tmp_path / "published")]
    first = run_job(root=root, job_id="job-1", stages=stages)
    assert first.status is Status.INTERRUPTED  # the LoRA is safe: not a failure
    assert first.result is not None
    assert first.result["deferred"] is True
    assert first.result["retry_at"] == "2027-01-15T09:00:00Z"
    assert first.result["lora_path"] == str(root / "jobs" / "job-1" / "lora.bin")
    message = first.result["message"]
    assert "POST /retry/job-1" in message
    assert "without training again" in message
    answer = respond(first, None)
    assert answer["status"] == "failed"
    assert answer["error"].startswith("the LoRA is trained but not published yet: ")
    assert "2027-01-15T09:00:00Z" in answer["error"]
    assert "POST /retry/job-1" in answer["error"]
    assert answer["deferred"]["lora_path"] == first.result["lora_path"]
    # POST /retry once the Hub allows commits: training's STAGE_DONE verifies, only publish runs.
    train = Train()
    second = run_job(root=root, job_id="job-1", stages=[Download(), Weights(), train, stages[3]])
    assert second.status is Status.COMPLETE
    assert second.ran == ["publish"]
    assert train.runs == 0
    events = EventStore.on_disk(root).read("job-1")
    assert [e.status for e in events].count("ERROR") == 0
    assert audit(events).ok
