"""A tiny LLaVA (Llama text model + SigLIP vision tower, random weights) saved like a Hub repo.

JoyCaption beta-one is a LLaVA with a SigLIP tower (feature strategy "full", no CLS token) and a
Llama 3.1 text model whose chat template puts the image token into the first user turn. This
builds the same shape at toy size, with no download: a WordLevel tokenizer built in memory, a
chat template that inserts `<image>` into the user turn as JoyCaption's does, a 16x16 SigLIP image
processor, saved with `save_pretrained` so the production loader reads it from a folder.
"""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    PreTrainedTokenizerFast,
    SiglipImageProcessorPil,
    SiglipVisionConfig,
)

SPECIALS = ["<pad>", "<s>", "</s>", "<unk>", "<image>", "<|system|>", "<|user|>", "<|assistant|>"]
WORDS = [
    "a",
    "photo",
    "of",
    "the",
    "cat",
    "dog",
    "red",
    "blue",
    "green",
    "small",
    "large",
    "sitting",
    "on",
    "grass",
    "in",
    "room",
    "with",
    "light",
    "write",
    "detailed",
    "description",
    "for",
    "this",
    "image",
    "words",
    "or",
    "less",
    "do",
    "not",
    "mention",
    "any",
    "text",
    "that",
    "is",
    "you",
    "are",
    "helpful",
    "captioner",
    "assistant",
    "person",
    "standing",
    "near",
    "tree",
    "car",
    "street",
    "sky",
]
# Mirrors JoyCaption's template: the image token goes into the (first) user turn, the code
# passes the prompt as plain string content.
CHAT_TEMPLATE = (
    "{% for m in messages %}"
    "{{ '<|' + m['role'] + '|>' }} "
    "{% if m['role'] == 'user' %}<image> {% endif %}"
    "{{ m['content'] }} </s> "
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|> {% endif %}"
)
IMAGE_SIZE = 16
PATCH = 8


def build_tiny_llava(target: Path, *, seed: int = 0) -> Path:
    """Write a tiny random LLaVA and its processor to `target`; returns `target`."""
    vocab = {tok: i for i, tok in enumerate([*SPECIALS, *WORDS])}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=core,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        extra_special_tokens={"image_token": "<image>"},
        additional_special_tokens=["<image>", "<|system|>", "<|user|>", "<|assistant|>"],
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    image_processor = SiglipImageProcessorPil(
        size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )
    processor = LlavaProcessor(  # type: ignore[no-untyped-call]
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=PATCH,
        vision_feature_select_strategy="full",
        chat_template=CHAT_TEMPLATE,
        image_token="<image>",
        num_additional_image_tokens=0,
    )
    text = LlamaConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        bos_token_id=vocab["<s>"],
        eos_token_id=vocab["</s>"],
        pad_token_id=vocab["<pad>"],
    )
    vision = SiglipVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=IMAGE_SIZE,
        patch_size=PATCH,
    )
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=vocab["<image>"],
        vision_feature_select_strategy="full",
        vision_feature_layer=-1,
        projector_hidden_act="gelu",
    )
    config.pad_token_id = vocab["<pad>"]
    # Large random weights: captions then depend on the pixels, so batching bugs would show.
    text.initializer_range = 0.5
    vision.initializer_range = 0.5
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config)
    model.generation_config.pad_token_id = vocab["<pad>"]
    model.generation_config.eos_token_id = vocab["</s>"]
    target.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(target)
    processor.save_pretrained(target)
    return target


@functools.cache
def tiny_llava_dir() -> Path:
    """One tiny LLaVA per test process (building it costs seconds; tests only read it)."""
    return build_tiny_llava(Path(tempfile.mkdtemp(prefix="tiny-llava-")))


def write_images(folder: Path, count: int, *, seed: int = 0) -> list[Path]:
    """Noise PNGs of different sizes: distinct inputs, so captions differ between images."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        pixels = rng.integers(0, 255, (12 + 5 * i, 20 + 3 * i, 3), dtype=np.uint8)
        path = folder / f"img{i:02d}.png"
        Image.fromarray(pixels).save(path)
        paths.append(path)
    return paths
