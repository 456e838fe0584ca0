"""The verify step over what a publish sends: with upload_epochs "all" every saved epoch is
checked, and one bad epoch stops the publish before anything is sent."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from stages.publish.common import PublishInputs
from stages.publish.inputs import Destination
from stages.publish.verification import verify_published
from stages.verify.check import LoraRejected
from tests.support.card_inputs import card_inputs
from tests.support.family_loras import SAMPLES, base_files, lora_bytes

RANK = 4


def _job(tmp_path: Path, bad_epoch: int | None = None) -> tuple[PublishInputs, Path]:
    models = tmp_path / "models"
    for name, data in base_files("wan").items():
        path = models / "Wan" / "Wan2.1-T2V-1.3B" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    inputs = card_inputs(
        tmp_path / "volume",
        "wan13",
        destination=Destination(method="local", upload_epochs="all"),
        training_values={"lora_rank": RANK, "save_dtype": "bfloat16", "epochs": 2},
    )
    run = inputs.lora_path.parent.parent
    for epoch in (1, 2):
        folder = run / f"epoch{epoch}"
        folder.mkdir(parents=True, exist_ok=True)
        data = lora_bytes(SAMPLES["wan"], RANK, "BF16", nan=epoch == bad_epoch)
        (folder / inputs.lora_name).write_bytes(data)
    return inputs, models


def test_every_published_epoch_is_verified_once(tmp_path: Path) -> None:
    inputs, models = _job(tmp_path)
    seen: list[str] = []
    done = verify_published(inputs, models, lambda v: seen.append(v.file))
    # The final LoRA as published (epoch2's tensors, its metadata added) and epoch1; epoch2's
    # own file holds the same tensors as the final one and is not read twice.
    assert (
        seen
        == [v.file for v in done]
        == ["adapter_model.safetensors", "epochs/epoch1/adapter_model.safetensors"]
    )


@pytest.mark.parametrize("bad", [1, 2])
def test_one_diverged_epoch_stops_the_publish(tmp_path: Path, bad: int) -> None:
    inputs, models = _job(tmp_path, bad_epoch=bad)
    with pytest.raises(LoraRejected, match="NaN or Inf") as caught:
        verify_published(inputs, models)
    named = "adapter_model.safetensors" if bad == 2 else "epochs/epoch1/adapter_model.safetensors"
    assert f"the trained LoRA {named} failed its check" in str(caught.value)


def test_final_only_checks_the_final_lora(tmp_path: Path) -> None:
    inputs, models = _job(tmp_path, bad_epoch=1)  # epoch1 is bad but not published
    final = replace(inputs, spec=replace(inputs.spec, destination=Destination(method="local")))
    assert [v.file for v in verify_published(final, models)] == ["adapter_model.safetensors"]
