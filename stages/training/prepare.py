"""The prepare stage (STARTING): keep the request on the volume, start the base model's download.

The request was validated (and its configs checked against diffusion-pipe's rules) before the
job's folder was touched; here a redacted copy goes to `<job>/request.json`, and the model's
download starts in the background so it overlaps the dataset download and captioning (the
weights stage waits for the same `ModelDownload`), and so does JoyCaption's when images will be
captioned (the captions stage waits for it). A model whose trainer code needs flash-attn
is refused first on a worker that cannot import it (`runtime`), on every delivery.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from events.atomic import write_atomic
from events.vocabulary import Status
from stages.contract import Stage, StageContext
from stages.model_info import ModelInfo
from stages.training.runtime import flash_attn_imports, require_flash_attn
from stages.weights.stage import ModelDownload

REQUEST_FILE = "request.json"


class Prepare(Stage):
    name = "prepare"
    status = Status.STARTING

    def __init__(
        self,
        shown_request: Mapping[str, Any],
        download: ModelDownload,
        model: ModelInfo,
        *,
        also: Sequence[ModelDownload] = (),
    ) -> None:
        self.shown_request = shown_request  # already masked and redacted
        self.download = download
        self.also = tuple(also)  # other models the job needs (JoyCaption), started alongside
        self.model = model

    def run(self, ctx: StageContext) -> dict[str, Any]:
        write_atomic(ctx.job_dir / REQUEST_FILE, json.dumps(self.shown_request, indent=2) + "\n")
        if self.model.needs_flash_attn:
            require_flash_attn(self.model.display_name)
        self.download.start()
        for other in self.also:
            other.start()
        started = {d.model_type: "started" for d in self.also}
        return {"files": [REQUEST_FILE], "model_download": "started", "also": started}

    def verify(self, ctx: StageContext, result: Mapping[str, Any]) -> bool:
        """Done before, unless this worker lacks flash-attn: then run again, and refuse."""
        if self.model.needs_flash_attn and not flash_attn_imports():
            return False
        return super().verify(ctx, result)
