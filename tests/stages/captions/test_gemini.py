"""Gemini video captions: the real google-genai SDK against a loopback server (tests/fakegemini),
which answers as Gemini does: its 429 body, its 503, its 403s, its region refusal, a FAILED
file, an empty or cut answer, a 404 for another API version."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo

import pytest
from google import genai
from google.genai import types

from stages.captions.gemini import (
    KEY_REFUSED,
    MAX_UPLOAD_BYTES,
    GeminiDailyQuota,
    GeminiRegionRefused,
    GeminiSettings,
    VideoCaptionReport,
    _pacific_midnight_by_rule,
    caption_videos,
    make_client,
    next_pacific_midnight,
)
from stages.captions.text import caption_path
from stages.errors import CaptionError, GeminiBlocked, GeminiKeyRefused
from tests.support.fake_clock import FakeClock
from tests.support.fakegemini import (
    PER_DAY,
    PER_MINUTE,
    FakeGemini,
    Recorded,
    location_unsupported,
    quota_exceeded,
)

KEY = "AIzaTESTKEY-0123456789abcdefghijklmnop"


@pytest.fixture
def fake() -> Iterator[FakeGemini]:
    with FakeGemini(api_key=KEY) as server:
        yield server


def _caption(
    fake: FakeGemini, videos: list[Path], clock: FakeClock | SimClock, **kw: object
) -> VideoCaptionReport:
    """`caption_videos` against the fake with `_settings(fake, **kw)`, on a simulated clock."""
    return caption_videos(
        videos, api_key=KEY, settings=_settings(fake, **kw), sleep=clock.sleep, clock=clock
    )


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


class SimClock:
    """Simulated seconds shared by `workers` threads: `sleep` blocks the caller until the clock
    reaches its wake time, and the clock jumps to the earliest wake time only once every worker
    still captioning is asleep (one doing HTTP holds it still). So a worker that does not wait
    sends its requests at the time it had, where the test sees them."""

    def __init__(self, workers: int) -> None:
        self.now = 0.0
        self.workers = workers
        self.slept: list[float] = []
        self.asleep = threading.Event()  # some worker has started a wait
        self._wakes: list[float] = []
        self._cond = threading.Condition()

    def __call__(self) -> float:
        with self._cond:
            return self.now

    def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            return
        with self._cond:
            self.slept.append(seconds)
            wake = self.now + seconds
            self._wakes.append(wake)
            self.asleep.set()
            self._advance()
            while self.now < wake:
                if not self._cond.wait(timeout=10):
                    self.now = max(self.now, wake)  # never hang: the asserts tell what went wrong
            self._wakes.remove(wake)

    def leave(self) -> None:
        """A worker is done with its video: it will not sleep again."""
        with self._cond:
            self.workers -= 1
            self._advance()

    def _advance(self) -> None:
        if self._wakes and len(self._wakes) >= self.workers:
            self.now = max(self.now, min(self._wakes))
            self._cond.notify_all()


def _generate_bodies(fake: FakeGemini) -> list[dict[str, Any]]:
    return [r.json() for r in fake.calls("generate")]


# --- the happy path ------------------------------------------------------------------------


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


def test_the_default_model_is_pinned(fake: FakeGemini, tmp_path: Path) -> None:
    assert GeminiSettings().model == "gemini-2.5-flash"  # not an alias that moves under us
    caption_videos(_videos(tmp_path, 1), api_key=KEY, settings=_settings(fake))
    (call,) = fake.calls("generate")
    assert call.path == "/v1beta/models/gemini-2.5-flash:generateContent"


def test_every_call_names_api_version_v1beta(fake: FakeGemini, tmp_path: Path) -> None:
    caption_videos(_videos(tmp_path, 1), api_key=KEY, settings=_settings(fake))
    assert {r.op for r in fake.requests} == {
        "upload_start",
        "upload_chunk",
        "get",
        "generate",
        "delete",
    }
    for r in fake.requests:
        assert r.path.startswith(("/v1beta/", "/upload/v1beta/")), r.path
    assert all(r.status == 200 for r in fake.requests)


def test_a_client_on_another_api_version_gets_googles_404(fake: FakeGemini, tmp_path: Path) -> None:
    # The SDK's default version (v1 in google-genai 3.6): Google serves no Files API there.
    client = genai.Client(api_key=KEY, http_options=types.HttpOptions(base_url=fake.base_url))
    with pytest.raises(CaptionError, match=r"upload failed for clip0\.mp4 .*: 404") as info:
        caption_videos(_videos(tmp_path, 1), api_key=KEY, settings=_settings(fake), client=client)
    assert "HTML error page" in str(info.value)  # the page itself is not repeated
    assert "<html" not in str(info.value)
    (call,) = fake.requests
    assert call.path == "/upload/v1/files"
    assert call.status == 404


def test_existing_captions_are_kept(fake: FakeGemini, tmp_path: Path) -> None:
    videos = _videos(tmp_path, 2)
    caption_path(videos[0]).write_text("mine\n")
    report = caption_videos(videos, api_key=KEY, settings=_settings(fake))
    assert report.skipped_existing == [videos[0]]
    assert report.captioned == [videos[1]]
    assert caption_path(videos[0]).read_text() == "mine\n"
    assert len(fake.calls("upload_start")) == 1


# --- the clip as a clip ----------------------------------------------------------------------


def test_the_clip_is_sampled_at_5_fps_in_low_resolution(fake: FakeGemini, tmp_path: Path) -> None:
    caption_videos(_videos(tmp_path, 1), api_key=KEY, settings=_settings(fake))
    (body,) = _generate_bodies(fake)
    # The REST JSON the SDK sends: camelCase keys, the enum's name, fps a float.
    (content,) = body["contents"]
    clip, prompt = content["parts"]
    assert clip["videoMetadata"] == {"fps": 5.0}
    assert clip["fileData"]["mime_type"] == "video/mp4"
    assert "camera movement" in prompt["text"]
    assert body["generationConfig"] == {"mediaResolution": "MEDIA_RESOLUTION_LOW"}


def test_fps_and_media_resolution_are_settings(fake: FakeGemini, tmp_path: Path) -> None:
    settings = _settings(fake, video_fps=2.5, media_resolution="MEDIA_RESOLUTION_MEDIUM")
    caption_videos(_videos(tmp_path, 1), api_key=KEY, settings=settings)
    (body,) = _generate_bodies(fake)
    assert body["contents"][0]["parts"][0]["videoMetadata"] == {"fps": 2.5}
    assert body["generationConfig"] == {"mediaResolution": "MEDIA_RESOLUTION_MEDIUM"}


@pytest.mark.parametrize("fps", [0.0, -1.0, 24.5])
def test_an_fps_gemini_refuses_is_refused_here(fps: float) -> None:
    with pytest.raises(ValueError, match=r"video_fps must be in \(0, 24\]"):
        GeminiSettings(video_fps=fps)


def test_a_file_over_the_file_api_limit_is_refused_before_any_upload(
    fake: FakeGemini, tmp_path: Path
) -> None:
    videos = _videos(tmp_path, 2)
    big = tmp_path / "long take.mov"
    with big.open("wb") as fh:
        fh.truncate(MAX_UPLOAD_BYTES + 1)  # sparse: nothing is written
    with pytest.raises(CaptionError) as info:
        caption_videos([*videos, big], api_key=KEY, settings=_settings(fake))
    message = str(info.value)
    assert "long take.mov" in message
    assert f"{MAX_UPLOAD_BYTES + 1} bytes" in message
    assert "2.00 GiB" in message
    assert fake.requests == []  # refused before anything went out, the other videos included


@pytest.mark.parametrize("how", ["reset", "close"])
def test_a_connection_lost_mid_upload_starts_a_new_upload(
    fake: FakeGemini, tmp_path: Path, how: Literal["reset", "close"]
) -> None:
    (video,) = _videos(tmp_path, 1)
    fake.drop("upload_chunk", times=2, how=how)
    clock = FakeClock()
    report = _caption(fake, [video], clock)
    assert report.captioned == [video]
    starts, chunks = fake.calls("upload_start"), fake.calls("upload_chunk")
    assert len(starts) == 3
    assert [c.status for c in chunks] == [0, 0, 200]  # two got no answer at all
    sessions = [c.path.rsplit("/", 1)[-1] for c in chunks]
    assert len(set(sessions)) == 3  # each retry is a new upload session, not the dead one
    done = [f for f in fake.files.values() if f.uploaded]
    assert len(done) == 1
    assert done[0].data == video.read_bytes()
    assert caption_path(video).read_text().startswith(f"A clip clip0.mp4 of {len(done[0].data)}")
    assert len(clock.waits) == 2


def test_the_client_is_closed_when_captioning_ends(fake: FakeGemini, tmp_path: Path) -> None:
    settings = _settings(fake)
    client = make_client(KEY, settings)
    caption_videos(_videos(tmp_path, 1), api_key=KEY, settings=settings, client=client)
    with pytest.raises(RuntimeError, match="closed"):
        client.models.get(model="gemini-2.5-flash")


def test_the_client_is_closed_after_a_failure(fake: FakeGemini, tmp_path: Path) -> None:
    settings = _settings(fake)
    client = make_client(KEY, settings)
    fake.fail("generate", 400)
    with pytest.raises(CaptionError):
        caption_videos(_videos(tmp_path, 1), api_key=KEY, settings=settings, client=client)
    with pytest.raises(RuntimeError, match="closed"):
        client.models.get(model="gemini-2.5-flash")


# --- retries ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "body", "retry_after", "waited"),
    [
        (429, quota_exceeded(retry_delay="7s"), None, 7.0),
        (429, quota_exceeded(retry_delay=None), "7", 7.0),  # Retry-After, the fallback
        (500, None, None, None),
        (503, None, None, None),  # "The model is overloaded."
    ],
    ids=["429-retry-info", "429-retry-after", "500", "503-overloaded"],
)
def test_a_transient_error_is_retried(
    fake: FakeGemini,
    tmp_path: Path,
    status: int,
    body: dict[str, object] | None,
    retry_after: str | None,
    waited: float | None,
) -> None:
    videos = _videos(tmp_path, 1)
    fake.fail("generate", status, body=body, retry_after=retry_after)
    clock = FakeClock()
    report = _caption(fake, videos, clock)
    assert report.captioned == videos
    assert [r.status for r in fake.calls("generate")] == [status, 200]
    assert len(clock.waits) == 1
    if waited is not None:
        assert clock.waits == [waited]
    assert fake.deleted == list(fake.files)


@pytest.mark.parametrize("delay", ["37s", "37.5s", "59s"])
def test_a_429_waits_the_retry_delay_of_its_body(
    fake: FakeGemini, tmp_path: Path, delay: str
) -> None:
    # Gemini puts the wait in error.details (RetryInfo), not in a Retry-After header; a wait
    # for a per-minute quota is honoured whole, beyond our own backoff's bound.
    fake.fail("generate", 429, body=quota_exceeded(quota_id=PER_MINUTE, retry_delay=delay))
    clock = FakeClock()
    _caption(fake, _videos(tmp_path, 1), clock, backoff_max_s=5.0)
    first, second = fake.calls("generate")
    assert first.status == 429
    assert second.status == 200
    assert clock.waits == [float(delay.removesuffix("s"))]


def test_requests_wait_for_the_retry_delay_on_the_simulated_clock(tmp_path: Path) -> None:
    clock = FakeClock()
    with FakeGemini(api_key=KEY, clock=clock) as fake:
        fake.fail("generate", 429, body=quota_exceeded(retry_delay="37.5s"))
        _caption(fake, _videos(tmp_path, 1), clock)
    refused = next(i for i, r in enumerate(fake.requests) if r.status == 429)
    assert all(r.at == 0.0 for r in fake.requests[: refused + 1])
    assert all(r.at >= 37.5 for r in fake.requests[refused + 1 :])


def test_workers_share_the_wait_of_a_429(tmp_path: Path) -> None:
    """Two videos, two workers, one 429 with retryDelay 12s: neither worker sends a request
    before 12 s have passed. The fake holds both workers' generateContent requests until both
    have arrived (so neither is mid-call elsewhere), answers the first with the 429, and lets
    the other's answer go once the first worker is waiting."""
    clock = SimClock(workers=2)
    generates: list[Recorded] = []
    both_arrived = threading.Event()
    lock = threading.Lock()

    def hold(r: Recorded) -> None:
        if r.op != "generate":
            return
        with lock:
            generates.append(r)
            arrived = len(generates)
        if arrived == 1:
            both_arrived.wait(10)
        elif arrived == 2:
            both_arrived.set()
            clock.asleep.wait(10)

    done = [0]

    def progress(finished: int, total: int) -> None:
        while done[0] < finished:
            done[0] += 1
            clock.leave()

    with FakeGemini(api_key=KEY, clock=clock, hold=hold) as fake:
        fake.fail("generate", 429, body=quota_exceeded(retry_delay="12s"))
        report = caption_videos(
            _videos(tmp_path, 2),
            api_key=KEY,
            settings=_settings(fake, concurrency=2),
            progress=progress,
            sleep=clock.sleep,
            clock=clock,
        )
    assert len(report.captioned) == 2
    second = fake.requests.index(generates[1])
    assert [r.status for r in generates[:2]] == [429, 200]
    after = fake.requests[second + 1 :]
    assert {r.op for r in after} == {"generate", "delete"}  # the retry, both deletes
    assert [r.at for r in after if r.at < 12.0] == []
    assert clock.slept == [12.0, 12.0]  # each worker waited once, for the same 12 s
    assert clock.now == 12.0  # together, not one after the other


