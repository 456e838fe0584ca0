"""The model card's Hub metadata and usage text, per model: the values are typed out by hand from
the Hub's docs and the base models' own pages, not read from the catalogue."""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path
from typing import Any

import diffusers
import pytest
from huggingface_hub import ModelCard

from orchestrator.catalogue import CATALOGUE, MODEL_TYPES
from stages.publish.card import model_card
from tests.support.card_inputs import TRIGGER, card_inputs
from tests.support.tiny_pipelines.snippets import python_block

REPO = "alice/style-lora"

# The Hub's licence identifiers (huggingface/hub-docs docs/hub/repositories-licenses.md).
_HUB_LICENCE_IDS = (
    "apache-2.0 mit openrail bigscience-openrail-m creativeml-openrail-m bigscience-bloom-rail-1.0 "
    "bigcode-openrail-m afl-3.0 artistic-2.0 bsl-1.0 bsd bsd-2-clause bsd-3-clause "
    "bsd-3-clause-clear c-uda cc cc0-1.0 cc-by-2.0 cc-by-2.5 cc-by-3.0 cc-by-4.0 cc-by-sa-3.0 "
    "cc-by-sa-4.0 cc-by-nc-2.0 cc-by-nc-3.0 cc-by-nc-4.0 cc-by-nd-4.0 cc-by-nc-nd-3.0 "
    "cc-by-nc-nd-4.0 cc-by-nc-sa-2.0 cc-by-nc-sa-3.0 cc-by-nc-sa-4.0 cdla-sharing-1.0 "
    "cdla-permissive-1.0 cdla-permissive-2.0 wtfpl ecl-2.0 epl-1.0 epl-2.0 etalab-2.0 eupl-1.1 "
    "agpl-3.0 gfdl gpl gpl-2.0 gpl-3.0 lgpl lgpl-2.1 lgpl-3.0 isc lppl-1.3c ms-pl mpl-2.0 odc-by "
    "odbl openrail++ osl-3.0 postgresql ofl-1.1 ncsa unlicense zlib pddl lgpl-lr "
    "deepfloyd-if-license llama2 gemma unknown other"
)
HUB_LICENCES = frozenset(_HUB_LICENCE_IDS.split())

FLUX_LICENCE = {
    "license": "other",
    "license_name": "flux-1-dev-non-commercial-license",
    "license_link": "https://huggingface.co/black-forest-labs/FLUX.1-dev/blob/main/LICENSE.md",
}
APACHE = {"license": "apache-2.0"}

# model_type: (licence metadata, pipeline_tag, base_model, diffusers repo, pipeline class)
EXPECTED: dict[str, tuple[dict[str, str], str, str, str, str]] = {
    "flux": (
        FLUX_LICENCE,
        "text-to-image",
        "black-forest-labs/FLUX.1-dev",
        "black-forest-labs/FLUX.1-dev",
        "FluxPipeline",
    ),
    "sdxl": (
        {"license": "openrail++"},
        "text-to-image",
        "stabilityai/stable-diffusion-xl-base-1.0",
        "stabilityai/stable-diffusion-xl-base-1.0",
        "StableDiffusionXLPipeline",
    ),
    "wan13": (
        APACHE,
        "text-to-video",
        "Wan-AI/Wan2.1-T2V-1.3B",
        "Wan-AI/Wan2.1-T2V-1.3B-Diffusers",
        "WanPipeline",
    ),
    "wan14b_t2v": (
        APACHE,
        "text-to-video",
        "Wan-AI/Wan2.1-T2V-14B",
        "Wan-AI/Wan2.1-T2V-14B-Diffusers",
        "WanPipeline",
    ),
    "wan14b_i2v": (  # the catalogue trains the 480P checkpoint
        APACHE,
        "image-to-video",
        "Wan-AI/Wan2.1-I2V-14B-480P",
        "Wan-AI/Wan2.1-I2V-14B-480P-Diffusers",
        "WanImageToVideoPipeline",
    ),
    "qwen": (APACHE, "text-to-image", "Qwen/Qwen-Image", "Qwen/Qwen-Image", "QwenImagePipeline"),
    "z_image_turbo": (
        APACHE,
        "text-to-image",
        "Tongyi-MAI/Z-Image-Turbo",
        "Tongyi-MAI/Z-Image-Turbo",
        "ZImagePipeline",
    ),
}


def card(tmp_path: Path, model_type: str, **kwargs: Any) -> str:
    trigger = kwargs.pop("trigger", TRIGGER)
    return model_card(card_inputs(tmp_path, model_type, trigger), REPO, **kwargs)


def meta(text: str) -> dict[str, Any]:
    """The front matter as huggingface_hub's ModelCard reads it (raises on malformed YAML)."""
    data: Any = ModelCard(text).data
    out: dict[str, Any] = data.to_dict()
    return out


