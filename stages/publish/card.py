"""The model card (`README.md` of the Hub repo): Hub metadata in YAML front matter, then the
licence, the training parameters, the dataset report and how to run the LoRA.

The metadata follows the Hub's conventions (a licence id from the Hub's list, `base_model` the
canonical base repo with `base_model_relation: adapter`, `pipeline_tag` per task, diffusers'
`template:sd-lora` tag). Every model fact comes from the catalogue (`ModelInfo.licence`,
`ModelInfo.usage`), every job fact from the `PublishSpec` and results; the diffusers snippet is
executed against tiny pipelines by tests/stages/publish/test_card_snippets.py. The card is
scrubbed of the job's secrets before it is published (the repo may be public).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from huggingface_hub import ModelCardData

from stages.model_info import ModelInfo, Usage
from stages.publish import annotate, diffusers_copy
from stages.publish.common import PublishInputs

PIP = ("diffusers", "transformers", "accelerate", "peft")  # load_lora_weights needs peft


def _value(value: Any) -> str:
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value)
    return str(value)


def _parameters(inputs: PublishInputs) -> str:
    return "\n".join(
        f"| `{k}` | {_value(v)} |"
        for k, v in inputs.spec.card_training.items()
        if not isinstance(v, Mapping)
    )


def _dataset(inputs: PublishInputs) -> str:
    report = inputs.dataset_report
    lines = [
        f"- {k}: {_value(v)}" for k, v in report.items() if not isinstance(v, Mapping) and v != []
    ] or ["- (no dataset report recorded)"]
    return "\n".join(lines)


def _pipeline_tag(model: ModelInfo) -> str:
    if model.usage is not None:
        return model.usage.pipeline_tag
    return "text-to-image" if model.trains_images else "text-to-video"


def _front_matter(inputs: PublishInputs) -> str:
    model, trigger = inputs.model, inputs.spec.trigger_word
    tag = _pipeline_tag(model)
    tags = [tag, "lora", model.diffusion_pipe_type, "diffusion-pipe"]
    meta: dict[str, Any] = {"tags": tags, "pipeline_tag": tag}
    if model.usage is not None:  # a public base model: its LoRA loads in diffusers
        tags[1:1] = ["diffusers", "template:sd-lora"]  # template:sd-lora as diffusers' own cards
        meta |= {
            "library_name": "diffusers",
            "base_model": model.usage.base_model,
            "base_model_relation": "adapter",
        }
    if model.licence is not None:
        meta["license"] = model.licence.hub_id
        if model.licence.hub_id == "other":  # the Hub's list does not name it
            meta |= {"license_name": model.licence.slug, "license_link": model.licence.link}
    if trigger:
        meta["instance_prompt"] = trigger
    return str(ModelCardData(**meta).to_yaml())


def _licence(inputs: PublishInputs) -> str:
    model = inputs.model
    if model.licence is None or model.usage is None:
        return "A test LoRA for the tiny CPU model; no base model licence applies."
    base, licence = model.usage.base_model, model.licence
    return (
        f"This LoRA is derived from [{base}](https://huggingface.co/{base}); its use is subject "
        f"to the base model's licence, the [{licence.name}]({licence.link})."
    )


def _visibility(private: bool | None) -> str:
    if private is None:
        return ""
    if private:
        return (
            "\nThis repository is **private**: every download of it, by diffusers, ComfyUI "
            "managers or the direct link, needs a Hugging Face token with read access to it "
            "(`hf auth login`, or the `HF_TOKEN` variable).\n"
        )
    return "\nThis repository is public.\n"


def _literal(value: int | float | str) -> str:
    # json.dumps quotes a string as a valid Python literal (a trigger word may hold quotes).
    return json.dumps(value, ensure_ascii=False) if isinstance(value, str) else repr(value)


def _fps(model: ModelInfo) -> str:
    fps = model.video_fps or 16.0
    return str(int(fps)) if float(fps).is_integer() else str(fps)


def _snippet(inputs: PublishInputs, usage: Usage, repo_id: str) -> str:
    """Python that loads the base pipeline, this LoRA, and generates one image or video."""
    video = usage.pipeline_tag.endswith("-to-video")
    i2v = usage.pipeline_tag == "image-to-video"
    trigger = inputs.spec.trigger_word
    subject = "a video" if video else "a photo"
    prompt = f"{trigger}, {subject}" if trigger else subject
    classes = ", ".join(sorted({usage.pipeline_class, usage.vae_class or usage.pipeline_class}))
    helpers = [name for name, wanted in (("export_to_video", video), ("load_image", i2v)) if wanted]
    lines = ["import torch", f"from diffusers import {classes}"]
    if helpers:
        lines.append(f"from diffusers.utils import {', '.join(helpers)}")
    lines.append("")
    if usage.vae_class:
        lines += [
            f'repo = "{usage.diffusers_repo}"',
            "# As diffusers' examples do: the VAE in float32, the rest in bfloat16.",
            f"vae = {usage.vae_class}.from_pretrained("
            'repo, subfolder="vae", torch_dtype=torch.float32)',
            f"pipe = {usage.pipeline_class}.from_pretrained("
            "repo, vae=vae, torch_dtype=torch.bfloat16)",
        ]
    else:
        lines.append(
            f"pipe = {usage.pipeline_class}.from_pretrained("
            f'"{usage.diffusers_repo}", torch_dtype=torch.bfloat16)'
        )
    weight = diffusers_copy.diffusers_file(inputs.lora_name, usage.diffusers_copy)
    lines += ['pipe.to("cuda")', f'pipe.load_lora_weights("{repo_id}", weight_name="{weight}")']
    args = [f"prompt={_literal(prompt)}"]
    if i2v:
        lines.append('image = load_image("first_frame.png")  # the start frame: a path or a URL')
        args.insert(0, "image=image")
    args += [f"{name}={_literal(value)}" for name, value in usage.call]
    call = "pipe(\n" + "".join(f"    {arg},\n" for arg in args) + ")"
    if video:
        lines += [
            f"video = {call}.frames[0]",
            f'export_to_video(video, "output.mp4", fps={_fps(inputs.model)})',
        ]
    else:
        lines += [f"image = {call}.images[0]", 'image.save("output.png")']
    return "\n".join(lines)


def _diffusers(inputs: PublishInputs, usage: Usage, repo_id: str) -> str:
    pip = " ".join((*PIP, *usage.extra_pip))
    gated = (
        f"\n[{usage.base_model}](https://huggingface.co/{usage.base_model}) is gated: accept its "
        "licence on the model page first; its download then needs your token.\n"
        if usage.gated
        else ""
    )
    note = f"\n{usage.diffusers_note}\n" if usage.diffusers_note else ""
    return f"""### diffusers