def test_a_wait_longer_than_the_bound_fails_naming_the_quota(
    fake: FakeGemini, tmp_path: Path
) -> None:
    fake.fail("generate", 429, body=quota_exceeded(retry_delay="3600s"))
    clock = FakeClock()
    with pytest.raises(CaptionError, match=r"asks to wait 3600s \(quota " + PER_MINUTE):
        _caption(fake, _videos(tmp_path, 1), clock)
    assert clock.waits == []
    assert len(fake.calls("generate")) == 1


def _both_quotas() -> dict[str, object]:
    # One 429 can list the minute's and the day's quota together (seen from Google).
    body = quota_exceeded(quota_id=PER_MINUTE, retry_delay="47s")
    day = quota_exceeded(quota_id=PER_DAY, retry_delay=None, limit=250)
    minute_violations = body["error"]["details"][0]["violations"]
    minute_violations.append(day["error"]["details"][0]["violations"][0])
    return body


@pytest.mark.parametrize(
    "body",
    [quota_exceeded(quota_id=PER_DAY, retry_delay="13s", limit=250), _both_quotas()],
    ids=["per-day", "per-day-beside-per-minute"],
)
def test_a_daily_quota_fails_at_once_saying_when_it_resets(
    fake: FakeGemini, tmp_path: Path, body: dict[str, object]
) -> None:
    videos = _videos(tmp_path, 3)
    fake.fail("generate", 429, body=body)
    clock = FakeClock()
    with pytest.raises(GeminiDailyQuota) as info:
        caption_videos(
            videos,
            api_key=KEY,
            settings=_settings(fake, concurrency=1),
            sleep=clock.sleep,
            clock=clock,
            now=lambda: datetime(2025, 1, 15, 20, 0, tzinfo=UTC),  # 12:00 PST
        )
    message = str(info.value)
    assert PER_DAY in message
    assert "gemini-2.5-flash" in message
    assert "250 requests" in message
    assert "2025-01-16 00:00 PST" in message
    assert "(2025-01-16 08:00 UTC, in 12.0 h)" in message
    assert info.value.resets_at == datetime(2025, 1, 16, 8, 0, tzinfo=UTC)
    assert clock.waits == []  # no retries
    assert len(fake.calls("generate")) == 1
    assert len(fake.calls("upload_start")) == 1  # the other videos never started
    assert fake.deleted == list(fake.files)
    assert KEY not in message


