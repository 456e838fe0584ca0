"""The declared dependency ranges are the ones the code needs and the tests run, and the
image's lock sits inside them (the image must not work only because diffusion-pipe leaves a
package unpinned)."""

from __future__ import annotations

import tomllib
from importlib.metadata import version

import pytest
from packaging.requirements import Requirement

from tests.support.paths import REPO

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
STAGES = {
    Requirement(r).name: Requirement(r)
    for r in PYPROJECT["project"]["optional-dependencies"]["stages"]
}
LOCK = dict(
    line.split("==", 1)
    for line in (REPO / "docker" / "constraints.txt").read_text().splitlines()
    if "==" in line and not line.startswith((" ", "#"))
)


@pytest.mark.parametrize(
    ("name", "too_old", "why"),
    [
        ("transformers", "4.55.4", "from_pretrained(dtype=) arrived in 4.56"),
        ("transformers", "4.57.1", "the tests run transformers 5"),
        ("google-genai", "1.0.0", "an SDK whose default API version and types differ"),
        ("google-genai", "2.9.0", "the tests run google-genai 3"),
    ],
)
def test_a_range_excludes_what_the_code_cannot_run_on(name: str, too_old: str, why: str) -> None:
    assert too_old not in STAGES[name].specifier, why


@pytest.mark.parametrize("name", ["transformers", "google-genai", "huggingface-hub", "runpod"])
def test_the_installed_and_the_locked_versions_are_inside_the_range(name: str) -> None:
    spec = STAGES[name].specifier
    assert version(name) in spec
    assert LOCK[name].split()[0] in spec
