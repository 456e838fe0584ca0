"""RunPod's job lifecycle, through localpod and the real SDK worker loop over handler.py: what a
user of a real endpoint gets when a job is cut off, fails on something transient, or is
cancelled, and then asks again (`POST /retry`, or a new request with `resume_from`).

localpod follows RunPod's rules here: a request without a policy gets the default execution
timeout (shortened for the test), `/retry` re-sends the original input under the same id and
only for FAILED and TIMED_OUT jobs."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from pathlib import Path

import pytest

from events.audit import audit
from tests.support.dataserver import DataServer
from tests.support.localpod_jobs import (
    has_event,
    job_digest,
    job_events,
    post,
    submit,
    tiny_body,
    tiny_pod,
    trained_steps,
    until,
)
from tests.support.media import shades_zip

pytestmark = pytest.mark.slow
STOPPED = "stopped by RunPod (cancel or execution timeout)"


@pytest.fixture
def data() -> Iterator[DataServer]:
    with DataServer() as srv:
        srv.files["/d.zip"] = shades_zip(6)
        yield srv


def test_a_job_cut_off_by_the_default_execution_timeout_resumes_on_retry(
    tmp_path: Path, data: DataServer
) -> None:
    """No policy in the request: RunPod's default timeout (600 s there, 20 s here) applies to
    the first delivery and to every retry (RunPod re-sends the same input and policy). A job
    longer than that finishes over a few retries, each one continuing from the checkpoint the
    last one saved when it was stopped."""
    pod = tiny_pod(tmp_path, step_sleep=1.0, default_execution_timeout_s=20)
    with pod:
        job_id = submit(pod, tiny_body(data, tmp_path, epochs=4))  # 24 steps: 24 s and more
        status = pod.wait_for(job_id, timeout=120)
        retries = late = 0
        while status["status"] == "TIMED_OUT" and retries < 6:
            # A delivery that finished as the limit passed records COMPLETE, not a stop: RunPod
            # drops its answer, and the retry answers from the log.
            stopped = functools.partial(_stopped_or_done, tmp_path, job_id, retries - late + 1)
            until(stopped, 120, "the stop recorded")
            late += _count(tmp_path, job_id, "COMPLETE", 1)
            post(pod, f"retry/{job_id}")
            retries += 1
            status = pod.wait_for(job_id, timeout=120)

    assert retries >= 1, "the first delivery was never cut off"
    assert status["status"] == "COMPLETED", status
    assert status["output"]["epochs_completed"] == 4
    events = job_events(tmp_path, job_id)
    assert audit(events).ok
    stops = [e for e in events if e.type == "CANCELLED"]
    assert late <= 1
    assert len(stops) == retries - late
    assert all(e.data["message"].startswith(STOPPED) for e in stops)
    resumes = [e for e in events if e.type == "RESUMED"]
    assert [e.data["from_status"] for e in resumes] == ["CANCELLED"] * len(stops)
    assert [e.attempt for e in resumes] == list(range(2, len(stops) + 2))
    # Each retry that trained continued from the checkpoint the stop before it saved (one cut
    # off after training only publishes).
    for stop, resume in zip(stops, resumes, strict=True):
        saved = [e for e in events if e.type == "CHECKPOINT" and e.seq < stop.seq][-1]
        later = [e for e in events if e.attempt == resume.attempt]
        notes = [
            str(e.data["message"]) for e in later if "Training: " in str(e.data.get("message"))
        ]
        assert all(f"from {saved.data['tag']}" in note for note in notes), notes
    steps = trained_steps(tmp_path, job_id)
    assert steps[-1] == 24
    assert steps.count(1) == 1  # never trained from the start again


def _count(tmp_path: Path, job_id: str, kind: str, wanted: int) -> bool:
    return sum(e.type == kind for e in job_events(tmp_path, job_id)) == wanted


def _stopped_or_done(tmp_path: Path, job_id: str, stops: int) -> bool:
    types = [e.type for e in job_events(tmp_path, job_id)]
    return types.count("CANCELLED") == stops or "COMPLETE" in types


def test_a_job_that_failed_on_a_missing_dataset_succeeds_on_retry_once_it_is_there(
    tmp_path: Path, data: DataServer
) -> None:
    with tiny_pod(tmp_path) as pod:
        job_id = submit(pod, tiny_body(data, tmp_path, path="/later.zip"))
        first = pod.wait_for(job_id, timeout=120)
        assert first["status"] == "FAILED", first
        assert "dataset.images_url" in first["error"]
        assert "404" in first["error"]
        asked = len(data.gets("/later.zip"))

        data.files["/later.zip"] = shades_zip(6)  # the user uploads it, then retries
        post(pod, f"retry/{job_id}")
        final = pod.wait_for(job_id, timeout=180)

    assert final["status"] == "COMPLETED", final
    assert len(data.gets("/later.zip")) > asked  # the retry really asked again
    events = job_events(tmp_path, job_id)
    assert [e.status for e in events].count("ERROR") == 1
    assert next(e for e in events if e.type == "RESUMED").data["from_status"] == "ERROR"


def test_a_cancelled_job_continues_under_a_new_id_with_resume_from(
    tmp_path: Path, data: DataServer
) -> None:
    with tiny_pod(tmp_path, step_sleep=0.2) as pod:
        body = tiny_body(data, tmp_path, epochs=6)
        first_id = submit(pod, body)
        until(has_event(tmp_path, first_id, "EPOCH_SAVED"), 120, "the first epoch save")
        post(pod, f"cancel/{first_id}")
        assert pod.wait_for(first_id, timeout=60)["status"] == "CANCELLED"
        until(has_event(tmp_path, first_id, "CANCELLED"), 120, "CANCELLED in the log")
        with pytest.raises(Exception, match="400"):  # RunPod retries only FAILED and TIMED_OUT
            post(pod, f"retry/{first_id}")
        before = job_digest(tmp_path, first_id)
        cut_at = max(trained_steps(tmp_path, first_id))

        body["input"]["resume_from"] = first_id
        second_id = submit(pod, body)
        final = pod.wait_for(second_id, timeout=240)

    assert final["status"] == "COMPLETED", final
    assert final["output"]["epochs_completed"] == 6
    assert len(data.gets("/d.zip")) == 1  # the dataset came along
    assert job_digest(tmp_path, first_id) == before  # the earlier job is left as it was
    assert min(trained_steps(tmp_path, second_id)) > 1
    assert min(trained_steps(tmp_path, second_id)) <= cut_at + 1
    events = job_events(tmp_path, second_id)
    assert audit(events).ok
    assert events[0].data["resume_from"] == first_id
