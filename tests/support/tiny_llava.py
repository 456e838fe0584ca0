"""A tiny LLaVA (Llama text model + SigLIP vision tower, random weights) saved like JoyCaption.

JoyCaption beta one is a LLaVA with a SigLIP tower (feature strategy "full", features from the
second-to-last layer: `vision_feature_layer` -2) and a Llama 3.1 text model. This builds the same
shape at toy size, with no download, taking the real model's branches: Llama 3.1's special
tokens by name (the image token `<|reserved_special_token_69|>` wrapped by 70 and 71), a
tokenizer that adds its start token to every encode (as Llama 3.1's does, so a caller that lets
it and also uses the template gets two), JoyCaption's chat template as data
(`joycaption_chat_template.jinja`), `image_seq_length` image features per image, saved with
`save_pretrained` so the production loader reads it from a folder.
"""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import (
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    PreTrainedTokenizerFast,
    SiglipVisionConfig,
)

BOS, EOS, EOT = "<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"
IMAGE, IMAGE_START, IMAGE_END = (
    "<|reserved_special_token_69|>",
    "<|reserved_special_token_70|>",
    "<|reserved_special_token_71|>",
)
PAD = "<|finetune_right_pad_id|>"
SPECIALS = [
    PAD,
    BOS,
    EOS,
    "<unk>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    EOT,
    IMAGE,
    IMAGE_START,
    IMAGE_END,
]
WORDS = [
    "system",
    "user",
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
CHAT_TEMPLATE = (Path(__file__).with_name("joycaption_chat_template.jinja")).read_text()
IMAGE_SIZE = 16
PATCH = 8
IMAGE_SEQ_LENGTH = (IMAGE_SIZE // PATCH) ** 2


def build_tiny_llava(target: Path, *, seed: int = 0) -> Path:
    """Write a tiny random LLaVA and its tokenizer to `target`; returns `target`."""
    vocab = {tok: i for i, tok in enumerate([*SPECIALS, *WORDS])}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    # Llama 3.1's tokenizer adds its start token to every encode with special tokens.
    core.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, vocab[BOS])]
    )
    tokenizer = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=core,
        bos_token=BOS,
        eos_token=EOT,  # the instruct model's end of turn, as Llama 3.1 Instruct's tokenizer
        unk_token="<unk>",
        pad_token=PAD,
        additional_special_tokens=[t for t in SPECIALS if t not in (BOS, EOT, PAD, "<unk>")],
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    text = LlamaConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        bos_token_id=vocab[BOS],
        eos_token_id=vocab[EOT],
        pad_token_id=vocab[PAD],
    )
    vision = SiglipVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=3,
        num_attention_heads=4,
        image_size=IMAGE_SIZE,
        patch_size=PATCH,
    )
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=vocab[IMAGE],
        image_seq_length=IMAGE_SEQ_LENGTH,
        vision_feature_select_strategy="full",
        vision_feature_layer=-2,  # JoyCaption's: the tower's second-to-last layer
        projector_hidden_act="gelu",
    )
    config.pad_token_id = vocab[PAD]
    # Large random weights: captions then depend on the pixels, so batching bugs would show.
    text.initializer_range = 0.5
    vision.initializer_range = 0.5
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config)
    model.generation_config.pad_token_id = vocab[PAD]
    model.generation_config.eos_token_id = [vocab[EOT], vocab[EOS]]
    target.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)
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
