"""The worker image copies what the package needs and runs what the tests run (no docker here)."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib

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


def test_the_image_refuses_loopback_dataset_urls() -> None:
    env = re.search(r"^ENV DPS_DIFFUSION_PIPE_DIR=.*?(?=^\S)", DOCKERFILE, re.M | re.S)
    assert env is not None
    assert "DPS_DATASET_ALLOW_LOOPBACK=0" in env.group(0)