```bash
pip install -U {pip}
```
{gated}{note}
```python
{_snippet(inputs, usage, repo_id)}
```"""


def _comfyui(inputs: PublishInputs, usage: Usage, repo_id: str) -> str:
    comfy = annotate.comfy_name(inputs, annotate.repo_label(repo_id))
    lora, node = comfy.rsplit("/", 1)[1], usage.comfy_node
    files = "\n".join(
        f"   - `{f.name}` in `ComfyUI/models/{f.folder}/`, loaded with `{f.node}`"
        for f in usage.comfy_files
    )
    if node == "LoraLoader":
        wiring = (
            f"Put a `LoraLoader` node after the checkpoint loader, with `{lora}` selected, and "
            "take both its MODEL and CLIP outputs on: the file holds text encoder LoRAs too, "
            "which `LoraLoaderModelOnly` would leave out."
        )
    else:
        wiring = (
            f"Put a `{node}` node between the diffusion model loader and the sampler, with "
            f"`{lora}` selected (the LoRA holds the diffusion model's layers only)."
        )
    return f"""### ComfyUI

1. Download `{comfy}` into `ComfyUI/models/loras/`: the same LoRA as `{inputs.lora_name}`,
   under a name no other LoRA there has (ComfyUI lists LoRAs by file name).
2. Load the base model's files:
{files}
3. {wiring} A console line `lora key not loaded` would mean a part of it was not applied."""


def _usage(inputs: PublishInputs, repo_id: str) -> str:
    usage = inputs.model.usage
    if usage is None:
        return "A test LoRA for the tiny CPU model (minipipe); no public tool loads it."
    return f"{_diffusers(inputs, usage, repo_id)}\n\n{_comfyui(inputs, usage, repo_id)}"


def _base_and_files(inputs: PublishInputs, repo_id: str) -> str:
    """Which base model and task the LoRA is for (a Wan I2V LoRA does nothing useful in T2V),
    and which file is for which tool."""
    model, usage = inputs.model, inputs.model.usage
    if usage is None:
        return ""
    lora = inputs.lora_name
    comfy = annotate.comfy_name(inputs, annotate.repo_label(repo_id))
    if usage.diffusers_copy is not None:
        rows = [
            f"| `{lora}` | ComfyUI: the LoRA as diffusion-pipe saved it, its metadata added |",
            f"| `{diffusers_copy.copy_name(lora)}` | diffusers: the same LoRA, diffusers' names |",
        ]
    else:
        rows = [f"| `{lora}` | diffusers and ComfyUI: the LoRA, its metadata added |"]
    rows.append(f"| `{comfy}` | ComfyUI's `models/loras/`: `{lora}` under its own name |")
    table = "\n".join(rows)
    return f"""
**Base model: [{usage.base_model}](https://huggingface.co/{usage.base_model})**
({usage.pipeline_tag}, diffusers `{usage.pipeline_class}`). Load it with this base model only:
a LoRA trained for one {model.display_name} variant does not fit another.

| file | for |
|---|---|
{table}
"""


def model_card(inputs: PublishInputs, repo_id: str, *, private: bool | None = None) -> str:
    """README.md: Hub metadata in YAML front matter, then parameters, data and usage.

    `private`, when given, is the repo's real visibility (not the request's wish), and the card
    says so: a private repo's every download needs a token."""
    model, trigger, lora = inputs.model, inputs.spec.trigger_word, inputs.lora_name
    body = f"""
# {model.display_name} LoRA

Trained with [diffusion-pipe](https://github.com/tdrussell/diffusion-pipe) by
diffusion-pipe-serverless (job `{inputs.job_id}`), saved as `{lora}`
(`{inputs.training.get("final_save", "")}`, {inputs.training.get("epochs_completed")} epochs).
{f"Trigger word: `{trigger}`." if trigger else "No trigger word."}
{_visibility(private)}
{_base_and_files(inputs, repo_id)}
## Licence

{_licence(inputs)}

## Training parameters

| parameter | value |
|---|---|
{_parameters(inputs)}

The exact trainer configuration is in `config/`.

## Dataset

{_dataset(inputs)}

## How to use

{_usage(inputs, repo_id)}
"""
    return inputs.scrub(f"---\n{_front_matter(inputs)}\n---\n{body}")
