"""The worker image copies what the package needs and runs what the tests run (no docker here)."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

from orchestrator.settings import Settings
from stages.publish.local import target_problem
from tests.support.paths import REPO

DOCKERFILE = (REPO / "Dockerfile").read_text()


def test_every_package_is_copied_into_the_image() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    packages = project["tool"]["setuptools"]["packages"]
    modules = project["tool"]["setuptools"]["py-modules"]
    for name in packages:
        assert re.search(rf"^COPY {name} /app/{name}$", DOCKERFILE, re.M), name
    for name in modules:
        assert f"COPY {name}.py /app/{name}.py" in DOCKERFILE


def test_diffusion_pipe_is_pinned_to_the_commit_the_driver_was_written_against() -> None:
    assert "ARG DIFFUSION_PIPE_COMMIT=8f83dbf25d03219df705570ec03e62be04bc402f" in DOCKERFILE
    assert "submodule update --init --recursive" in DOCKERFILE


def test_the_command_is_the_handler_and_it_starts() -> None:
    assert 'CMD ["python", "-u", "/app/handler.py"]' in DOCKERFILE
    # What CMD runs, minus the SDK loop: the module imports and exposes an async handler.
    code = "import asyncio, handler; assert asyncio.iscoroutinefunction(handler.handler)"
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)


def test_the_worker_extra_installs_the_stages() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    extras = project["project"]["optional-dependencies"]
    assert any("[stages]" in dep for dep in extras["worker"])
    assert 'pip install "/app[worker]"' in DOCKERFILE


def _image_env() -> dict[str, str]:
    """The worker's DPS_* settings as the image's ENV instruction sets them."""
    block = re.search(r"^ENV DPS_DIFFUSION_PIPE_DIR=.*?(?=^\S)", DOCKERFILE, re.M | re.S)
    assert block is not None
    pairs = re.findall(r"(DPS_\w+)=(\S+)", block.group(0))
    return dict(pairs)


def test_the_image_refuses_loopback_urls_and_publishes_only_to_the_volume(tmp_path: Path) -> None:
    env = {**_image_env(), "DPS_ROOT": str(tmp_path / "root")}
    settings = Settings.from_env(env)
    assert settings.addresses.allow_loopback is False
    assert settings.local_output_roots == (Path("/runpod-volume"),)
    refused = target_problem(
        Path("/etc"), "job", root=settings.root, allowed=settings.local_output_roots
    )
    assert refused is not None
    assert "outside the folders this worker publishes to (/runpod-volume)" in refused
