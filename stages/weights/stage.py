"""The weights stage (MODEL_DOWNLOAD): wait for the base model's download, report its bytes,
record MODEL_READY.

The download is a `ModelDownload`: the pipeline makes one per delivery and hands it to both the
prepare stage, which starts it at STARTING so it overlaps the dataset download and captioning,
and to `Weights`, which starts it if nobody did and waits for it (`ensure` does the work). The
delivery cancels it when the job ends, however it ends: a job that failed in its dataset stage
does not go on filling the volume and holding the model folder's lock. A stop request ends the
wait at once (and the download with it).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any

from events.facts import ModelReady
from events.vocabulary import Status
from stages.contract import Stage, StageContext, StopRequest
from stages.weights.ensure import ModelResult, ensure_model
from stages.weights.inputs import WeightsOptions
from stages.weights.manifest import read_manifest
from stages.weights.progress import ByteProgress, Tracker, progress_data
from stages.weights.sources import Source


@dataclass
class ModelDownload:
    """One model's download, run once in a daemon thread; `future` hands its result over."""

    model_type: str
    sources: tuple[Source, ...]
    options: WeightsOptions
    token: str | None = field(default=None, repr=False)
    future: Future[ModelResult] = field(default_factory=Future)
    tracker: Tracker = field(default_factory=Tracker)
    _started: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> ModelDownload:
        """Start the download unless it already runs; returns at once."""
        with self._lock:
            if self._started:
                return self
            self._started = True
        self.future.set_running_or_notify_cancel()
        threading.Thread(target=self._work, name=f"model-{self.model_type}", daemon=True).start()
        return self

    def _work(self) -> None:
        try:
            result = ensure_model(
                self.model_type,
                self.sources,
                options=self.options,
                token=self.token,
                tracker=self.tracker,
            )
        except BaseException as exc:  # handed to whoever waits; the thread itself ends
            self.future.set_exception(exc)
        else:
            self.future.set_result(result)

    def cancel(self) -> None:
        """Stop at the next byte count, file, retry pause or lock wait: the folder's lock is
        released and its staging removed; files already placed stay for the next try."""
        self.tracker.cancel()

    def ready(self) -> bool:
        """Does every folder's manifest still match the files on disk?"""
        groups: dict[str, list[Source]] = {}
        for source in self.sources:
            groups.setdefault(source.dest, []).append(source)
        root = self.options.models_root
        return all(read_manifest(root / d, g) is not None for d, g in groups.items())


def start_model_download(
    model_type: str,
    sources: Sequence[Source],
    *,
    options: WeightsOptions,
    token: str | None = None,
) -> ModelDownload:
    """Start making `model_type` ready in a daemon thread and return at once."""
    return ModelDownload(model_type, tuple(sources), options, token).start()


def wait_for(
    download: ModelDownload,
    ctx: StageContext,
    stop: StopRequest | None,
    *,
    poll_s: float = 0.5,
    stage: str = "weights",
) -> ModelResult:
    """Start `download` unless it runs, wait for it with throttled byte progress (the
    `stage` named in each PROGRESS), and end the wait and the download at a stop request."""
    download.start()
    model_type = download.model_type
    throttle = ByteProgress()
    while True:
        try:
            result = download.future.result(timeout=poll_s)
            break
        except FutureTimeout:
            if stop is not None and stop.requested:
                download.cancel()
                what = "model" if stage == "weights" else f"{model_type} model"
                raise stop.error(f"stopped while the {what} downloaded") from None
            done, total, message = download.tracker.snapshot()
            if throttle.due(done, total, message):
                ctx.progress(**progress_data(model_type, done, total, message, stage=stage))
    done, total, _ = download.tracker.snapshot()
    if total:
        ctx.progress(**progress_data(model_type, done, total, "model ready", stage=stage))
    return result


class Weights(Stage):
    """MODEL_DOWNLOAD: wait for (or start) the model's download, report bytes, record
    MODEL_READY."""

    name = "weights"
    status = Status.MODEL_DOWNLOAD

    def __init__(
        self, download: ModelDownload, *, stop: StopRequest | None = None, poll_s: float = 0.5
    ) -> None:
        self.download = download
        self.stop = stop
        self.poll_s = poll_s

    def run(self, ctx: StageContext) -> dict[str, Any]:
        result = wait_for(self.download, ctx, self.stop, poll_s=self.poll_s)
        ctx.record(
            ModelReady(
                model_type=result.model_type,
                path=result.path,
                bytes=result.bytes,
                source=result.source,
            )
        )
        return result.as_result()

    def verify(self, ctx: StageContext, result: Mapping[str, Any]) -> bool:
        """Still usable when every folder's manifest matches the files on disk."""
        return self.download.ready() and bool(result.get("files"))
