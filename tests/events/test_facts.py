"""Each fact's typed payload: what it refuses, and that what it stores is exactly what was given."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from events.facts import PAYLOADS, Checkpoint, EpochSaved, FactData, Progress, payload_of
from events.store import EventStore
from events.vocabulary import Fact
from orchestrator.machine import JobMachine


def test_every_fact_has_a_payload_model() -> None:
    assert set(PAYLOADS) == set(Fact)
    for fact, model in PAYLOADS.items():
        assert model.fact is fact


def test_the_stored_data_is_the_given_keys_with_their_types() -> None:
    sample = Progress(step=3, loss=None, percent=50, message="training", clips=2)
    assert sample.data() == {
        "step": 3,
        "loss": None,
        "percent": 50,
        "message": "training",
        "clips": 2,
    }
    assert isinstance(sample.data()["percent"], int)  # a number is not turned into 50.0
    assert Progress(note="kept").data() == {"note": "kept"}  # unknown keys stay readable
    assert EpochSaved(name="epoch2", step=8).data() == {"name": "epoch2", "step": 8}


@pytest.mark.parametrize(
    ("model", "fields"),
    [
        (Checkpoint, {"tag": "global_step4"}),  # step missing
        (Checkpoint, {"tag": "global_step4", "step": "four"}),
        (Progress, {"step": "3"}),  # strict: a string is not a step
        (Progress, {"percent": True}),
        (EpochSaved, {"name": 2, "step": 1}),
    ],
)
def test_a_malformed_payload_is_refused_before_it_is_recorded(
    model: type[FactData], fields: dict[str, Any]
) -> None:
    with pytest.raises(ValidationError):
        model(**fields)


def test_a_recorded_fact_reads_back_into_its_model() -> None:
    machine = JobMachine(EventStore.in_memory().open("job"))
    for status in ("INITIALIZED", "STARTING", "DOWNLOADING", "MODEL_DOWNLOAD", "TRAINING"):
        machine.fire(status)
    event = machine.record(Checkpoint(tag="global_step4", step=4))
    assert (event.type, event.status, event.data) == (
        "CHECKPOINT",
        "TRAINING",
        {"step": 4, "tag": "global_step4"},
    )
    payload = payload_of(event)
    assert isinstance(payload, Checkpoint)
    assert (payload.tag, payload.step) == ("global_step4", 4)
    assert payload_of(machine.log.events[0]) is None  # a status change carries no payload
    assert isinstance(payload, FactData)
