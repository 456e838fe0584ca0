"""RunPod's local test mode: `python handler.py` reads test_input.json from the working folder,
`python handler.py --test_input '{...}'` takes the job on the command line; the real SDK runs
one job and exits 0 on success. The SDK names every such job `local_test`: each run must still
be a job of its own, and the committed test_input.json must succeed on any machine."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from events.store import EventStore
from handler import LOCAL_TEST_ID, as_run, sdk_log_level
from orchestrator.request import parse_request
from stages.dataset import inline
from stages.dataset.limits import DownloadLimits
from tests.support.local_test_mode import LocalRun, local_env, run_local
from tests.support.media import shades_zip
from tests.support.paths import REPO

TEST_INPUT = REPO / "test_input.json"


def _generator() -> ModuleType:
    """examples/make_test_input.py (a script, not a package)."""
    path = REPO / "examples" / "make_test_input.py"
    spec = importlib.util.spec_from_file_location("make_test_input", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_test_input_and_the_hub_test_are_what_their_generator_writes() -> None:
    files = _generator().render()
    assert sorted(files) == [REPO / ".runpod" / "tests.json", TEST_INPUT]
    for path, text in files.items():
        assert path.read_text(encoding="utf-8") == text, (
            f"{path.name} is stale: run python examples/make_test_input.py"
        )


def test_the_hub_test_is_the_local_test_job_and_allows_for_a_cold_start() -> None:
    hub = json.loads((REPO / ".runpod" / "tests.json").read_text(encoding="utf-8"))
    (test,) = hub["tests"]  # a test that completes; none meant to fail
    assert test["input"] == json.loads(TEST_INPUT.read_text(encoding="utf-8"))["input"]
    assert test["timeout"] >= 300_000  # the image's pull and the SDK's checks count too


def test_the_test_input_needs_no_host_and_fits_the_default_inline_bound() -> None:
    body = json.loads(TEST_INPUT.read_text(encoding="utf-8"))
    request = parse_request(body["input"])
    url = request.dataset.images_url
    assert url is not None
    assert inline.is_data_url(url)
    assert inline.check(url) <= DownloadLimits().max_inline_bytes
    assert request.model_type == "tiny"
    assert request.output.method == "local"


def test_the_sdks_local_test_id_becomes_a_fresh_id_each_time() -> None:
    job = {"id": LOCAL_TEST_ID, "input": {"x": 1}}
    first, second = as_run(job), as_run(job)
    assert first["id"] != second["id"]
    assert first["id"].startswith("local-")
    assert first["input"] == job["input"]
    assert job["id"] == LOCAL_TEST_ID  # the SDK's own job dict is left as it is
    assert as_run({"id": "abc-123-u1", "input": {}})["id"] == "abc-123-u1"  # a real id stays


def test_the_sdk_log_level_is_info_unless_the_user_chose_one() -> None:
    env: dict[str, str] = {}
    assert sdk_log_level(env) == "INFO"
    assert env == {"RUNPOD_LOG_LEVEL": "INFO"}
    assert sdk_log_level({"RUNPOD_LOG_LEVEL": "debug"}) == "DEBUG"
    legacy = {"RUNPOD_DEBUG_LEVEL": "WARN"}  # the SDK's older name is honoured too
    assert sdk_log_level(legacy) == "WARN"
    assert "RUNPOD_LOG_LEVEL" not in legacy


def _job_ids(root: Path) -> list[str]:
    jobs = root / "jobs"
    return sorted(p.name for p in jobs.iterdir() if p.is_dir()) if jobs.is_dir() else []


def _check(run: LocalRun) -> dict[str, Any]:
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    # Progress is not posted to the SDK's placeholder URL (one ERROR line per update).
    assert [line for line in run.lines if "ERROR" in line] == []
    output: dict[str, Any] = run.result()["output"]
    assert output["status"] == "success", output
    chosen = [r for r in run.logs() if r.get("event") == "local test job runs under a fresh id"]
    assert [r["job_id"] for r in chosen] == [output["job_id"]]
    return output


@pytest.mark.slow
def test_test_input_json_succeeds_and_every_run_is_a_job_of_its_own(tmp_path: Path) -> None:
    cwd, root = tmp_path / "cwd", tmp_path / "root"
    cwd.mkdir()
    shutil.copy(TEST_INPUT, cwd / "test_input.json")
    env = local_env(root)

    first = _check(run_local(cwd, env))  # plain `python handler.py`: test_input.json
    assert first["epochs_completed"] == 2
    assert Path(first["output"]["download_url"].removeprefix("file://")).is_file()

    other = {
        "model_type": "tiny",
        "dataset": {"type": "precaptioned", "images_url": inline.to_data_url(shades_zip(3))},
        "training": {"epochs": 1, "resolution": 32},
        "output": {"method": "local"},
    }
    second = _check(run_local(cwd, env, {"input": other}))
    assert second["job_id"] != first["job_id"]
    assert second["epochs_completed"] == 1  # its own input, not the first run's answer

    ids = _job_ids(root)
    assert ids == sorted([first["job_id"], second["job_id"]])
    assert LOCAL_TEST_ID not in ids
    store = EventStore.on_disk(root)
    for job_id, images in ((first["job_id"], 4), (second["job_id"], 3)):
        events = store.read(job_id)
        assert events[-1].type == "COMPLETE"
        assert len(list((root / "jobs" / job_id / "dataset" / "images").glob("*.txt"))) == images
