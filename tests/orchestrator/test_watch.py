"""Reading UPDATES/: the seed README's own monitoring script, and `dpserve watch`."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from bench.mirror_bench import Chain, SimClock
from events.projections.hub import HubMirror
from events.projections.updates import ProjectionState, project, render
from orchestrator.cli.watch import watch, watch_updates
from tests.support.fakehub import FakeHub
from tests.support.sim_mirror import sim_mirror

TOKEN = "hf_watchreadertoken00000000000"
URL = "https://huggingface.co/me/lora/resolve/main/adapter_model.safetensors?download=true"

# The seed README's "Building an App with Progress Tracking" script, verbatim but for the
# usage lines, which read the repo and token from argv. The endpoint is pointed at the fake Hub
# by setting HF_ENDPOINT in the subprocess's environment (read when huggingface_hub imports).
SEED_SCRIPT = """
from huggingface_hub import HfApi
import json
import time

def monitor_training(repo_id: str, token: str):
    api = HfApi(token=token)
    seen_updates = set()

    while True:
        # List files in UPDATES folder
        files = api.list_repo_files(repo_id, repo_type="model")
        update_files = sorted([f for f in files if f.startswith("UPDATES/")])

        # Process new updates
        for update_file in update_files:
            if update_file not in seen_updates:
                seen_updates.add(update_file)

                # Download and parse
                content = api.hf_hub_download(repo_id, update_file, repo_type="model")
                with open(content) as f:
                    update = json.load(f)

                print(f"[{update['status']}] {update['data'].get('message', '')}")

                # Check if complete
                if update['status'] == 'COMPLETE':
                    return update['data']['direct_download_url']
                elif update['status'] == 'ERROR':
                    raise Exception(update['data'].get('error', 'Training failed'))

        time.sleep(30)  # Poll every 30 seconds

