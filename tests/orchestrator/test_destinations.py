"""Where a request may send results and which hosts it may make the worker reach, checked when
the request is validated (before any download or GPU time), and the job it would have hurt."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from orchestrator.errors import RequestError
from orchestrator.settings import Settings
from orchestrator.worker import WorkerOptions, handle, validate
from stages.addresses import AddressPolicy


def _body(output: dict[str, Any], **dataset: Any) -> dict[str, Any]:
    return {
        "model_type": "tiny",
        "dataset": {
            "type": "precaptioned",
            "images_url": "http://127.0.0.1:9/d.zip",
            **dataset,
        },
        "output": output,
    }


def _local(path: Path | str) -> dict[str, Any]:
    return {"method": "local", "local": {"path": str(path)}}


def _problems(body: dict[str, Any], settings: Settings, job_id: str = "job-1") -> dict[str, str]:
    with pytest.raises(RequestError) as info:
        validate(body, settings, job_id)
    return dict(info.value.problems)


@pytest.mark.parametrize(
    "where",
    [
        lambda root: root / "jobs",  # the documented working folder's jobs/: the job itself
        lambda root: root / "jobs" / "job-1" / "..",
        lambda root: root,
        lambda root: root / "models",
        lambda root: root.parent,  # <parent>/<job id> is fine unless the id names the root
    ],
)
def test_results_may_not_go_into_the_services_working_folder(tmp_path: Path, where: Any) -> None:
    root = tmp_path / "root"
    (root / "jobs").mkdir(parents=True)
    settings = Settings(root=root)
    path = where(root)
    job_id = "root" if path == root.parent else "job-1"  # <parent>/root is the root itself
    problems = _problems(_body(_local(path)), settings, job_id)
    assert "inside the service's working folder" in problems["output.local.path"]


def test_a_symlink_into_the_working_folder_is_followed_and_refused(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "jobs").mkdir(parents=True)
    link = tmp_path / "outputs"
    link.symlink_to(root / "jobs")
    problems = _problems(_body(_local(link)), Settings(root=root))
    assert "inside the service's working folder" in problems["output.local.path"]


def test_results_go_only_where_the_operator_allows(tmp_path: Path) -> None:
    allowed = tmp_path / "published"
    settings = Settings(root=tmp_path / "root", local_output_roots=(allowed,))
    problems = _problems(_body(_local(tmp_path / "elsewhere")), settings)
    assert (
        f"outside the folders this worker publishes to ({allowed})" in problems["output.local.path"]
    )
    plan = validate(_body(_local(allowed / "team")), settings, "job-1")
    assert plan.publish.destination.local_path == allowed / "team"


@pytest.mark.parametrize("path", ["/dev/null", "/etc/hostname/sub"])
def test_a_destination_that_is_not_a_folder_is_refused_before_training(path: str) -> None:
    problems = _problems(_body(_local(path)), Settings(root=Path("/nonexistent-root")))
    assert "is not a folder" in problems["output.local.path"]


@pytest.mark.parametrize(
    "endpoint",
    [
        "http://169.254.169.254/",
        "http://10.0.0.7:9000",
        "http://[fd00::1]/",
        "http://127.0.0.1:9000",
    ],
)
def test_the_s3_endpoint_is_held_to_the_address_policy(endpoint: str) -> None:
    s3 = {"bucket": "b", "access_key": "ak12", "secret_key": "sk12", "endpoint_url": endpoint}
    settings = Settings(root=Path("/r"), addresses=AddressPolicy(allow_loopback=False))
    problems = _problems(_body({"method": "s3", "s3": s3}), settings)
    assert "private or reserved network" in problems["output.s3.endpoint_url"]
    assert "DPS_ALLOW_HOSTS" in problems["output.s3.endpoint_url"]
    allowed = Settings(
        root=Path("/r"), addresses=AddressPolicy(allow_hosts=frozenset({"10.0.0.7"}))
    )
    if "10.0.0.7" in endpoint:
        validate(_body({"method": "s3", "s3": s3}), allowed, "job-1")  # an operator's MinIO


def test_a_dataset_url_is_checked_at_validation_too() -> None:
    settings = Settings(root=Path("/r"), addresses=AddressPolicy(allow_loopback=False))
    problems = _problems(
        _body(_local("/tmp/out"), images_url="http://169.254.169.254/x.zip"), settings
    )
    assert "private or reserved network" in problems["dataset.images_url"]


def test_a_request_aimed_at_its_own_job_folder_is_refused_and_the_job_untouched(
    tmp_path: Path,
) -> None:
    """Through the worker: refused before anything is written, so no retry ever deletes it."""
    root = tmp_path / "root"
    (root / "jobs").mkdir(parents=True)
    options = WorkerOptions(settings=Settings(root=root), progress_every_s=0)
    job = {"id": "job-1", "input": _body(_local(root / "jobs"))}
    response = asyncio.run(handle(job, options))
    assert response["status"] == "failed"
    assert response["error"].splitlines()[1].startswith("  - output.local.path: ")
    assert list((root / "jobs").iterdir()) == []  # no job folder was even created


def test_a_bad_platform_job_id_is_a_request_problem_not_an_internal_error(tmp_path: Path) -> None:
    options = WorkerOptions(settings=Settings(root=tmp_path / "root"), progress_every_s=0)
    job = {"id": "../escape", "input": _body(_local(tmp_path / "out"))}
    response = asyncio.run(handle(job, options))
    assert response["status"] == "failed"
    assert "internal error" not in response["error"]
    assert "  - id: job id '../escape' is not usable" in response["error"]
    assert not (tmp_path / "root").exists()
