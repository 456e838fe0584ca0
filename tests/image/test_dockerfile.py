"""The worker image copies what the package needs and runs what the tests run (no docker here)."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from types import ModuleType
from urllib.parse import unquote, urlsplit

from orchestrator.settings import Settings
from orchestrator.worker import validate
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
    assert 'pip install -c /opt/constraints.txt "/app[worker]"' in DOCKERFILE


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


def _all_env() -> dict[str, str]:
    """Every variable the image's ENV instructions set."""
    blocks = re.findall(r"^ENV .*?(?=^\S)", DOCKERFILE, re.M | re.S)
    return dict(p for b in blocks for p in re.findall(r"(\w+)=(\S+)", b))


def test_the_image_runs_the_sdk_at_info_not_its_debug_default() -> None:
    """At DEBUG (the SDK's default) the SDK prints handler outputs and progress payloads (an S3
    presigned URL names the access key id) and, in local test mode, the whole input."""
    assert _all_env()["RUNPOD_LOG_LEVEL"] == "INFO"


def test_test_input_json_is_in_the_image_and_passes_its_rules(tmp_path: Path) -> None:
    """`docker run <image>` without RunPod's env is the SDK's local test mode: it runs
    /app/test_input.json, which needs no host (an inline dataset) and no volume."""
    assert "COPY test_input.json /app/test_input.json" in DOCKERFILE
    body = json.loads((REPO / "test_input.json").read_text(encoding="utf-8"))
    settings = Settings.from_env({**_image_env(), "DPS_ROOT": str(tmp_path / "root")})
    plan = validate(body["input"], settings, "local-20260101T000000Z-0123abcd")
    assert plan.publish.destination.method == "local"


def test_the_hub_metadata_has_no_empty_fields_and_describes_each_setting() -> None:
    hub = json.loads((REPO / ".runpod" / "hub.json").read_text(encoding="utf-8"))
    assert "" not in hub.values()  # optional fields are left out, not left empty (iconUrl)
    assert hub["config"]["env"]
    for variable in hub["config"]["env"]:
        assert variable["input"].get("description"), variable["key"]


def _lock_tool() -> ModuleType:
    """docker/lock.py, the checker `make lint` runs (a script, not a package)."""
    spec = importlib.util.spec_from_file_location("docker_lock", REPO / "docker" / "lock.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _args() -> dict[str, str]:
    return {m[1]: m[2].strip('"') for m in re.finditer(r"^ARG (\w+)=(.*)$", DOCKERFILE, re.M)}


def test_the_default_image_installs_a_flash_attn_wheel_pinned_by_its_checksum() -> None:
    """Wan needs flash-attn: the default build installs a prebuilt wheel for the image's torch,
    CUDA and Python, checked against its sha256, and fails if it does not import."""
    args = _args()
    url = urlsplit(args["FLASH_ATTN_WHEEL"])
    assert url.scheme == "https"
    assert re.fullmatch(r"sha256=[0-9a-f]{64}", url.fragment), "pip checks this digest"
    wheel = unquote(url.path.rsplit("/", 1)[1])
    torch = ".".join(args["TORCH_VERSION"].split(".")[:2])  # the wheel is built per torch minor
    cuda = re.search(r"^FROM nvidia/cuda:(\d+)\.", DOCKERFILE, re.M)
    assert cuda is not None
    python = re.search(r"python3\.(\d+)-venv", DOCKERFILE)
    assert python is not None
    assert re.fullmatch(
        rf"flash_attn-[\d.]+\+cu{cuda[1]}torch{re.escape(torch)}cxx11abiTRUE"
        rf"-cp3{python[1]}-cp3{python[1]}-linux_x86_64\.whl",
        wheel,
    ), wheel
    install = re.search(r'pip install -c /opt/constraints.txt "\$\{FLASH_ATTN_WHEEL\}"', DOCKERFILE)
    assert install is not None
    assert 'python -c "import flash_attn' in DOCKERFILE[install.end() :]


def test_the_lock_check_passes_on_this_repository() -> None:
    done = subprocess.run(
        [sys.executable, "docker/lock.py", "check"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout


def test_the_lock_check_finds_an_install_outside_the_lock() -> None:
    lock = _lock_tool()
    inputs = (REPO / "docker" / "constraints.in").read_text()
    pins = (REPO / "docker" / "constraints.txt").read_text()
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert lock.problems(DOCKERFILE, inputs, pins, project) == []

    unlocked = DOCKERFILE.replace('-c /opt/constraints.txt "/app[worker]"', '"/app[worker]"')
    assert lock.problems(unlocked, inputs, pins, project) == [
        'Dockerfile: `pip install "/app[worker]"` does not install with -c /opt/constraints.txt'
    ]
    newer_torch = DOCKERFILE.replace("ARG TORCH_VERSION=2.9.1", "ARG TORCH_VERSION=2.10.0")
    found = lock.problems(newer_torch, inputs, pins, project)
    assert any(p.startswith("docker/constraints.txt pins torch==2.9.1") for p in found), found
    other_commit = DOCKERFILE.replace("8f83dbf25d03219df705570ec03e62be04bc402f", "0" * 40)
    assert any(
        "DIFFUSION_PIPE_COMMIT" in p for p in lock.problems(other_commit, inputs, pins, project)
    )
    project["project"]["dependencies"].append("orjson>=3")
    assert lock.problems(DOCKERFILE, inputs, pins, project) == [
        "docker/constraints.in lacks `orjson>=3` (pyproject.toml): run `make constraints`"
    ]


def test_the_lock_pins_every_input_and_the_dockerfiles_torch() -> None:
    lock = _lock_tool()
    pins = {
        lock.canonical(m[1]): m[2]
        for m in re.finditer(
            r"^([\w.-]+)==(\S+)", (REPO / "docker" / "constraints.txt").read_text(), re.M
        )
    }
    args = _args()
    assert pins["torch"] == pins["torchaudio"] == args["TORCH_VERSION"]
    assert pins["torchvision"] == args["TORCHVISION_VERSION"]
    assert pins["deepspeed"] == "0.18.4"  # diffusion-pipe pins it; the lock must agree
    names = [
        lock.requirement_name(line)
        for line in (REPO / "docker" / "constraints.in").read_text().splitlines()
    ]
    assert [n for n in names if n is not None and n not in pins] == []
