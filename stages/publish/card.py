"""The model card (`README.md` of the Hub repo): Hub metadata in YAML front matter, then the
licence, the training parameters, the dataset report and how to load the LoRA.

Every value comes from the job's `PublishSpec` and results; the card is scrubbed of the job's
secrets before it is published (the repo may be public).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from huggingface_hub import ModelCardData

from stages.publish.common import PublishInputs


def _pipeline_tag(inputs: PublishInputs) -> str:
    model = inputs.model
    if model.trains_images:
        return "text-to-image"
    return "image-to-video" if model.model_type.endswith("i2v") else "text-to-video"


def _value(value: Any) -> str:
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value)
    return str(value)


def _front_matter(inputs: PublishInputs) -> str:
    model, base, trigger = inputs.model, inputs.model.base_repo, inputs.spec.trigger_word
    meta: dict[str, Any] = {
        "tags": ["lora", model.diffusion_pipe_type, "diffusion-pipe", _pipeline_tag(inputs)],
        "pipeline_tag": _pipeline_tag(inputs),
        "library_name": "diffusers",
    }
    if base:
        meta |= {
            "base_model": base,
            "license": "other",
            "license_link": f"https://huggingface.co/{base}",
        }
    if trigger:
        meta["instance_prompt"] = trigger
    return str(ModelCardData(**meta).to_yaml())


def _licence(inputs: PublishInputs) -> str:
    base = inputs.model.base_repo
    if not base:
        return "A test LoRA for the tiny CPU model; no base model licence applies."
    return (
        f"This LoRA is derived from [{base}](https://huggingface.co/{base}); its use is subject "
        f"to the base model's licence ({inputs.model.licence or 'see the model page'})."
    )


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


def model_card(inputs: PublishInputs, repo_id: str) -> str:
    """README.md: Hub metadata in YAML front matter, then parameters, data and usage."""
    model, base, trigger = inputs.model, inputs.model.base_repo, inputs.spec.trigger_word
    lora = inputs.lora_name
    prompt = f"{trigger}, " if trigger else ""
    body = f"""
# {model.display_name} LoRA

Trained with [diffusion-pipe](https://github.com/tdrussell/diffusion-pipe) by
diffusion-pipe-serverless (job `{inputs.job_id}`), saved as `{lora}`
(`{inputs.training.get("final_save", "")}`, {inputs.training.get("epochs_completed")} epochs).
{f"Trigger word: `{trigger}`." if trigger else "No trigger word."}

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

### diffusers

```python
import torch
from diffusers import DiffusionPipeline

pipe = DiffusionPipeline.from_pretrained("{base or "<base model>"}", torch_dtype=torch.bfloat16)
pipe.to("cuda")
pipe.load_lora_weights("{repo_id}", weight_name="{lora}")
image = pipe("{prompt}a photo").images[0]
```

### ComfyUI

Download `{lora}` into `ComfyUI/models/loras/` and load it with a LoRA loader node
(`LoraLoaderModelOnly`) between the model loader and the sampler.
"""
    return inputs.scrub(f"---\n{_front_matter(inputs)}\n---\n{body}")
