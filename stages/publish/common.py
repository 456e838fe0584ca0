"""What every publish method shares: the inputs, the list of files to send, the result, retries.

A method (Hugging Face, S3, a temporary file host, a local folder) takes `PublishInputs`, sends
the `Artifact`s that `collect_artifacts` lists, and returns a `Published`. Errors meant for the
user are `StageFailed` with every secret of the request scrubbed out.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from events.redact import scrub
from stages.errors import StageFailed
from stages.model_info import ModelInfo
from stages.publish import annotate, diffusers_copy
from stages.publish.inputs import Destination, PublishSpec, UploadEpochs
from stages.training.config import DATASET_FILE
from stages.training.run_folder import saved_loras

_CHUNK = 1 << 20
# 15 minutes: a job that meets the Hub's commit limit ("about 1 hour") must not hold a GPU for
# the hour (the LoRA is safe on the volume; a later delivery publishes it in seconds). 15 min
# covers the api bucket's 5-minute window and a shared repo's budget that frees up soon, at a
# cost far below the training run's.
PUBLISH_WAIT_S = 900.0


@dataclass(frozen=True)
class Artifact:
    """One file to publish: `name` is its path at the destination (POSIX, relative).

    `data` holds generated or redacted content (model card, TOMLs); otherwise `source` is read.
    """

    name: str
    source: Path | None = None
    data: bytes | None = None
    # Another artifact's name with the same bytes: a store that can copy on its side (S3)
    # copies it instead of sending it again.
    same_as: str | None = None

    @property
    def size(self) -> int:
        if self.data is not None:
            return len(self.data)
        assert self.source is not None
        return self.source.stat().st_size

    def sha256(self) -> str:
        digest = hashlib.sha256()
        if self.data is not None:
            digest.update(self.data)
        else:
            assert self.source is not None
            with self.source.open("rb") as fh:
                while chunk := fh.read(_CHUNK):
                    digest.update(chunk)
        return digest.hexdigest()


@dataclass(frozen=True)
class PublishInputs:
    """Everything a publish method reads. `training` is the training stage's result (paths in it
    are relative to `job_dir`); `dataset_report` is the dataset stage's report (any shape)."""

    job_id: str
    job_dir: Path
    spec: PublishSpec
    training: Mapping[str, Any]
    dataset_report: Mapping[str, Any] = field(default_factory=dict)

    @property
    def model(self) -> ModelInfo:
        return self.spec.model

    @property
    def destination(self) -> Destination:
        return self.spec.destination

    @property
    def lora_path(self) -> Path:
        lora = Path(str(self.training["lora"]))
        return lora if lora.is_absolute() else self.job_dir / lora

    @property
    def lora_name(self) -> str:
        return self.lora_path.name

    @property
    def upload_epochs(self) -> UploadEpochs:
        return self.spec.destination.upload_epochs

    @property
    def secrets(self) -> list[str]:
        return list(self.spec.secrets)

    def scrub(self, text: str) -> str:
        return scrub(text, self.secrets)


@dataclass(frozen=True)
class Published:
    """The outcome of one publish method, in the seed response's terms plus details."""

    method: str
    download_url: str
    safetensors_url: str
    repo_url: str
    files: list[str]
    expires_in_days: float | None = None
    note: str = "Direct download link for your trained LoRA safetensors file"
    details: dict[str, Any] = field(default_factory=dict)  # repo_id, commit, bucket, attempts...

    def output(self) -> dict[str, Any]:
        """The seed's `output` object, exactly its six keys."""
        return {
            "download_url": self.download_url,
            "safetensors_url": self.safetensors_url,
            "repo_url": self.repo_url,
            "download_method": self.method,
            "expires_in_days": self.expires_in_days,
            "note": self.note,
        }


def fail(inputs: PublishInputs, message: str) -> StageFailed:
    return StageFailed(inputs.scrub(message))


def _config_artifacts(inputs: PublishInputs) -> list[Artifact]:
    """The main and dataset TOMLs, secrets masked: a passthrough credential may sit in them."""
    config_dir = inputs.job_dir / "config"
    out = []
    for name in (f"{inputs.model.model_type}.toml", DATASET_FILE):
        path = config_dir / name
        if path.is_file():
            text = inputs.scrub(path.read_text(encoding="utf-8"))
            out.append(Artifact(f"config/{name}", data=text.encode()))
    return out


