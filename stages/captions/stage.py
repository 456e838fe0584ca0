"""The captions stage (CAPTIONING): JoyCaption for images, Gemini for videos.

It captions what its inputs ask for (`CaptionInputs`: `<job>/dataset/images/` for dataset.type
images/both, `<job>/dataset/videos/` for videos/both), writing a same-stem `.txt` beside each
media file with the trigger word in front. Media that already has a caption is skipped, so a job
delivered again keeps the captions it made before. JoyCaption's weights come from the weights
machinery (`model`: a `ModelDownload` of the catalogue's pinned revision, started at STARTING;
the stage waits for it with byte progress, and a stop ends the wait). The model is loaded only
when some image needs a caption and is freed before the stage returns, so training gets the GPU
memory.

Factories are injected so tests can pass a tiny LLaVA and a loopback Gemini; production uses the
defaults (JoyCaption from its download, Gemini at Google).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from google import genai

from events.vocabulary import Status
from stages.captions.gemini import VIDEO_EXTENSIONS, GeminiSettings, caption_videos, make_client
from stages.captions.inputs import CaptionInputs
from stages.captions.joycaption import (
    IMAGE_EXTENSIONS,
    JoyCaptioner,
    JoyCaptionSettings,
    caption_images,
    load_captioner,
)
from stages.captions.text import caption_path, has_caption, list_media
from stages.contract import Stage, StageContext, StopRequest
from stages.errors import CaptionError, StageFailed
from stages.weights.stage import ModelDownload, wait_for


class Captions(Stage):
    name = "captions"
    status = Status.CAPTIONING

    def __init__(
        self,
        inputs: CaptionInputs,
        *,
        model: ModelDownload | None = None,
        stop: StopRequest | None = None,
        load_image_captioner: Callable[[], JoyCaptioner] | None = None,
        joycaption: JoyCaptionSettings | None = None,
        gemini: GeminiSettings | None = None,
        gemini_client: Callable[[str, GeminiSettings], genai.Client] = make_client,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.inputs = inputs
        self.model = model
        self.stop = stop
        self.load_image_captioner = load_image_captioner
        self.joycaption = joycaption or JoyCaptionSettings()
        # The request's model wins over any default (the access stage checks the same one).
        self.gemini = replace(gemini or GeminiSettings(), model=inputs.gemini_model)
        self.gemini_client = gemini_client
        self.sleep = sleep

    def _media(self, ctx: StageContext) -> tuple[list[Path], list[Path]]:
        root = ctx.job_dir / "dataset"
        images = list_media(root / "images", IMAGE_EXTENSIONS) if self.inputs.images else []
        videos = list_media(root / "videos", VIDEO_EXTENSIONS) if self.inputs.videos else []
        return images, videos

    def run(self, ctx: StageContext) -> dict[str, Any]:
        trigger = self.inputs.trigger_word
        images, videos = self._media(ctx)
        skipped = sum(has_caption(p) for p in [*images, *videos])
        result: dict[str, Any] = {"images_captioned": 0, "videos_captioned": 0}

        def progress(media: str) -> Callable[[int, int], None]:
            def report(done: int, total: int) -> None:
                ctx.progress(stage=self.name, done=done, total=total, media=media)

            return report

        uncaptioned: list[str] = []
        try:
            if any(not has_caption(p) for p in images):
                captioner = self._image_captioner(ctx)
                try:
                    report = caption_images(
                        captioner,
                        images,
                        trigger=trigger,
                        settings=self.joycaption,
                        progress=progress("images"),
                    )
                finally:
                    captioner.close()  # free the GPU for training, also after a failure
                result["images_captioned"] = len(report.captioned)
            if any(not has_caption(p) for p in videos):
                key = self.inputs.gemini_api_key
                if key is None:
                    raise StageFailed("api_keys.gemini_api_key: required to caption videos")
                plain: str = key.get_secret_value()
                vreport = caption_videos(
                    videos,
                    api_key=plain,
                    trigger=trigger,
                    settings=self.gemini,
                    progress=progress("videos"),
                    client=self.gemini_client(plain, self.gemini),
                    sleep=self.sleep,
                )
                result["videos_captioned"] = len(vreport.captioned)
                uncaptioned = sorted(vreport.blocked)
        except CaptionError as exc:
            raise StageFailed(str(exc)) from None
        result["skipped_existing"] = skipped
        result["uncaptioned"] = uncaptioned  # blocked videos left without a caption (on "skip")
        result["files"] = [
            caption_path(p).relative_to(ctx.job_dir).as_posix()
            for p in [*images, *videos]
            if has_caption(p)
        ]
        return result

    def _image_captioner(self, ctx: StageContext) -> JoyCaptioner:
        if self.load_image_captioner is not None:
            return self.load_image_captioner()
        if self.model is None:
            raise StageFailed("internal error: images to caption but no JoyCaption download")
        ready = wait_for(self.model, ctx, self.stop, stage=self.name)
        return load_captioner(ready.path)

    def verify(self, ctx: StageContext, result: Mapping[str, Any]) -> bool:
        """Every media file in scope still has its caption (and the recorded ones exist)."""
        if not super().verify(ctx, result):
            return False
        left = set(result.get("uncaptioned", []))
        images, videos = self._media(ctx)
        return all(has_caption(p) or p.name in left for p in [*images, *videos])
