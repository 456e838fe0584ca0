"""The auto-named repo, `<user>/<model>-lora-<id>`: two job ids never give one name, and every
name is one the Hub takes."""

from __future__ import annotations

import re
import uuid

from huggingface_hub.utils._validators import validate_repo_id
from hypothesis import given
from hypothesis import strategies as st

from stages.publish.hub import REPO_NAME_MAX, default_repo_id

MODEL_TYPES = ("flux", "sdxl", "wan14b_i2v", "hunyuan_video", "qwen", "tiny", "z_image")
# The ids RunPod and the local test mode make: `<uuid>-u1` (/run), `sync-<uuid>` (/runsync),
# `local-<UTC>-<hex>`; then anything at all.
runpod_ids = st.uuids().map(lambda u: f"{u}-u1")
sync_ids = st.uuids().map(lambda u: f"sync-{u}")
local_ids = st.builds(
    lambda t, h: f"local-{t:%Y%m%dT%H%M%SZ}-{h:08x}",
    st.datetimes(),
    st.integers(0, 2**32 - 1),
)
any_ids = st.text(min_size=1, max_size=200)
job_ids = st.one_of(runpod_ids, sync_ids, local_ids, any_ids)


def _valid(repo_id: str) -> None:
    validate_repo_id(repo_id)  # the client's own rules: no "--" or "..", the charset
    name = repo_id.split("/", 1)[1]
    assert len(name) <= REPO_NAME_MAX
    assert re.fullmatch(r"[A-Za-z0-9._-]+", name)
    assert not name.startswith(("-", "."))
    assert not name.endswith(("-", "."))
    assert "--" not in name
    assert ".." not in name


@given(st.sampled_from(MODEL_TYPES), job_ids, job_ids)
def test_different_job_ids_never_share_a_repo(model: str, one: str, other: str) -> None:
    first, second = default_repo_id("alice", model, one), default_repo_id("alice", model, other)
    _valid(first)
    _valid(second)
    assert (first == second) == (one == other)


@given(st.sampled_from(MODEL_TYPES), st.uuids(), st.integers(0, 15))
def test_sync_ids_differing_past_the_eighth_character_differ(
    model: str, base: uuid.UUID, nibble: int
) -> None:
    """The old name kept 8 characters: `sync-1a2b3c4d-...` and `sync-1a2bffff-...` collided."""
    one = f"sync-{base}"
    flipped = list(one)
    at = len(one) - 1  # the very last hex digit
    flipped[at] = format((int(one[at], 16) + 1 + nibble % 15) % 16, "x")
    other = "".join(flipped)
    assert default_repo_id("alice", model, one) != default_repo_id("alice", model, other)


def test_plain_ids_read_as_themselves() -> None:
    job = "c80ffee4-f315-4e25-a146-0f3d98263301-u1"
    assert default_repo_id("alice", "wan14b_i2v", job) == f"alice/wan14b-i2v-lora-{job}"
    local = default_repo_id("alice", "tiny", "local-20261202T072400Z-a1b2c3d4")
    assert local.startswith("alice/tiny-lora-local-20261202t072400z-a1b2c3d4_")
