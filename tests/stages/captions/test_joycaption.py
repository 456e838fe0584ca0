"""JoyCaption's real loading and batched generation code on a tiny random LLaVA, on the CPU."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from stages.captions.joycaption import (
    JoyCaptioner,
    JoyCaptionSettings,
    caption_images,
    load_captioner,
)
from stages.captions.text import caption_path, with_trigger
from tests.support.tiny_llava import tiny_llava_dir, write_images

GREEDY = JoyCaptionSettings(do_sample=False, max_new_tokens=6)


@pytest.fixture(scope="module")
def captioner() -> JoyCaptioner:
    return load_captioner(tiny_llava_dir(), device="cpu")


def _captions(folder: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted(folder.glob("*.txt"))}


def test_load_uses_float32_on_cpu_and_left_padding(captioner: JoyCaptioner) -> None:
    assert captioner.dtype is torch.float32
    assert next(captioner.model.parameters()).dtype is torch.float32
    assert captioner.processor.tokenizer.padding_side == "left"


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
        captioner.caption_batch([], GREEDY)


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