def published_lora(inputs: PublishInputs) -> Path:
    """The final LoRA as it is published: the trained file with its metadata added
    (`stages.publish.annotate`), under `<job>/publish/annotated/`."""
    lora = inputs.lora_path
    if not lora.is_file():
        raise fail(inputs, f"the trained LoRA {lora} is missing; nothing to publish")
    return _annotated(inputs, lora, lora.name)


def _renames(inputs: PublishInputs) -> tuple[tuple[str, str], ...]:
    rules = inputs.model.lora_rules
    return rules.renames if rules is not None else ()


def _annotated(inputs: PublishInputs, lora: Path, name: str, save: str | None = None) -> Path:
    dest = inputs.job_dir / "publish" / annotate.ANNOTATED_FOLDER / name
    try:
        metadata = annotate.lora_metadata(inputs, lora, save)
        return annotate.annotate(lora, dest, metadata, _renames(inputs))
    except StageFailed as exc:
        raise fail(inputs, f"{exc}; nothing was published") from None


def trained_loras(inputs: PublishInputs) -> list[Artifact]:
    """The LoRA files a publish sends: the final one under its real name (with its metadata),
    and with upload_epochs "all" every epochN/'s under epochs/: as the trainer saved it, or,
    for a family whose key names are fixed when publishing (SDXL), fixed the same way."""
    lora = inputs.lora_path
    out = [Artifact(lora.name, source=published_lora(inputs))]
    if inputs.upload_epochs == "all":
        for save in saved_loras(lora.parent.parent, lora.name):
            if save.kind != "epoch":
                continue
            name = f"epochs/{save.name}/{save.file.name}"
            source = save.file
            if _renames(inputs):
                source = _annotated(inputs, save.file, name, save.name)
            out.append(Artifact(name, source=source))
    return out


def collect_artifacts(inputs: PublishInputs, label: str | None = None) -> list[Artifact]:
    """The final LoRA under its real name and again under its descriptive name in comfyui/
    (`label`: the Hub repo's name, else the job id), its adapter_config.json when the trainer
    made one, a copy under diffusers' names in diffusers/ for a model that needs one (Z-Image),
    the training TOMLs under config/, and with upload_epochs "all" every epochN/ under
    epochs/."""
    final, *epochs = trained_loras(inputs)
    lora = inputs.lora_path
    comfy = annotate.comfy_name(inputs, label)
    out = [final, Artifact(comfy, source=final.source, same_as=final.name)]
    adapter_config = lora.parent / "adapter_config.json"
    if adapter_config.is_file():
        out.append(Artifact("adapter_config.json", source=adapter_config))
    usage = inputs.model.usage
    if usage is not None and usage.diffusers_copy is not None:
        name = diffusers_copy.copy_name(lora.name)
        assert final.source is not None
        copy = diffusers_copy.write_copy(
            final.source, inputs.job_dir / "publish" / name, usage.diffusers_copy
        )
        out.append(Artifact(name, source=copy))
    out += _config_artifacts(inputs)
    for epoch in epochs:
        assert epoch.source is not None
        out.append(epoch)
        extra = epoch.source.parent / "adapter_config.json"
        if extra.is_file():
            folder = epoch.name.rsplit("/", 1)[0]
            out.append(Artifact(f"{folder}/adapter_config.json", source=extra))
    return out


def content_digest(artifacts: Iterable[Artifact]) -> str:
    """One SHA-256 over every (name, content hash): identifies what a publish sends."""
    digest = hashlib.sha256()
    for art in sorted(artifacts, key=lambda a: a.name):
        digest.update(f"{art.name}\0{art.sha256()}\n".encode())
    return digest.hexdigest()


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to retry: exponential backoff with full jitter, capped."""

    attempts: int = 6
    base_s: float = 2.0
    cap_s: float = 60.0
    max_wait_s: float = 900.0  # the longest a server-requested wait (Retry-After) is honoured
    # Hub publish: the most a commit waits, in all, for the Hub's rate limit and the repo's
    # commit budget; a longer wait defers the publish (env DPS_HUB_PUBLISH_MAX_WAIT_S).
    publish_wait_s: float = PUBLISH_WAIT_S

    def backoff(self, attempt: int, rng: random.Random) -> float:
        """Full jitter: spreads retries of workers that failed together (409 lock contention)."""
        return rng.uniform(0.0, min(self.cap_s, self.base_s * 2 ** (attempt - 1)))