@pytest.mark.parametrize(
    ("now", "reset"),
    [
        ("2025-01-15T20:00:00+00:00", "2025-01-16T00:00:00-08:00"),
        ("2025-01-16T07:59:59+00:00", "2025-01-16T00:00:00-08:00"),  # 23:59:59 PST
        ("2025-01-16T08:00:00+00:00", "2025-01-17T00:00:00-08:00"),  # midnight: the next one
        ("2025-03-09T09:30:00+00:00", "2025-03-10T00:00:00-07:00"),  # 01:30 PST, DST at 02:00
        ("2025-03-08T12:00:00+00:00", "2025-03-09T00:00:00-08:00"),  # that day begins in PST
        ("2025-07-04T06:59:00+00:00", "2025-07-04T00:00:00-07:00"),  # 23:59 PDT on the 3rd
        ("2025-11-02T07:30:00+00:00", "2025-11-03T00:00:00-08:00"),  # 00:30 PDT, PST at 02:00
        ("2025-12-31T23:00:00+00:00", "2026-01-01T00:00:00-08:00"),
    ],
)
def test_the_daily_reset_is_the_next_midnight_in_los_angeles(now: str, reset: str) -> None:
    at = datetime.fromisoformat(now)
    want = datetime.fromisoformat(reset)
    got = next_pacific_midnight(at)
    assert got == want
    assert got.utcoffset() == want.utcoffset()
    fallback = _pacific_midnight_by_rule(at)  # for an image without tzdata
    assert fallback == want
    assert fallback.utcoffset() == want.utcoffset()


