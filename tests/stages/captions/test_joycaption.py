"""JoyCaption's real loading and batched generation code on a tiny random LLaVA, on the CPU,
through the branches the real model takes (see tests/support/tiny_llava.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import LlavaForConditionalGeneration

from stages.captions.joycaption import (
    PROMPT,
    SYSTEM_PROMPT,
    JoyCaptioner,
    JoyCaptionSettings,
    build_batch,
    caption_images,
    load_captioner,
    pixels,
    prompt_ids,
)
from stages.captions.text import caption_path, with_trigger
from tests.support.tiny_llava import (
    BOS,
    IMAGE,
    IMAGE_END,
    IMAGE_SEQ_LENGTH,
    IMAGE_START,
    PAD,
    tiny_llava_dir,
    write_images,
)

GREEDY = JoyCaptionSettings(do_sample=False, max_new_tokens=6)


@pytest.fixture(scope="module")
def captioner() -> JoyCaptioner:
    return load_captioner(tiny_llava_dir(), device="cpu")


def _captions(folder: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted(folder.glob("*.txt"))}


def test_load_uses_float32_on_cpu_and_a_device_map(monkeypatch: pytest.MonkeyPatch) -> None:
    """The weights go where they run as they load (no 17 GB stop in CPU memory on a GPU)."""
    seen: list[dict[str, Any]] = []
    real = LlavaForConditionalGeneration.from_pretrained

    def spy(*args: Any, **kwargs: Any) -> Any:
        seen.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(LlavaForConditionalGeneration, "from_pretrained", spy)
    captioner = load_captioner(tiny_llava_dir(), device="cpu")
    assert seen == [{"dtype": torch.float32, "device_map": "cpu"}]
    assert next(captioner.model.parameters()).dtype is torch.float32
    assert captioner.model.config.vision_feature_layer == -2  # the real model's


def test_a_row_has_one_start_token_and_its_image_wrapped(captioner: JoyCaptioner) -> None:
    """The template opens with the start token and the tokenizer would add another (the
    recipe's warning): exactly one, first; the image token repeated once per image feature,
    between the image start and end tokens, in the user turn."""
    ids = prompt_ids(captioner.tokenizer, captioner.model.config, SYSTEM_PROMPT, PROMPT)
    tokens = captioner.tokenizer.convert_ids_to_tokens(ids)
    assert captioner.tokenizer.encode("a photo")[0] == captioner.tokenizer.bos_token_id
    assert tokens.count(BOS) == 1
    assert tokens[0] == BOS
    first = tokens.index(IMAGE)
    assert tokens[first - 1] == IMAGE_START
    assert tokens[first : first + IMAGE_SEQ_LENGTH] == [IMAGE] * IMAGE_SEQ_LENGTH
    assert tokens[first + IMAGE_SEQ_LENGTH] == IMAGE_END
    assert tokens.count(IMAGE) == IMAGE_SEQ_LENGTH
    assert tokens[-2:] == ["assistant", "<|end_header_id|>"]


def test_rows_of_different_lengths_are_padded_on_the_left(
    captioner: JoyCaptioner, tmp_path: Path
) -> None:
    images = [Image.open(p) for p in write_images(tmp_path, 2)]
    short, long = "write a description", "write a detailed description for this image"
    batch = build_batch(
        captioner.tokenizer, captioner.model.config, images, [short, long], SYSTEM_PROMPT
    )
    pad = captioner.tokenizer.convert_tokens_to_ids(PAD)
    ids, mask = batch.input_ids.tolist(), batch.attention_mask.tolist()
    gap = len(long.split()) - len(short.split())
    assert ids[0][:gap] == [pad] * gap
    assert mask[0][:gap] == [0] * gap
    assert ids[0][gap] == captioner.tokenizer.bos_token_id
    assert ids[1][0] == captioner.tokenizer.bos_token_id
    assert all(mask[1])
    assert batch.pixel_values.shape == (2, 3, 16, 16)


def test_images_are_resized_with_lanczos_as_the_recipe(tmp_path: Path) -> None:
    [path] = write_images(tmp_path, 1)
    image = Image.open(path).convert("RGB")
    got = pixels(image, 16)
    want = np.asarray(image.resize((16, 16), Image.Resampling.LANCZOS), dtype=np.float32)
    bicubic = np.asarray(image.resize((16, 16), Image.Resampling.BICUBIC), dtype=np.float32)
    assert torch.allclose(got, torch.from_numpy(want).permute(2, 0, 1) / 127.5 - 1, atol=1e-6)
    assert not np.allclose(want, bicubic)
    assert float(got.min()) >= -1
    assert float(got.max()) <= 1


def test_batched_rows_of_different_prompts_caption_as_one_by_one(
    captioner: JoyCaptioner, tmp_path: Path
) -> None:
    images = [Image.open(p) for p in write_images(tmp_path, 3)]
    prompts = ["write a description", "write a detailed description for this image", "do"]
    together = captioner.caption_batch(images, GREEDY, prompts)
    alone = [
        captioner.caption_batch([i], GREEDY, [p])[0] for i, p in zip(images, prompts, strict=True)
    ]
    assert together == alone


def test_every_uncaptioned_image_gets_one_line_with_the_trigger(
    captioner: JoyCaptioner, tmp_path: Path
) -> None:
    images = write_images(tmp_path, 4)
    caption_path(images[1]).write_text("my own caption\n")
    seen: list[tuple[int, int]] = []
    report = caption_images(
        captioner,
        images,
        trigger="ohwx",
        settings=JoyCaptionSettings(do_sample=False, max_new_tokens=6, batch_size=2),
        progress=lambda done, total: seen.append((done, total)),
    )
    assert report.captioned == [images[0], images[2], images[3]]
    assert report.skipped_existing == [images[1]]
    assert caption_path(images[1]).read_text() == "my own caption\n"
    for path in report.captioned:
        text = caption_path(path).read_text()
        assert text.endswith("\n")
        assert text.count("\n") == 1
        assert text.startswith("ohwx")
        assert text.count("ohwx") == 1
    assert seen == [(0, 3), (2, 3), (3, 3)]
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temp files


def test_batched_generation_writes_the_same_files_as_one_by_one(
    captioner: JoyCaptioner, tmp_path: Path
) -> None:
    one, batched = tmp_path / "one", tmp_path / "batched"
    settings = GREEDY
    caption_images(captioner, write_images(one, 5), settings=settings)
    caption_images(
        captioner,
        write_images(batched, 5),
        settings=JoyCaptionSettings(do_sample=False, max_new_tokens=6, batch_size=3),
    )
    assert settings.batch_size != 3
    by_one = _captions(one)
    assert len(by_one) == 5
    assert _captions(batched) == by_one
    # The random model still looks at the pixels: not every image gets the same caption.
    assert len(set(by_one.values())) > 1


def test_a_second_run_captions_nothing(captioner: JoyCaptioner, tmp_path: Path) -> None:
    images = write_images(tmp_path, 2)
    caption_images(captioner, images, settings=GREEDY)
    before = _captions(tmp_path)
    again = caption_images(captioner, images, settings=GREEDY)
    assert again.captioned == []
    assert again.skipped_existing == images
    assert _captions(tmp_path) == before


def test_close_drops_the_model() -> None:
    captioner = load_captioner(tiny_llava_dir(), device="cpu")
    captioner.close()
    assert captioner.model is None
    with pytest.raises(RuntimeError, match="closed"):
        captioner.caption_batch([Image.new("RGB", (4, 4))], GREEDY)


@pytest.mark.parametrize(
    ("caption", "trigger", "expected"),
    [
        ("a cat on grass", "ohwx", "ohwx, a cat on grass"),
        ("ohwx, a cat", "ohwx", "ohwx, a cat"),
        ("OHWX a cat", "ohwx", "OHWX a cat"),
        ("ohwxy cat", "ohwx", "ohwx, ohwxy cat"),
        ("a cat\non\n grass ", None, "a cat on grass"),
        ("", "ohwx person", "ohwx person"),
        ("line one\nline two", "", "line one line two"),
    ],
)
def test_with_trigger(caption: str, trigger: str | None, expected: str) -> None:
    assert with_trigger(caption, trigger) == expected