# Usage
import sys
download_url = monitor_training(sys.argv[1], sys.argv[2])
print(f"Download your LoRA: {download_url}")
"""


@pytest.fixture(scope="module")
def hub() -> Iterator[FakeHub]:
    with FakeHub() as running:
        yield running


def _job(final: str, **final_data: Any) -> Chain:
    clock = SimClock()
    chain = Chain("job-1", clock)
    for kind in ("INITIALIZED", "STARTING", "DOWNLOADING", "MODEL_DOWNLOAD", "TRAINING"):
        clock.sleep(30)
        chain.add(kind)
    for step in (10, 20):
        clock.sleep(400)
        chain.add("PROGRESS", step=step, total_steps=20, epoch=step // 10, loss=0.5)
    chain.add("CHECKPOINT", step=20)
    chain.add(final, **final_data)
    return chain


def _publish(hub: FakeHub, repo: str, chain: Chain) -> None:
    files = {}
    for number, event in enumerate(chain.events, start=1):
        update = render(event, number=number, repo_id=repo)
        files[update.path] = update.content
    hub.add_repo(repo, files)


def test_seed_monitoring_script_reads_our_updates(hub: FakeHub, tmp_path: Path) -> None:
    """The real mirror writes the files; the seed's script, unchanged, ends with the URL."""
    clock = SimClock()
    mirror = HubMirror(
        repo_id="me/seed-script",
        job_id="job-1",
        job_dir=tmp_path / "job",
        endpoint=hub.url,
        token=TOKEN,
        clock=clock,
        sleep=clock.sleep,
        background=False,
    )
    for event in _job(
        "COMPLETE",
        message="Training completed successfully!",
        **{
            "repository_url": "https://huggingface.co/me/lora",
            "direct_download_url": URL,
            "instructions": "Use the direct_download_url to download your trained LoRA.",
            "files_uploaded": ["adapter_model.safetensors", "adapter_config.json"],
            "safetensors_files": ["adapter_model.safetensors"],
        },
    ).events:
        mirror.publish(event)
    mirror.start()
    assert mirror.close(timeout=30)["ok"] is True
    script = tmp_path / "monitor.py"
    script.write_text(SEED_SCRIPT)
    env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_HOME": str(tmp_path / "hf")}
    env.pop("HF_HUB_OFFLINE", None)
    done = subprocess.run(
        [sys.executable, str(script), "me/seed-script", TOKEN],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "[INITIALIZED] Repository created, job starting"
    assert "[TRAINING] Training progress" in lines
    assert lines[-2] == "[COMPLETE] Training completed successfully!"
    assert lines[-1] == f"Download your LoRA: {URL}"


def test_watch_updates_returns_the_final_update_in_order(hub: FakeHub) -> None:
    _publish(hub, "me/watch-fn", _job("COMPLETE", direct_download_url=URL))
    seen: list[int] = []
    final = watch_updates(
        "me/watch-fn", TOKEN, hub.url, lambda u: seen.append(u["update_number"]), interval=0
    )
    assert final["status"] == "COMPLETE"
    assert seen == list(range(1, 10))


def test_watch_follows_new_updates_and_times_out(hub: FakeHub) -> None:
    chain = _job("INTERRUPTED")
    _publish(hub, "me/watch-wait", Chain("job-1", SimClock()))  # an empty UPDATES/ at first
    polls: list[float] = []
    clock = SimClock()

    def sleep(seconds: float) -> None:
        polls.append(seconds)
        clock.sleep(seconds)
        if len(polls) == 1:
            _publish(hub, "me/watch-wait", chain)

    with pytest.raises(Exception, match="INTERRUPTED") as caught:
        watch_updates(
            "me/watch-wait",
            TOKEN,
            hub.url,
            interval=5,
            timeout=12,
            sleep=sleep,
            clock=clock,
        )
    assert getattr(caught.value, "last", {})["update_number"] == len(chain.events)


def _cli(args: list[str]) -> Any:
    app = typer.Typer()
    app.command()(watch)
    return CliRunner().invoke(app, args, env={"HF_TOKEN": TOKEN})


def test_cli_watch_exits_0_with_the_url_on_complete(hub: FakeHub) -> None:
    _publish(hub, "me/cli-ok", _job("COMPLETE", direct_download_url=URL))
    result = _cli(["me/cli-ok", "--endpoint", hub.url, "--interval", "0"])
    assert result.exit_code == 0, result.output
    assert URL in result.output.replace("\n", "")
    assert "[CHECKPOINT]" not in result.output
    assert "TRAINING/CHECKPOINT" in result.output


def test_cli_watch_exits_1_with_the_error(hub: FakeHub) -> None:
    _publish(hub, "me/cli-err", _job("ERROR", error="CUDA out of memory at step 20"))
    result = _cli(["me/cli-err", "--endpoint", hub.url, "--interval", "0"])
    assert result.exit_code == 1, result.output
    assert "CUDA out of memory at step 20" in result.output


# -- resumed and cancelled jobs, long jobs: the seed's script, unchanged, is the test ------------
def _seed(hub: FakeHub, tmp_path: Path, repo: str) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "monitor.py"
    script.write_text(SEED_SCRIPT)
    env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_HOME": str(tmp_path / "hf")}
    env.pop("HF_HUB_OFFLINE", None)
    return subprocess.run(
        [sys.executable, str(script), repo, TOKEN],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _deliver(hub: FakeHub, repo: str, job_dir: Path, chain: Chain) -> None:
    """One delivery's mirror: replays the whole log, as a resumed runner does."""
    clock = SimClock()
    mirror = sim_mirror(hub, repo, job_dir, clock, token=TOKEN)
    for event in chain.events:
        mirror.publish(event)
    mirror.start()
    assert mirror.close(timeout=30)["ok"] is True


def test_seed_script_follows_a_resumed_job_past_its_old_error(hub: FakeHub, tmp_path: Path) -> None:
    repo = "me/seed-resumed"
    chain = _job("ERROR", error="output.huggingface.token was refused: it needs write access")
    _deliver(hub, repo, tmp_path / "job", chain)
    failed = _seed(hub, tmp_path, repo)
    assert failed.returncode == 1  # at the time, the job had failed: the script says so
    assert "it needs write access" in failed.stderr
    chain.clock.sleep(600)
    for kind in ("RESUMED", "UPLOADING"):
        chain.add(kind)
    chain.add("COMPLETE", message="Training completed successfully!", direct_download_url=URL)
    _deliver(hub, repo, tmp_path / "job", chain)  # POST /retry: the next delivery
    done = _seed(hub, tmp_path, repo)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "[ERROR] Something failed" not in lines
    assert "[RESUMED] Picked up again by a new attempt" in lines
    assert lines[-1] == f"Download your LoRA: {URL}"


def test_seed_script_returns_a_cancelled_jobs_published_lora(hub: FakeHub, tmp_path: Path) -> None:
    repo = "me/seed-cancelled"
    output = {"download_url": URL, "repo_url": "https://huggingface.co/me/lora"}
    chain = _job(
        "CANCELLED",
        message="RunPod cancelled the job",
        published={"latest_epoch": "epoch2", "output": output},
    )
    _deliver(hub, repo, tmp_path / "job", chain)
    done = _seed(hub, tmp_path, repo)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-2:] == [
        "[COMPLETE] RunPod cancelled the job",
        f"Download your LoRA: {URL}",
    ]
    result = _cli([repo, "--endpoint", hub.url, "--interval", "0"])
    assert result.exit_code == 2, result.output  # dpserve watch: cancelled, with the LoRA
    assert URL in result.output.replace("\n", "")


def test_seed_script_ends_with_an_error_for_a_cancelled_job_without_a_lora(
    hub: FakeHub, tmp_path: Path
) -> None:
    repo = "me/seed-cancelled-bare"
    chain = _job("CANCELLED", message="execution timeout", published=None)
    _deliver(hub, repo, tmp_path / "job", chain)
    done = _seed(hub, tmp_path, repo)
    assert done.returncode == 1
    assert "Exception: Job cancelled (execution timeout); no LoRA was published" in done.stderr


def test_seed_script_reads_updates_past_9999_in_order(hub: FakeHub, tmp_path: Path) -> None:
    repo = "me/seed-long"
    chain = _job("COMPLETE", message="Training completed successfully!", direct_download_url=URL)
    files = {}
    for number, event in enumerate(chain.events, start=9995):  # a very long job's last files
        update = render(event, number=number, repo_id=repo)
        files[update.path] = update.content
    hub.add_repo(repo, files)
    done = _seed(hub, tmp_path, repo)
    assert done.returncode == 0, done.stderr
    assert len(done.stdout.splitlines()) == len(chain.events) + 1  # every update, in order
    assert done.stdout.splitlines()[0] == "[INITIALIZED] Repository created, job starting"


def test_watch_decides_on_the_newest_update_not_a_superseded_final_one(hub: FakeHub) -> None:
    chain = _job("ERROR", error="boom")
    for kind in ("RESUMED", "UPLOADING"):
        chain.add(kind)
    chain.add("COMPLETE", direct_download_url=URL)
    _publish(hub, "me/watch-resumed", chain)  # all in one poll, the ERROR still there
    final = watch_updates("me/watch-resumed", TOKEN, hub.url, interval=0)
    assert final["status"] == "COMPLETE"
    result = _cli(["me/watch-resumed", "--endpoint", hub.url, "--interval", "0"])
    assert result.exit_code == 0, result.output


def test_watch_skips_a_file_deleted_between_listing_and_download(hub: FakeHub) -> None:
    from huggingface_hub import HfApi  # noqa: PLC0415

    chain = _job("ERROR", error="boom")
    for kind in ("RESUMED", "UPLOADING"):
        chain.add(kind)
    chain.add("COMPLETE", direct_download_url=URL)
    state, files, deleted = ProjectionState(), {}, []
    for event in chain.events:  # as the mirror leaves it: the ERROR file deleted
        state, update = project(state, event, repo_id="me/watch-raced")
        if update is not None:
            files[update.path] = update.content
            for path in update.deletes:
                files.pop(path)
                deleted.append(path)
    hub.add_repo("me/watch-raced", files)
    (gone,) = deleted
    assert gone.endswith("_ERROR.json")

    class Raced(HfApi):  # a listing made just before the RESUMED commit deleted the ERROR
        def list_repo_files(self, *args: Any, **kwargs: Any) -> list[str]:
            return [*super().list_repo_files(*args, **kwargs), gone]

    seen: list[str] = []
    final = watch_updates(
        "me/watch-raced",
        on_update=lambda u: seen.append(u["type"]),
        interval=0,
        api=Raced(endpoint=hub.url, token=TOKEN),
    )
    assert final["status"] == "COMPLETE"
    assert "ERROR" not in seen
