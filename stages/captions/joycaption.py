"""Image captions with JoyCaption (a LLaVA: SigLIP tower + Llama 3.1) through transformers.

The steps follow the author's batch recipe (fpgaminer/joycaption `scripts/batch-caption.py`,
and the model card of `fancyfeast/llama-joycaption-beta-one-hf-llava`):

- load: `AutoTokenizer` and `LlavaForConditionalGeneration` in bfloat16 with a device map, so
  the weights go straight to the GPU instead of through ~17 GB of CPU memory; once per stage;
- the prompt: the system and user turns through the model's own chat template, which already
  opens with the start token and wraps the image token in its start/end tokens in the first user
  turn; tokenized with `add_special_tokens=False` (the tokenizer would add a second start
  token, which the recipe warns makes the model perform poorly), the image token repeated
  `image_seq_length` times;
- the image: resized with Pillow LANCZOS to the tower's square size (the author found a plain
  Pillow resize gives better captions than the processor's bicubic, and the so400m tower expects
  the image squished, not padded), then scaled to [-1, 1];
- several images per `generate` call, rows of different lengths left-padded (decoder-only
  generation needs every prompt to end at the same column), sampling at temperature 0.6 /
  top_p 0.9 under `inference_mode`; each row's answer is cut at the end of its turn.

`load_captioner` loads from a local folder (production: `<root>/models/joycaption`, fetched by
the weights stage at the catalogue's pinned revision; see `stages.captions.stage`);
`caption_images` captions every image that has no same-stem `.txt` yet and writes each caption
atomically as one line with the trigger word in front (`stages.captions.text`, shared with the
Gemini captioner); `JoyCaptioner.close` frees the model so training gets the GPU memory back.
torch and transformers are imported lazily: importing this module stays cheap.
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
END_OF_TURN = "<|eot_id|>"  # Llama 3.1's end of a turn: an answer ends there


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


@dataclass(frozen=True)
class Batch:
    """One `generate` call's inputs: left-padded token rows, their mask, the pixels."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    pixel_values: torch.Tensor


def pixels(image: Image.Image, size: int) -> torch.Tensor:
    """The recipe's preprocessing: LANCZOS to `size` x `size`, RGB, scaled to [-1, 1]."""
    import numpy as np  # noqa: PLC0415
    import torch  # noqa: PLC0415
    from PIL import Image as PILImage  # noqa: PLC0415

    if image.size != (size, size):
        image = image.resize((size, size), PILImage.Resampling.LANCZOS)
    array = np.asarray(image.convert("RGB"), dtype=np.float32)
    chw = torch.from_numpy(array).permute(2, 0, 1) / 255.0
    return (chw - 0.5) / 0.5


def prompt_ids(tokenizer: Any, config: Any, system_prompt: str, prompt: str) -> list[int]:
    """One row's tokens: the chat template's text (which opens with the start token and holds
    one image token), encoded without the tokenizer's own start token, the image token
    repeated once per image feature."""
    convo = [{"role": "system", "content": system_prompt}, {"role": "user", "content": prompt}]
    text = tokenizer.apply_chat_template(convo, tokenize=False, add_generation_prompt=True)
    ids: list[int] = tokenizer.encode(text, add_special_tokens=False)
    image_token = int(config.image_token_index)
    if ids.count(image_token) != 1:
        raise CaptionError(
            f"JoyCaption's chat template gave {ids.count(image_token)} image tokens, not 1: "
            "the model folder's tokenizer does not match the model"
        )
    out: list[int] = []
    for token in ids:
        out.extend([token] * int(config.image_seq_length) if token == image_token else [token])
    return out


def build_batch(
    tokenizer: Any,
    config: Any,
    images: Sequence[Image.Image],
    prompts: Sequence[str],
    system_prompt: str,
) -> Batch:
    """The rows of one call, left-padded to the longest (pad id, mask 0 on the left)."""
    import torch  # noqa: PLC0415

    rows = [prompt_ids(tokenizer, config, system_prompt, p) for p in prompts]
    width = max(len(r) for r in rows)
    pad = int(tokenizer.pad_token_id)
    ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows], dtype=torch.long)
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], dtype=torch.long)
    size = int(config.vision_config.image_size)
    pixel_values = torch.stack([pixels(image, size) for image in images])
    return Batch(ids, mask, pixel_values)


