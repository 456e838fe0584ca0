"""The Gemini key check: the real google-genai client against the loopback Gemini, which answers
`models.get` and a bad key as Google does (400 API_KEY_INVALID, 403 PERMISSION_DENIED)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pydantic import SecretStr

from stages.access.gemini import check_gemini
from stages.access.inputs import Bounds, GeminiTarget
from stages.access.retry import Checked, Transient
from stages.captions.gemini import DEFAULT_MODEL, GeminiSettings
from stages.errors import StageFailed
from tests.support.fakegemini import FakeGemini

KEY = "AIzaACCESSCHECK-0123456789abcdefghijklm"
FAST = Bounds(waits_s=(0.0,))


@pytest.fixture
def fake() -> Iterator[FakeGemini]:
    with FakeGemini(api_key=KEY) as server:
        yield server


def _check(fake: FakeGemini, key: str = KEY, sleeps: list[float] | None = None) -> Checked:
    target = GeminiTarget(SecretStr(key), GeminiSettings(base_url=fake.base_url))
    sleep = (sleeps if sleeps is not None else []).append
    return check_gemini(target, FAST, sleep=sleep, clock=lambda: 0.0)


def test_a_good_key_passes_with_one_call(fake: FakeGemini) -> None:
    got = _check(fake)
    assert got.facts == {"model": DEFAULT_MODEL}
    assert got.warnings == []
    (call,) = fake.calls("model")
    assert call.path.endswith(f"/models/{DEFAULT_MODEL}")
    assert call.headers["x-goog-api-key"] == KEY  # in a header, never in the URL


def test_an_invalid_key_fails_naming_the_field(fake: FakeGemini) -> None:
    with pytest.raises(StageFailed) as info:
        _check(fake, key="AIzaWRONG-key-000000000000000000000")
    message = str(info.value)
    assert message.startswith(
        "api_keys.gemini_api_key: Gemini refused this key (400 INVALID_ARGUMENT"
    )
    assert "API_KEY_INVALID" in message
    assert "AIzaWRONG" not in message


@pytest.mark.parametrize("reason", [None, "API_KEY_SERVICE_BLOCKED"])
def test_a_denied_key_fails_naming_the_field(fake: FakeGemini, reason: str | None) -> None:
    denied = "AIzaLEAKED-key-00000000000000000000000"
    fake.denied_keys[denied] = reason
    with pytest.raises(StageFailed, match=r"^api_keys\.gemini_api_key: .*403 PERMISSION_DENIED"):
        _check(fake, key=denied)


def test_transient_answers_are_tried_again(fake: FakeGemini) -> None:
    fake.fail("model", 503, times=2)
    sleeps: list[float] = []
    assert _check(fake, sleeps=sleeps).warnings == []
    assert len(fake.calls("model")) == 3
    assert len(sleeps) == 2


def test_a_gemini_that_keeps_failing_is_transient(fake: FakeGemini) -> None:
    fake.fail("model", 429, times=10)
    with pytest.raises(Transient, match="429 RESOURCE_EXHAUSTED"):
        _check(fake)


def test_a_model_gemini_does_not_know_is_a_warning(fake: FakeGemini) -> None:
    fake.models = {"gemini-some-other"}
    (warning,) = _check(fake).warnings
    assert warning.startswith("api_keys.gemini_api_key: the key was not refused")
    assert "404 NOT_FOUND" in warning