def test_the_fallback_rule_matches_the_time_zone_database() -> None:
    zone = ZoneInfo("America/Los_Angeles")
    at = datetime(2024, 1, 1, tzinfo=UTC)
    while at < datetime(2027, 1, 1, tzinfo=UTC):
        got = _pacific_midnight_by_rule(at)
        want = next_pacific_midnight(at)
        assert got == want, at
        assert got.utcoffset() == want.astimezone(zone).utcoffset(), at
        at += timedelta(minutes=97)  # lands on every hour of the day over the years


def test_retries_are_bounded(fake: FakeGemini, tmp_path: Path) -> None:
    videos = _videos(tmp_path, 1)
    fake.fail("upload_start", 503, times=10)
    with pytest.raises(CaptionError) as info:
        caption_videos(
            videos, api_key=KEY, settings=_settings(fake, max_attempts=3), sleep=lambda s: None
        )
    assert str(info.value) == (
        "Gemini upload failed for clip0.mp4 after 3 attempt(s): 503 UNAVAILABLE: The model is "
        "overloaded. Please try again later."
    )
    assert len(fake.calls("upload_start")) == 3
    assert not caption_path(videos[0]).exists()


# --- answers that are not captions -----------------------------------------------------------


def test_an_empty_answer_is_retried(fake: FakeGemini, tmp_path: Path) -> None:
    (video,) = _videos(tmp_path, 1)
    fake.answer("clip0.mp4", finish="STOP", text="", times=2)
    clock = FakeClock()
    report = _caption(fake, [video], clock)
    assert report.captioned == [video]
    assert report.blocked == {}
    assert len(fake.calls("generate")) == 3
    assert caption_path(video).read_text().startswith("A clip clip0.mp4")
    assert len(clock.waits) == 2


