"""Image captions with JoyCaption (a LLaVA: SigLIP tower + Llama 3.1) through transformers.

`load_captioner` loads the model and processor from a Hub id or a local folder (production:
`<root>/models/joycaption`, fetched by the weights machinery); `caption_images` captions every
image that has no same-stem `.txt` yet, several images per `generate` call, and writes each
caption atomically as one line with the trigger word in front; `JoyCaptioner.close` frees the
model so training gets the GPU memory back.

Defaults follow the reference's known-good settings (peers.md §1.4, JoyCaption's model card):
the 50-word "detailed description" prompt, sampling at temperature 0.6 / top_p 0.9. The caption
files are written by `stages.captions.text`, shared with the Gemini captioner. torch and
transformers are imported lazily: importing this module stays cheap.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stages.captions.text import Progress, clean_caption, has_caption, write_caption
from stages.errors import CaptionError

if TYPE_CHECKING:
    import torch
    from PIL import Image

log = logging.getLogger(__name__)

MODEL_ID = "fancyfeast/llama-joycaption-beta-one-hf-llava"
SYSTEM_PROMPT = "You are a helpful image captioner."
PROMPT = (
    "Write a detailed description for this image in 50 words or less. "
    "Do NOT mention any text that is in the image."
)
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"})


# --- the model --------------------------------------------------------------------------------


@dataclass(frozen=True)
class JoyCaptionSettings:
    """Prompt, sampling and batching. Defaults: the reference's known-good settings."""

    prompt: str = PROMPT
    system_prompt: str = SYSTEM_PROMPT
    # 8 images of 384x384 (729 SigLIP tokens each) plus ~300 new tokens is a few GB of
    # activations and KV cache on top of the ~17 GB bf16 model: far inside an 80 GB GPU.
    batch_size: int = 8
    # A 50-word caption is ~70 tokens; the cap only stops a runaway sample, and a batch runs
    # until its longest member ends, so it stays well below the reference's 512.
    max_new_tokens: int = 300
    do_sample: bool = True
    temperature: float = 0.6
    top_p: float = 0.9

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        if self.max_new_tokens < 1:
            raise ValueError("max_new_tokens must be at least 1")


@dataclass
class JoyCaptioner:
    """A loaded model and processor; `caption_batch` runs one batched `generate` call."""

    model: Any
    processor: Any
    device: str
    dtype: torch.dtype
    _closed: bool = field(default=False, repr=False)

    def caption_batch(
        self, images: Sequence[Image.Image], settings: JoyCaptionSettings
    ) -> list[str]:
        import torch  # noqa: PLC0415 - heavy; the module imports cheaply

        if self._closed:
            raise RuntimeError("the captioner was closed")
        convo = [
            {"role": "system", "content": settings.system_prompt},
            {"role": "user", "content": settings.prompt},
        ]
        # JoyCaption's chat template puts the image token into the user turn itself.
        prompt = self.processor.apply_chat_template(
            convo, tokenize=False, add_generation_prompt=True
        )
        inputs = self.processor(
            text=[prompt] * len(images), images=list(images), return_tensors="pt", padding=True
        ).to(self.device)
        inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
        sampling: dict[str, Any] = (
            {"do_sample": True, "temperature": settings.temperature, "top_p": settings.top_p}
            if settings.do_sample
            else {"do_sample": False}
        )
        with torch.inference_mode():
            out = self.model.generate(
                **inputs,
                max_new_tokens=settings.max_new_tokens,
                use_cache=True,
                suppress_tokens=None,
                top_k=None,
                pad_token_id=self.processor.tokenizer.pad_token_id,
                **sampling,
            )
        # Left padding: every row's prompt ends at the same column, the new tokens follow it.
        new = out[:, inputs["input_ids"].shape[1] :]
        texts = self.processor.tokenizer.batch_decode(
            new, skip_special_tokens=True, clean_up_tokenization_spaces=False
        )
        return [clean_caption(t) for t in texts]

    def close(self) -> None:
        """Drop the model and hand its GPU memory back before training starts."""
        import torch  # noqa: PLC0415

        self._closed = True
        self.model = None
        self.processor = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def load_captioner(
    model_path_or_id: str | Path = MODEL_ID,
    device: str | None = None,
    dtype: torch.dtype | None = None,
) -> JoyCaptioner:
    """Load JoyCaption: bf16 on CUDA, float32 on the CPU (bf16 matmuls there are slow)."""
    import torch  # noqa: PLC0415
    from transformers import (  # noqa: PLC0415
        AutoProcessor,
        LlavaForConditionalGeneration,
    )

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if dtype is None:
        dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    processor: Any = AutoProcessor.from_pretrained(str(model_path_or_id))  # type: ignore[no-untyped-call]
    # Batched decoder-only generation needs the prompts aligned on the right.
    processor.tokenizer.padding_side = "left"
    if processor.tokenizer.pad_token_id is None:
        processor.tokenizer.pad_token = processor.tokenizer.eos_token
    model: Any = LlavaForConditionalGeneration.from_pretrained(str(model_path_or_id), dtype=dtype)
    model.to(device)
    model.eval()
    return JoyCaptioner(model=model, processor=processor, device=device, dtype=dtype)


@dataclass(frozen=True)
class ImageCaptionReport:
    captioned: list[Path]
    skipped_existing: list[Path]


def _open_rgb(path: Path) -> Image.Image:
    from PIL import Image, UnidentifiedImageError  # noqa: PLC0415

    try:
        with Image.open(path) as img:
            return img.convert("RGB")  # palette/alpha/greyscale images into the model's 3 planes
    except (OSError, UnidentifiedImageError) as exc:
        raise CaptionError(f"cannot read image {path.name}: {exc}") from exc


def caption_images(
    captioner: JoyCaptioner,
    images: Sequence[Path],
    *,
    trigger: str | None = None,
    settings: JoyCaptionSettings | None = None,
    progress: Progress | None = None,
) -> ImageCaptionReport:
    """Caption every image without a `.txt`, `settings.batch_size` images per generate call."""
    settings = settings or JoyCaptionSettings()
    todo = [p for p in images if not has_caption(p)]
    skipped = [p for p in images if p not in todo]
    captioned: list[Path] = []
    if progress is not None:
        progress(0, len(todo))
    for start in range(0, len(todo), settings.batch_size):
        batch = todo[start : start + settings.batch_size]
        texts = captioner.caption_batch([_open_rgb(p) for p in batch], settings)
        for path, text in zip(batch, texts, strict=True):
            if not text:
                log.warning("JoyCaption returned an empty caption for %s", path.name)
            write_caption(path, text, trigger)
            captioned.append(path)
        if progress is not None:
            progress(len(captioned), len(todo))
    return ImageCaptionReport(captioned=captioned, skipped_existing=skipped)
