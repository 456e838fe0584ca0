"""The worker image's Python lock: write its inputs, and check that the Dockerfile uses it.

    python docker/lock.py inputs REQUIREMENTS   write docker/constraints.in (make constraints)
    python docker/lock.py check                 the Dockerfile and the lock agree (make lint)

`make constraints` writes `constraints.in` from diffusion-pipe's unpinned `requirements.txt` at
the Dockerfile's pinned commit, the torch pins of the Dockerfile and this project's worker
dependencies (pyproject.toml), then `uv pip compile`s it into `constraints.txt` for the image
(linux x86_64, Python 3.12). Every `pip install` after torch's passes `-c` with that file.
Standard library only: `make lint` runs `check` without the network or a diffusion-pipe copy.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "Dockerfile"
INPUTS = REPO / "docker" / "constraints.in"
LOCK = REPO / "docker" / "constraints.txt"
PYPROJECT = REPO / "pyproject.toml"
PROJECT = "diffusion-pipe-serverless"
IN_IMAGE = "/opt/constraints.txt"  # where the Dockerfile copies the lock
# The Dockerfile ARG of each torch-family package (installed from the PyTorch index).
TORCH_ARGS = {
    "torch": "TORCH_VERSION",
    "torchvision": "TORCHVISION_VERSION",
    "torchaudio": "TORCH_VERSION",
}
_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def canonical(name: str) -> str:
    """A distribution name as pip compares it (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(line: str) -> str | None:
    """The distribution a requirements line names; None for comments and blank lines."""
    text = line.split("#", 1)[0].strip()
    match = _NAME.match(text)
    return canonical(match.group(1)) if match else None


def dockerfile_args(text: str) -> dict[str, str]:
    """Every `ARG NAME=default` of a Dockerfile (quotes stripped)."""
    return {m[1]: m[2].strip('"') for m in re.finditer(r"^ARG (\w+)=(.*)$", text, re.M)}


def worker_requirements(pyproject: dict[str, object]) -> list[str]:
    """The project's dependencies plus its `worker` extra, its own extras expanded."""
    project = pyproject["project"]
    assert isinstance(project, dict)
    extras: dict[str, list[str]] = project["optional-dependencies"]
    found: list[str] = list(project["dependencies"])
    pending = list(extras["worker"])
    while pending:
        req = pending.pop(0)
        own = re.fullmatch(rf"{re.escape(PROJECT)}\[([\w,\s-]+)\]", req.strip())
        if own is None:
            if req not in found:
                found.append(req)
            continue
        for extra in own.group(1).split(","):
            pending.extend(extras[extra.strip()])
    return found


def render_inputs(requirements: str, dockerfile: str, pyproject: dict[str, object]) -> str:
    """constraints.in: torch as the image installs it, diffusion-pipe's list, then ours."""
    args = dockerfile_args(dockerfile)
    commit = args["DIFFUSION_PIPE_COMMIT"]
    lines = [
        "# The inputs of docker/constraints.txt; `make constraints` writes both (do not edit).",
        "# torch as the Dockerfile installs it (from the PyTorch cu128 index; PyPI's linux",
        "# x86_64 wheels of these versions are the same CUDA 12.8 builds, with the same pins).",
        *(f"{name}=={args[arg]}" for name, arg in TORCH_ARGS.items()),
        f"# diffusion-pipe {commit}: requirements.txt",
        *(line.strip() for line in requirements.splitlines() if requirement_name(line)),
        f"# {PROJECT}: pyproject.toml dependencies and the worker extra",
        *worker_requirements(pyproject),
    ]
    return "\n".join(lines) + "\n"


def _pip_installs(dockerfile: str) -> list[str]:
    """Every `pip install` command of the Dockerfile's RUN instructions, in order."""
    logical = re.sub(r"\\\n", " ", dockerfile)
    commands: list[str] = []
    for line in logical.splitlines():
        if not line.startswith("RUN "):
            continue
        for part in re.split(r"&&|\|\||;", line[4:]):
            if re.search(r"\bpip3? install\b", part):
                command = re.sub(r"^(?:then|else|do)\s+", "", part.strip())
                commands.append(" ".join(command.split()))
    return commands


def _pins(lock: str) -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in lock.splitlines():
        match = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", line)
        if match:
            pins[canonical(match[1])] = match[2]
    return pins


def problems(dockerfile: str, inputs: str, lock: str, pyproject: dict[str, object]) -> list[str]:
    """Why the Dockerfile and the lock disagree; empty when they agree."""
    found: list[str] = []
    installs = _pip_installs(dockerfile)
    torch_at = next((i for i, cmd in enumerate(installs) if "torch==" in cmd), None)
    if torch_at is None:
        found.append("Dockerfile: no `pip install` of torch==<version> found")
    copy = re.search(rf"^COPY docker/constraints\.txt {re.escape(IN_IMAGE)}$", dockerfile, re.M)
    if copy is None:
        found.append(f"Dockerfile: `COPY docker/constraints.txt {IN_IMAGE}` is missing")
    for cmd in installs[(torch_at or 0) + 1 :]:
        if not re.search(rf"(?:-c|--constraint)[ =]{re.escape(IN_IMAGE)}(?:\s|$)", cmd):
            found.append(f"Dockerfile: `{cmd}` does not install with -c {IN_IMAGE}")
    args = dockerfile_args(dockerfile)
    pins = _pins(lock)
    for name, arg in TORCH_ARGS.items():
        want = args.get(arg)
        if pins.get(name) != want:
            found.append(
                f"docker/constraints.txt pins {name}=={pins.get(name)} but the Dockerfile "
                f"installs {want} ({arg}): run `make constraints`"
            )
    commit = args.get("DIFFUSION_PIPE_COMMIT", "?")
    if f"# diffusion-pipe {commit}: requirements.txt" not in inputs:
        found.append(
            f"docker/constraints.in was not written from diffusion-pipe {commit} (the "
            "Dockerfile's DIFFUSION_PIPE_COMMIT): run `make constraints`"
        )
    listed = set(inputs.splitlines())
    for req in worker_requirements(pyproject):
        if req not in listed:
            found.append(
                f"docker/constraints.in lacks `{req}` (pyproject.toml): run `make constraints`"
            )
    for line in inputs.splitlines():
        wanted = requirement_name(line)
        if wanted is not None and wanted not in pins:
            found.append(f"docker/constraints.txt pins no {wanted}: run `make constraints`")
    return found


def main(argv: list[str]) -> int:
    pyproject = tomllib.loads(PYPROJECT.read_text())
    dockerfile = DOCKERFILE.read_text()
    if len(argv) == 2 and argv[0] == "inputs":
        INPUTS.write_text(render_inputs(Path(argv[1]).read_text(), dockerfile, pyproject))
        return 0
    if argv == ["check"]:
        missing = [p for p in (INPUTS, LOCK) if not p.is_file()]
        if missing:
            print(f"{missing[0].relative_to(REPO)} is missing: run `make constraints`")
            return 1
        found = problems(dockerfile, INPUTS.read_text(), LOCK.read_text(), pyproject)
        for problem in found:
            print(problem)
        return 1 if found else 0
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
