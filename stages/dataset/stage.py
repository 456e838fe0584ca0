"""The dataset stage (DOWNLOADING): download, extract safely, apply the trigger word, report.

`Dataset` fetches the dataset archives (`dataset.images_url` / `dataset.videos_url`) into
`<job>/downloads/` (`download`), unpacks them into `<job>/dataset/{images,videos}` (`extract`),
prepends the trigger word to every caption that came with the data (`stages.captions.text`),
then builds the pre-flight report (`report`), records it as DATASET_REPORT and stops the job
with a clear message when nothing could train. `prepare` runs the same steps outside a job (the
CLI's `dpserve dataset check`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from events.facts import DatasetReport as DatasetReportFact
from events.vocabulary import Status
from stages.captions.text import apply_trigger
from stages.contract import Stage, StageContext
from stages.dataset.check import build_report
from stages.dataset.download import download
from stages.dataset.extract import Source, extract_dataset
from stages.dataset.folder import COMPLETE_MARKER, marker_matches
from stages.dataset.inputs import DatasetInputs, DatasetSource
from stages.dataset.report import DatasetReport
from stages.errors import ConfigError, StageFailed
from stages.throttle import Throttle
from stages.training.traps import check_batch

PROGRESS_EVERY_S = 2.0
Say = Callable[[dict[str, Any], bool], None]  # (progress data, final)


class Dataset(Stage):
    name = "dataset"
    status = Status.DOWNLOADING

    def __init__(self, inputs: DatasetInputs) -> None:
        self.inputs = inputs

    def run(self, ctx: StageContext) -> dict[str, Any]:
        report = prepare(
            self.inputs,
            ctx.job_dir,
            progress=lambda data: ctx.progress(stage=self.name, **data),
        )
        ctx.record(DatasetReportFact(**report.to_event()))
        fatal = report.fatal()
        if fatal:
            raise StageFailed("; ".join(fatal))
        self._check_batch(report)
        return {
            "images_dir": "dataset/images",
            "videos_dir": "dataset/videos",
            "images": report.usable_images,
            "videos": report.usable_videos,
            "captions_missing": report.captions_missing,
            "steps_per_epoch": report.steps_per_epoch,
            "total_steps": report.total_steps,
            "data_parallel": report.data_parallel,  # the batch check at training uses it too
            "files": [f"dataset/{COMPLETE_MARKER}", "dataset/images", "dataset/videos"],
        }

    def _check_batch(self, report: DatasetReport) -> None:
        """The trainer's own batch rule, now that the counts are known: a dataset that would
        lose a directory to the global batch fails here, before the model download."""
        if self.inputs.trainer is None:
            return
        try:
            check_batch(
                self.inputs.trainer,
                image_count=report.usable_images,
                video_count=report.video_clips,
                num_gpus=report.data_parallel,
            )
        except ConfigError as exc:
            raise StageFailed(str(exc)) from None

    def verify(self, ctx: StageContext, result: Mapping[str, Any]) -> bool:
        """Still usable when the marker matches what the dataset folders hold now."""
        return super().verify(ctx, result) and marker_matches(ctx.job_dir / "dataset")


def prepare(
    inputs: DatasetInputs,
    job_dir: Path,
    *,
    progress: Callable[[dict[str, Any]], Any] | None = None,
    local: Mapping[str, Path] | None = None,
) -> DatasetReport:
    """Download, extract (with the trigger word) and check; returns the report.

    `local` maps a field name to an archive already on disk (the CLI's local zip)."""
    throttle = Throttle(PROGRESS_EVERY_S)

    def say(data: dict[str, Any], final: bool = False) -> None:
        if progress is not None and throttle.due(force=final):
            progress(data)

    sources = [_fetch(s, inputs, job_dir, say, local or {}) for s in inputs.sources]
    say({"message": "extracting"}, True)
    trigger = inputs.rules.trigger_word
    extract_dataset(
        sources,
        job_dir / "dataset",
        limits=inputs.extract_limits,
        caption_fn=(lambda text: apply_trigger(text, trigger)) if trigger else None,
    )
    say({"message": "checking media and captions"}, True)
    return build_report(
        job_dir / "dataset" / "images",
        job_dir / "dataset" / "videos",
        inputs.rules,
        on_item=lambda done, total: say(
            {"message": "checking media", "files_done": done, "files_total": total},
            done == total,
        ),
    )


def _fetch(
    source: DatasetSource,
    inputs: DatasetInputs,
    job_dir: Path,
    say: Say,
    local: Mapping[str, Path],
) -> Source:
    """One archive into `<job>/downloads/` (or the local file standing in for it)."""
    name = f"dataset.{source.field}"
    if source.field in local:
        return Source(local[source.field], name)

    def on_bytes(done: int, total: int | None) -> None:
        data: dict[str, Any] = {"message": f"downloading {source.field}", "bytes_done": done}
        if total:
            data.update(bytes_total=total, percent=round(100.0 * done / total, 1))
        say(data, total is not None and done >= total)

    token = inputs.hub_token
    got = download(
        source.url,
        job_dir / "downloads",
        field=name,
        name=source.field.removesuffix("_url"),
        limits=inputs.download_limits,
        hub_endpoint=inputs.hub_endpoint,
        token=token.get_secret_value() if token else None,
        on_bytes=on_bytes,
    )
    return Source(got.path, name)