def test_every_public_model_is_expected() -> None:
    assert set(EXPECTED) == set(MODEL_TYPES)


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_licence_metadata(tmp_path: Path, model_type: str) -> None:
    data = meta(card(tmp_path, model_type))
    licence = {k: v for k, v in data.items() if k.startswith("license")}
    assert licence == EXPECTED[model_type][0]
    assert data["license"] in HUB_LICENCES


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_pipeline_tag_and_tags(tmp_path: Path, model_type: str) -> None:
    data = meta(card(tmp_path, model_type))
    tag = EXPECTED[model_type][1]
    assert data["pipeline_tag"] == tag
    family = CATALOGUE[model_type].diffusion_pipe_type
    assert {tag, "lora", "diffusers", "template:sd-lora", family, "diffusion-pipe"} <= set(
        data["tags"]
    )
    assert data["library_name"] == "diffusers"
    assert data["instance_prompt"] == TRIGGER


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_base_model_is_the_canonical_repo(tmp_path: Path, model_type: str) -> None:
    data = meta(card(tmp_path, model_type))
    assert data["base_model"] == EXPECTED[model_type][2]
    assert data["base_model_relation"] == "adapter"


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_snippet_loads_the_diffusers_repo_with_the_right_pipeline(
    tmp_path: Path, model_type: str
) -> None:
    _, tag, _, repo, cls = EXPECTED[model_type]
    code = python_block(card(tmp_path, model_type))
    ast.parse(code)
    assert re.search(rf"\b{cls}\.from_pretrained\(", code)
    assert f'"{repo}"' in code
    lora = CATALOGUE[model_type].lora_file
    if model_type == "z_image_turbo":  # the copy under diffusers' names
        lora = f"diffusers/{lora}"
    assert f'pipe.load_lora_weights("{REPO}", weight_name="{lora}")' in code
    if tag.endswith("-to-video"):
        assert ".frames[0]" in code
        assert 'export_to_video(video, "output.mp4", fps=16)' in code
        assert ".images[0]" not in code
    else:
        assert ".images[0]" in code
        assert "export_to_video" not in code
    assert ("image=image" in code) == (tag == "image-to-video")


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_snippet_arguments_exist_in_the_pipeline(tmp_path: Path, model_type: str) -> None:
    """Every keyword the snippet passes is a parameter of the installed pipeline's __call__."""
    code = python_block(card(tmp_path, model_type))
    cls = getattr(diffusers, EXPECTED[model_type][4])
    call = next(
        node
        for node in ast.walk(ast.parse(code))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "pipe"
    )
    params = inspect.signature(cls.__call__).parameters
    assert {kw.arg for kw in call.keywords} <= set(params)
    for name in ("height", "width", "num_inference_steps"):
        assert name in {kw.arg for kw in call.keywords}


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_comfyui_instructions(tmp_path: Path, model_type: str) -> None:
    body = card(tmp_path, model_type).split("### ComfyUI", 1)[1]
    assert "`ComfyUI/models/loras/`" in body
    # SDXL's kohya file has text encoder LoRAs too: only LoraLoader applies them.
    node = "LoraLoader" if model_type == "sdxl" else "LoraLoaderModelOnly"
    assert f"Put a `{node}` node" in body
    assert (
        "`ComfyUI/models/" + ("checkpoints/`" if model_type == "sdxl" else "diffusion_models/`")
        in body
    )


def test_flux_card_says_the_base_is_gated(tmp_path: Path) -> None:
    assert "is gated: accept its licence" in card(tmp_path, "flux")
    assert "is gated" not in card(tmp_path, "qwen")


def test_wan_card_installs_what_the_pipeline_needs(tmp_path: Path) -> None:
    text = card(tmp_path, "wan13")
    assert (
        "pip install -U diffusers transformers accelerate peft ftfy imageio imageio-ffmpeg" in text
    )


def test_z_image_card_says_which_file_is_for_which_tool(tmp_path: Path) -> None:
    text = card(tmp_path, "z_image_turbo")
    assert "load that one in diffusers, the other in ComfyUI" in text
    assert 'weight_name="diffusers/adapter_model.safetensors"' in text
    comfy = f"comfyui/{REPO.split('/')[1]}-z_image_turbo-epoch2.safetensors"  # repo, type, save
    assert f"Download `{comfy}` into `ComfyUI/models/loras/`" in text
    assert "| `adapter_model.safetensors` | ComfyUI: the LoRA as diffusion-pipe saved it" in text
    assert "| `diffusers/adapter_model.safetensors` | diffusers:" in text


@pytest.mark.parametrize(
    ("private", "says"),
    [(True, "This repository is **private**"), (False, "This repository is public.")],
)
def test_card_says_the_real_visibility(tmp_path: Path, private: bool, says: str) -> None:
    text = card(tmp_path, "qwen", private=private)
    assert says in text
    assert ("needs a Hugging Face token" in text) is private


def test_no_visibility_line_when_unknown(tmp_path: Path) -> None:
    text = card(tmp_path, "qwen")
    assert "This repository is" not in text


def test_tiny_card_has_no_base_licence(tmp_path: Path) -> None:
    text = card(tmp_path, "tiny")
    data = meta(text)
    assert "license" not in data
    assert "base_model" not in data
    assert data["pipeline_tag"] == "text-to-image"
    assert "no base model licence applies" in text
    assert "```python" not in text  # no public tool loads it
    assert "library_name" not in data
    assert "template:sd-lora" not in data["tags"]


def test_trigger_word_is_quoted_as_a_python_literal(tmp_path: Path) -> None:
    trigger = 'say "hi" \\ then'
    code = python_block(card(tmp_path, "qwen", trigger=trigger))
    call = next(
        node
        for node in ast.walk(ast.parse(code))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "pipe"
    )
    prompt = next(kw.value for kw in call.keywords if kw.arg == "prompt")
    assert isinstance(prompt, ast.Constant)
    assert prompt.value == f"{trigger}, a photo"