def test_an_answer_that_stays_empty_fails_naming_the_file(fake: FakeGemini, tmp_path: Path) -> None:
    (video,) = _videos(tmp_path, 1)
    fake.answer("clip0.mp4", finish="STOP", text="", times=3)
    with pytest.raises(CaptionError) as info:
        caption_videos(
            [video], api_key=KEY, settings=_settings(fake, max_attempts=3), sleep=lambda s: None
        )
    assert not isinstance(info.value, GeminiBlocked)
    assert str(info.value) == (
        "Gemini gave no usable caption for clip0.mp4 after 3 attempt(s): an empty answer "
        "(finish reason STOP)"
    )


@pytest.mark.parametrize("finish", ["MAX_TOKENS", "RECITATION", "OTHER", "LANGUAGE"])
def test_a_cut_answer_is_never_saved(fake: FakeGemini, tmp_path: Path, finish: str) -> None:
    (video,) = _videos(tmp_path, 1)
    fake.answer("clip0.mp4", finish=finish, text="A woman walks along a", times=3)
    with pytest.raises(CaptionError) as info:
        caption_videos(
            [video],
            api_key=KEY,
            settings=_settings(fake, max_attempts=3, on_blocked="skip"),
            sleep=lambda s: None,
        )
    assert not isinstance(info.value, GeminiBlocked)  # not a block: on_blocked does not apply
    assert str(info.value) == (
        f"Gemini gave no usable caption for clip0.mp4 after 3 attempt(s): finish reason "
        f"{finish} with partial text"
    )
    assert not caption_path(video).exists()
    assert len(fake.calls("generate")) == 3