@dataclass
class JoyCaptioner:
    """A loaded model and tokenizer; `caption_batch` runs one batched `generate` call."""

    model: Any
    tokenizer: Any
    device: str
    dtype: torch.dtype
    _closed: bool = field(default=False, repr=False)

    def caption_batch(
        self,
        images: Sequence[Image.Image],
        settings: JoyCaptionSettings,
        prompts: Sequence[str] | None = None,
    ) -> list[str]:
        """Captions for `images`, one `generate` call; `prompts`: one per image (default:
        `settings.prompt` for all)."""
        import torch  # noqa: PLC0415

        if self._closed:
            raise RuntimeError("the captioner was closed")
        if not images:
            return []
        prompts = list(prompts) if prompts is not None else [settings.prompt] * len(images)
        if len(prompts) != len(images):
            raise ValueError("one prompt per image")
        batch = build_batch(
            self.tokenizer, self.model.config, images, prompts, settings.system_prompt
        )
        sampling: dict[str, Any] = (
            {"do_sample": True, "temperature": settings.temperature, "top_p": settings.top_p}
            if settings.do_sample
            else {"do_sample": False}
        )
        with torch.inference_mode():
            out = self.model.generate(
                input_ids=batch.input_ids.to(self.device),
                attention_mask=batch.attention_mask.to(self.device),
                pixel_values=batch.pixel_values.to(self.device, self.dtype),
                max_new_tokens=settings.max_new_tokens,
                use_cache=True,
                suppress_tokens=None,
                top_k=None,
                pad_token_id=self.tokenizer.pad_token_id,
                **sampling,
            )
        # Left padding: every row's prompt ends at the same column, the new tokens follow it.
        new = out[:, batch.input_ids.shape[1] :].tolist()
        ends = self._turn_ends()
        texts = self.tokenizer.batch_decode(
            [_until(row, ends) for row in new],
            skip_special_tokens=True,
            clean_up_tokenization_spaces=False,
        )
        return [clean_caption(t) for t in texts]

    def _turn_ends(self) -> set[int]:
        ends = (
            {int(self.tokenizer.eos_token_id)} if self.tokenizer.eos_token_id is not None else set()
        )
        eot = self.tokenizer.convert_tokens_to_ids(END_OF_TURN)
        if isinstance(eot, int) and eot != self.tokenizer.unk_token_id:
            ends.add(eot)
        return ends

    def close(self) -> None:
        """Drop the model and hand its GPU memory back before training starts."""
        import torch  # noqa: PLC0415

        self._closed = True
        self.model = None
        self.tokenizer = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _until(row: list[int], ends: set[int]) -> list[int]:
    """A row's answer: its tokens before the first end of turn (the rest is padding or a
    sample that ran on after the turn closed)."""
    for i, token in enumerate(row):
        if token in ends:
            return row[:i]
    return row


def load_captioner(
    model_path: str | Path,
    device: str | None = None,
    dtype: torch.dtype | None = None,
) -> JoyCaptioner:
    """Load JoyCaption from a folder: bf16 on CUDA, float32 on the CPU (bf16 matmuls there are
    slow), placed by a device map."""
    import torch  # noqa: PLC0415
    from transformers import AutoTokenizer, LlavaForConditionalGeneration  # noqa: PLC0415

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if dtype is None:
        dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    tokenizer: Any = AutoTokenizer.from_pretrained(str(model_path), use_fast=True)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model: Any = LlavaForConditionalGeneration.from_pretrained(
        str(model_path), dtype=dtype, device_map=device
    )
    model.eval()
    return JoyCaptioner(model=model, tokenizer=tokenizer, device=device, dtype=dtype)


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
