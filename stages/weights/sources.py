"""What a model's weights are made from: Hub downloads, or a model built on the worker.

The catalogue (`orchestrator.catalogue`) lists a model's sources as `HubFiles`; the tiny CPU
model is `Built` by minipipe. Each source lands in a folder `dest` under the models root.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from stages.errors import StageFailed


@dataclass(frozen=True)
class HubFiles:
    """One Hub download into `<models root>/<dest>`.

    `files` names repo files to fetch (all must exist); otherwise the whole repo at `revision`,
    filtered by `allow_patterns` / `ignore_patterns` (fnmatch, as `snapshot_download`). With
    `flatten`, each file lands as `<dest>/<basename>` (Z-Image's `split_files/...`). `gated`
    marks a licence-gated repo, so a missing token is reported before any request. With
    `hf_cache`, `dest` is the repo's folder in a Hugging Face cache (`hub_cache_files`): files
    land as `snapshots/<commit>/<path>` and `refs/<revision>` names the commit, the layout
    `huggingface_hub` resolves offline.
    """

    repo_id: str
    dest: str
    allow_patterns: tuple[str, ...] | None = None
    files: tuple[str, ...] | None = None
    flatten: bool = False
    revision: str = "main"
    gated: bool = False
    ignore_patterns: tuple[str, ...] | None = None
    hf_cache: bool = False

    def target(self, path: str, commit: str = "") -> str:
        """Where a repo file lands, relative to `dest` (its bare name when flattened, under the
        commit's snapshot in a Hugging Face cache)."""
        if self.hf_cache:
            return f"snapshots/{commit}/{path}"
        return PurePosixPath(path).name if self.flatten else path

    @property
    def ref(self) -> str:
        """The cache's file naming the commit of `revision` (hf_cache only), relative to dest."""
        return f"refs/{self.revision}"

    def targets(self) -> tuple[str, ...]:
        """The paths (relative to the models root) this download leaves behind: one per named
        file, else the destination folder."""
        if not self.files or self.hf_cache:
            return (self.dest,)
        return tuple(str(PurePosixPath(self.dest) / self.target(f)) for f in self.files)


# The folder under the models root that the trainer uses as its Hugging Face cache
# (HF_HUB_CACHE): files a loader resolves by repo id at training time go there.
HUB_CACHE = "hub"


def hub_cache_files(
    repo_id: str, allow_patterns: tuple[str, ...], *, revision: str = "main"
) -> HubFiles:
    """A download into the trainer's Hugging Face cache, `<HUB_CACHE>/models--owner--name`, for
    a loader that asks the Hub for `repo_id` by name (it then finds it there offline)."""
    folder = f"{HUB_CACHE}/models--{repo_id.replace('/', '--')}"
    return HubFiles(
        repo_id, folder, allow_patterns=allow_patterns, revision=revision, hf_cache=True
    )


@dataclass(frozen=True)
class Built:
    """A model made on the worker (the tiny CPU model): `build(folder)` writes its files."""

    dest: str
    build: Callable[[Path], object]
    name: str  # part of the manifest fingerprint: a new builder version rebuilds


Source = HubFiles | Built


def build_tiny(folder: Path) -> object:
    """The tiny CPU model (model_type `tiny`), built by minipipe."""
    try:
        from minipipe.model import build_tiny_model  # noqa: PLC0415  (optional, heavy: torch)
    except ImportError as exc:
        raise StageFailed(
            "model_type 'tiny' needs the minipipe package (pip install '.[local]'), "
            f"which could not be imported: {exc}"
        ) from exc
    return build_tiny_model(folder)