def test_a_cut_answer_is_retried_until_a_whole_one(fake: FakeGemini, tmp_path: Path) -> None:
    (video,) = _videos(tmp_path, 1)
    fake.answer("clip0.mp4", finish="MAX_TOKENS", text="A woman walks along a")
    report = caption_videos([video], api_key=KEY, settings=_settings(fake), sleep=lambda s: None)
    assert report.captioned == [video]
    assert caption_path(video).read_text().startswith("A clip clip0.mp4")


@pytest.mark.parametrize(
    "finish", ["SAFETY", "PROHIBITED_CONTENT", "BLOCKLIST", "SPII", "IMAGE_SAFETY"]
)
def test_a_safety_finish_is_a_block_even_with_partial_text(
    fake: FakeGemini, tmp_path: Path, finish: str
) -> None:
    videos = _videos(tmp_path, 2)
    fake.answer("clip0.mp4", finish=finish, text="A woman in a")
    report = caption_videos(
        videos, api_key=KEY, settings=_settings(fake, on_blocked="skip"), sleep=lambda s: None
    )
    assert report.blocked == {"clip0.mp4": finish}
    assert report.captioned == [videos[1]]
    assert not caption_path(videos[0]).exists()
    assert len([r for r in fake.calls("generate")]) == 2  # a block is not retried


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


def test_a_file_gemini_could_not_process_fails_naming_it(fake: FakeGemini, tmp_path: Path) -> None:
    (video,) = _videos(tmp_path, 1)
    fake.failed_processing["clip0.mp4"] = "Video file is corrupted or has an unsupported codec."
    with pytest.raises(CaptionError) as info:
        caption_videos([video], api_key=KEY, settings=_settings(fake), sleep=lambda s: None)
    assert str(info.value) == (
        "Gemini could not process clip0.mp4: Video file is corrupted or has an unsupported codec."
    )
    assert len(fake.calls("upload_start")) == 1  # not uploaded again
    assert fake.calls("generate") == []
    assert fake.deleted == list(fake.files)


# --- refusals no retry changes ---------------------------------------------------------------


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


@pytest.mark.parametrize(
    ("reason", "shown"),
    [
        (None, "403 PERMISSION_DENIED: Your API key was reported as leaked"),
        ("API_KEY_SERVICE_BLOCKED", "API_KEY_SERVICE_BLOCKED"),
        ("SERVICE_DISABLED", "SERVICE_DISABLED"),
    ],
    ids=["leaked", "restricted", "api-disabled"],
)
def test_a_denied_key_is_a_refused_key(
    fake: FakeGemini, tmp_path: Path, reason: str | None, shown: str
) -> None:
    denied = "AIzaLEAKED-key-00000000000000000000000"
    fake.denied_keys[denied] = reason
    with pytest.raises(GeminiKeyRefused) as info:
        caption_videos(
            _videos(tmp_path, 2),
            api_key=denied,
            settings=_settings(fake, concurrency=1),
            sleep=lambda s: None,
        )
    assert str(info.value).startswith(f"{KEY_REFUSED} ({shown}")
    assert denied not in str(info.value)
    assert len(fake.calls("upload_start")) == 1


def test_a_region_gemini_does_not_serve_fails_at_once(fake: FakeGemini, tmp_path: Path) -> None:
    fake.fail("upload_start", 400, body=location_unsupported(), times=5)
    clock = FakeClock()
    with pytest.raises(GeminiRegionRefused) as info:
        _caption(fake, _videos(tmp_path, 3), clock, concurrency=1)
    message = str(info.value)
    assert "the region this worker calls from" in message
    assert "User location is not supported for the API use." in message
    assert "dataset.type precaptioned" in message
    assert len(fake.calls("upload_start")) == 1  # not retried, the other videos never started
    assert clock.waits == []


def test_the_key_never_appears_in_errors_or_logs(
    fake: FakeGemini, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    videos = _videos(tmp_path, 1)
    fake.fail("generate", 429, times=1)
    fake.fail("generate", 400, times=1)
    clock = FakeClock()
    with caplog.at_level(logging.DEBUG), pytest.raises(CaptionError) as info:
        _caption(fake, videos, clock)
    assert "generateContent failed for clip0.mp4" in str(info.value)
    assert KEY not in str(info.value)
    assert KEY not in caplog.text
    assert "429" in caplog.text  # the retry was logged
    assert fake.deleted == list(fake.files)  # deleted even when captioning failed
