"""The dataset stage (DOWNLOADING): download, extract safely, apply the trigger word, report.

`Dataset` fetches `dataset.images_url` / `dataset.videos_url` into `<job>/downloads/`
(`download`), unpacks them into `<job>/dataset/{images,videos}` (`extract`), prepends the
trigger word to every caption that came with the data (`stages.captions.text`), then builds the
pre-flight report (`report`), records it as DATASET_REPORT and stops the job with a clear message
when nothing could train. `check_dataset` runs the same steps outside a job, for the CLI.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from events.facts import DatasetReport as DatasetReportFact
from events.vocabulary import Status
from orchestrator.catalogue import get_model
from orchestrator.request import TrainingRequest, parse_request
from orchestrator.settings import Settings
from stages.captions.text import apply_trigger
from stages.contract import Stage, StageContext
from stages.dataset.download import DownloadLimits, download
from stages.dataset.extract import (
    COMPLETE_MARKER,
    ExtractLimits,
    Source,
    extract_dataset,
    marker_matches,
)
from stages.dataset.report import DatasetReport, build_report
from stages.errors import StageFailed

PROGRESS_EVERY_S = 2.0


class Dataset(Stage):
    name = "dataset"
    status = Status.DOWNLOADING

    def __init__(
        self,
        *,
        settings: Settings | None = None,
        download_limits: DownloadLimits | None = None,
        extract_limits: ExtractLimits | None = None,
    ) -> None:
        self.settings = settings
        self.download_limits = download_limits or DownloadLimits.from_env()
        self.extract_limits = extract_limits or ExtractLimits.from_env()

    def run(self, ctx: StageContext) -> dict[str, Any]:
        request = ctx.request
        if not isinstance(request, TrainingRequest):
            raise StageFailed("the dataset stage needs a parsed training request")
        endpoint = self.settings.hub_endpoint if self.settings else "https://huggingface.co"
        report = prepare(
            request,
            ctx.job_dir,
            download_limits=self.download_limits,
            extract_limits=self.extract_limits,
            hub_endpoint=endpoint,
            progress=lambda data: ctx.progress(stage=self.name, **data),
        )
        ctx.record(DatasetReportFact(**report.to_event()))
        fatal = report.fatal()
        if fatal:
            raise StageFailed("; ".join(fatal))
        return {
            "images_dir": "dataset/images",
            "videos_dir": "dataset/videos",
            "images": report.usable_images,
            "videos": report.usable_videos,
            "captions_missing": report.captions_missing,
            "steps_per_epoch": report.steps_per_epoch,
            "total_steps": report.total_steps,
            "files": [f"dataset/{COMPLETE_MARKER}", "dataset/images", "dataset/videos"],
        }

    def verify(self, ctx: StageContext, result: Mapping[str, Any]) -> bool:
        """Still usable when the marker matches what the dataset folders hold now."""
        return super().verify(ctx, result) and marker_matches(ctx.job_dir / "dataset")


def prepare(
    request: TrainingRequest,
    job_dir: Path,
    *,
    download_limits: DownloadLimits | None = None,
    extract_limits: ExtractLimits | None = None,
    hub_endpoint: str = "https://huggingface.co",
    progress: Callable[[dict[str, Any]], Any] | None = None,
    local: Mapping[str, Path] | None = None,
) -> DatasetReport:
    """Download, extract (with the trigger word) and check; returns the report.

    `local` maps a field name to an archive already on disk (the CLI's local zip)."""
    token = request.hf_download_token()
    last = [0.0]

    def say(data: dict[str, Any], final: bool = False) -> None:
        now = time.monotonic()
        if progress is not None and (final or now - last[0] >= PROGRESS_EVERY_S):
            last[0] = now
            progress(data)

    sources: list[Source] = []
    for field, url in (
        ("images_url", request.dataset.images_url),
        ("videos_url", request.dataset.videos_url),
    ):
        name = f"dataset.{field}"
        if local and field in local:
            sources.append(Source(local[field], name))
            continue
        if url is None:
            continue

        def on_bytes(done: int, total: int | None, field: str = field) -> None:
            data: dict[str, Any] = {"message": f"downloading {field}", "bytes_done": done}
            if total:
                data.update(bytes_total=total, percent=round(100.0 * done / total, 1))
            say(data, final=total is not None and done >= total)

        got = download(
            url,
            job_dir / "downloads",
            field=name,
            name=field.removesuffix("_url"),
            limits=download_limits,
            hub_endpoint=hub_endpoint,
            token=token.get_secret_value() if token else None,
            on_bytes=on_bytes,
        )
        sources.append(Source(got.path, name))
    say({"message": "extracting"}, final=True)
    trigger = request.dataset.trigger_word
    extract_dataset(
        sources,
        job_dir / "dataset",
        limits=extract_limits,
        caption_fn=(lambda text: apply_trigger(text, trigger)) if trigger else None,
    )
    say({"message": "checking media and captions"}, final=True)
    return build_report(
        job_dir / "dataset" / "images",
        job_dir / "dataset" / "videos",
        request,
        on_item=lambda done, total: say(
            {"message": "checking media", "files_done": done, "files_total": total},
            final=done == total,
        ),
    )


def check_dataset(
    zip_or_url: str,
    *,
    model_type: str = "qwen",
    dataset_type: str = "precaptioned",
    trigger_word: str | None = None,
    work_dir: Path | None = None,
    hub_endpoint: str = "https://huggingface.co",
    token: str | None = None,
    video_clip_mode: str | None = None,
) -> DatasetReport:
    """The pre-flight report for a local archive or folder, or an http(s)/hf:// URL."""
    entry = get_model(model_type)
    field = "images_url" if entry.trains_images else "videos_url"
    path = Path(zip_or_url)
    is_local = "://" not in zip_or_url and path.exists()
    body: dict[str, Any] = {
        "model_type": model_type,
        "dataset": {
            "type": dataset_type,
            field: "https://local.invalid/dataset.zip" if is_local else zip_or_url,
        },
        # Gated models and video captioning need keys to run, not to check a dataset.
        "api_keys": {"huggingface_token": token or "hf_check_only", "gemini_api_key": "check"},
    }
    if trigger_word:
        body["dataset"]["trigger_word"] = trigger_word
    if video_clip_mode:
        body["training"] = {"video_clip_mode": video_clip_mode}
    request = parse_request(body)
    with tempfile.TemporaryDirectory(dir=work_dir, prefix="dpserve-check-") as tmp:
        return prepare(
            request,
            Path(tmp),
            hub_endpoint=hub_endpoint,
            local={field: path.absolute()} if is_local else None,
        )
