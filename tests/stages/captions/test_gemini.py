"""Gemini video captions: the real google-genai SDK against a loopback server (tests/fakegemini)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from stages.captions.gemini import KEY_REFUSED, GeminiSettings, caption_videos
from stages.captions.text import caption_path
from stages.errors import CaptionError, GeminiBlocked, GeminiKeyRefused
from tests.support.fakegemini import FakeGemini

KEY = "AIzaTESTKEY-0123456789abcdefghijklmnop"


@pytest.fixture
def fake() -> Iterator[FakeGemini]:
    with FakeGemini(api_key=KEY) as server:
        yield server


def _settings(fake: FakeGemini, **kw: object) -> GeminiSettings:
    base: dict[str, object] = {
        "base_url": fake.base_url,
        "poll_interval_s": 0.0,
        "backoff_initial_s": 0.01,
        "request_timeout_s": 10.0,
    }
    return GeminiSettings(**{**base, **kw})  # type: ignore[arg-type]


def _videos(folder: Path, n: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"clip{i}.mp4"
        path.write_bytes(bytes([i]) * (1000 + 37 * i))
        paths.append(path)
    return paths


def test_every_video_is_captioned_from_the_whole_clip(fake: FakeGemini, tmp_path: Path) -> None:
    videos = _videos(tmp_path, 3)
    seen: list[tuple[int, int]] = []
    report = caption_videos(
        videos,
        api_key=KEY,
        trigger="ohwx",
        settings=_settings(fake, model="gemini-test-model"),
        progress=lambda d, t: seen.append((d, t)),
    )
    assert report.captioned == videos
    for video in videos:
        expected = FakeGemini.caption_for(video.name, video.read_bytes())
        # One line, the trigger once, the whole file's bytes went up.
        assert caption_path(video).read_text() == f"ohwx, {expected} It moves.\n"
    assert seen[0] == (0, 3)
    assert seen[-1] == (3, 3)
    assert fake.models_used == ["gemini-test-model"] * 3
    # Uploaded files are deleted afterwards; the key travels in the header, never the URL.
    assert sorted(fake.deleted) == sorted(fake.files)
    assert len(fake.files) == 3
    keyed = [r for r in fake.requests if "/sessions/" not in r.path]  # bytes go to a session URL
    assert all(r.headers["x-goog-api-key"] == KEY for r in keyed)
    assert all(KEY not in r.path for r in fake.requests)
    assert len(fake.calls("get")) >= 3  # polled until ACTIVE


def test_existing_captions_are_kept(fake: FakeGemini, tmp_path: Path) -> None:
    videos = _videos(tmp_path, 2)
    caption_path(videos[0]).write_text("mine\n")
    report = caption_videos(videos, api_key=KEY, settings=_settings(fake))
    assert report.skipped_existing == [videos[0]]
    assert report.captioned == [videos[1]]
    assert caption_path(videos[0]).read_text() == "mine\n"
    assert len(fake.calls("upload_start")) == 1


@pytest.mark.parametrize(("status", "retry_after"), [(429, "7"), (500, None), (503, None)])
def test_a_transient_error_is_retried(
    fake: FakeGemini, tmp_path: Path, status: int, retry_after: str | None
) -> None:
    videos = _videos(tmp_path, 1)
    fake.fail("generate", status, retry_after=retry_after)
    slept: list[float] = []
    report = caption_videos(
        videos, api_key=KEY, settings=_settings(fake, backoff_max_s=30.0), sleep=slept.append
    )
    assert report.captioned == videos
    assert [r.status for r in fake.calls("generate")] == [status, 200]
    retries = [s for s in slept if s > 0]  # polls sleep 0 here
    assert len(retries) == 1
    if retry_after is not None:
        assert retries == [7.0]  # Retry-After honoured
    assert fake.deleted == list(fake.files)


def test_retries_are_bounded(fake: FakeGemini, tmp_path: Path) -> None:
    videos = _videos(tmp_path, 1)
    fake.fail("upload_start", 503, times=10)
    with pytest.raises(CaptionError, match=r"upload failed for clip0.mp4 after 3 attempt"):
        caption_videos(
            videos, api_key=KEY, settings=_settings(fake, max_attempts=3), sleep=lambda s: None
        )
    assert len(fake.calls("upload_start")) == 3
    assert not caption_path(videos[0]).exists()


def test_a_safety_block_fails_naming_the_file_after_the_others(
    fake: FakeGemini, tmp_path: Path
) -> None:
    videos = _videos(tmp_path, 3)
    fake.blocked["clip1.mp4"] = "PROHIBITED_CONTENT"
    with pytest.raises(GeminiBlocked, match=r"clip1\.mp4 \(PROHIBITED_CONTENT\)") as info:
        caption_videos(videos, api_key=KEY, settings=_settings(fake))
    assert info.value.blocked == {"clip1.mp4": "PROHIBITED_CONTENT"}
    assert caption_path(videos[0]).exists()
    assert caption_path(videos[2]).exists()
    assert not caption_path(videos[1]).exists()
    assert sorted(fake.deleted) == sorted(fake.files)


def test_a_safety_block_can_leave_the_video_uncaptioned(
    fake: FakeGemini, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    videos = _videos(tmp_path, 2)
    fake.blocked["clip0.mp4"] = "SAFETY"
    with caplog.at_level(logging.WARNING):
        report = caption_videos(videos, api_key=KEY, settings=_settings(fake, on_blocked="skip"))
    assert report.blocked == {"clip0.mp4": "SAFETY"}
    assert report.captioned == [videos[1]]
    assert "clip0.mp4" in caplog.text
    assert "SAFETY" in caplog.text


def test_a_bad_key_is_named_and_never_shown(
    fake: FakeGemini, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    videos = _videos(tmp_path, 3)
    bad = "AIzaWRONG-KEY-abcdefghijklmnopqrstuvw"
    with caplog.at_level(logging.DEBUG), pytest.raises(GeminiKeyRefused) as info:
        caption_videos(videos, api_key=bad, settings=_settings(fake, concurrency=1))
    assert KEY_REFUSED in str(info.value)
    assert "API_KEY_INVALID" in str(info.value)
    assert bad not in str(info.value)
    assert bad not in repr(info.value)
    assert info.value.__cause__ is None
    assert bad not in caplog.text
    assert len(fake.calls("upload_start")) == 1  # stopped at once, no retries, no other videos
    assert not any(caption_path(v).exists() for v in videos)


def test_the_key_never_appears_in_errors_or_logs(
    fake: FakeGemini, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    videos = _videos(tmp_path, 1)
    fake.fail("generate", 429, times=1)
    fake.fail("generate", 400, times=1)
    with caplog.at_level(logging.DEBUG), pytest.raises(CaptionError) as info:
        caption_videos(videos, api_key=KEY, settings=_settings(fake), sleep=lambda s: None)
    assert "generateContent failed for clip0.mp4" in str(info.value)
    assert KEY not in str(info.value)
    assert KEY not in caplog.text
    assert "429" in caplog.text  # the retry was logged
    assert fake.deleted == list(fake.files)  # deleted even when captioning failed
