"""Video captions with Gemini through the current `google-genai` SDK.

Per video without a caption: upload the whole clip with the File API (v1beta, where Google
documents it; files over the API's 2 GB limit are refused before anything is sent), poll until
it is ACTIVE (bounded), ask the model for one training caption with the uploaded file as a part
(the clip, not sampled frames: the old ports captioned a single frame), write it atomically with
the trigger word in front, and delete the upload. The clip is sampled at `video_fps` frames a
second (Gemini's default, 1, gives a 4 s clip 4 frames, too few to see motion or a camera move)
at `media_resolution` LOW, which keeps the tokens of 5 frames a second near those of the
default 1 frame a second at the default resolution. The client is closed when captioning ends.

Retries: 5xx answers, connection timeouts and resets (also mid-upload: a retried upload starts a
new upload session), an empty answer (finish reason STOP without text, a known transient) and a
cut or unusable answer (MAX_TOKENS, RECITATION, OTHER, ...: never saved as a caption) are tried
again with exponential backoff, up to `max_attempts` per call. A 429 carries its wait in the
JSON body (`google.rpc.RetryInfo.retryDelay`, Retry-After is the fallback) and is honoured up to
`retry_delay_max_s`; the quota is the project's, so every worker of the run waits until then (a
shared "not before" time checked before each call). A per-day quota (a QuotaFailure violation
whose quotaId has "PerDay") fails at once, naming the quota and model and when it resets
(midnight Pacific time).

Errors: a refused key (400/401/403 with API_KEY_INVALID and friends, a key reported leaked or
restricted) stops everything with "api_keys.gemini_api_key was refused by Gemini"; so does a
region Gemini does not serve (400 FAILED_PRECONDITION "User location is not supported"). Only a
real safety block (promptFeedback.blockReason, or finish reason SAFETY, PROHIBITED_CONTENT,
BLOCKLIST, SPII, IMAGE_SAFETY, IMAGE_PROHIBITED_CONTENT) counts as blocked. By default a block
fails the job once every other video is captioned (their captions are kept for a retry):
training on a clip without its caption silently teaches the wrong thing, and the user can drop
the clip or caption it. `on_blocked="skip"` leaves such a video uncaptioned with a warning
instead. The API key goes in a header (the SDK's `x-goog-api-key`) and is scrubbed from every
message this module writes.
"""

from __future__ import annotations

import logging
import random
import re
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone
from datetime import time as dtime
from pathlib import Path
from typing import Any, Literal, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import httpx
from google import genai
from google.genai import errors, types

from events.redact import scrub
from stages.captions.inputs import DEFAULT_GEMINI_MODEL
from stages.captions.text import Progress, clean_caption, has_caption, write_caption
from stages.errors import CaptionError, GeminiBlocked, GeminiKeyRefused

log = logging.getLogger(__name__)

DEFAULT_MODEL = DEFAULT_GEMINI_MODEL
# The SDK's own default is v1 (google-genai 3.6); Google documents the Files API under v1beta.
API_VERSION = "v1beta"
MAX_UPLOAD_BYTES = 2 * 1024**3  # the File API's limit per file
PROMPT = (
    "Write a caption of this whole video clip for training a video generation model. Describe "
    "the main subjects and their appearance, what they do and how they move over the clip, the "
    "setting, lighting, style and camera movement. Answer with one paragraph of plain prose on "
    "a single line, at most 80 words, with no preamble, lists, headings or quotation marks."
)
# Gemini's documented video types; diffusion-pipe reads these containers.
VIDEO_MIME_TYPES: dict[str, str] = {
    ".mp4": "video/mp4",
    ".m4v": "video/mp4",
    ".mov": "video/mov",
    ".webm": "video/webm",
    ".avi": "video/avi",
    ".mpeg": "video/mpeg",
    ".mpg": "video/mpg",
    ".wmv": "video/wmv",
    ".flv": "video/x-flv",
    ".3gp": "video/3gpp",
    ".mkv": "video/x-matroska",
}
VIDEO_EXTENSIONS = frozenset(VIDEO_MIME_TYPES)
KEY_REFUSED = "api_keys.gemini_api_key was refused by Gemini"
REGIONS_PAGE = "https://ai.google.dev/gemini-api/docs/available-regions"
_KEY_REASONS = frozenset({"SERVICE_DISABLED"})  # with every API_KEY_* reason
_RETRY_CODES = frozenset({408, 429, 500, 502, 503, 504})
# Finish reasons of a safety or policy block: the request's on_blocked decides. Any other
# finish reason but STOP is a cut or unusable answer, retried and never saved.
_BLOCK_FINISH = frozenset(
    {
        "SAFETY",
        "PROHIBITED_CONTENT",
        "BLOCKLIST",
        "SPII",
        "IMAGE_SAFETY",
        "IMAGE_PROHIBITED_CONTENT",
    }
)
_RETRY_INFO = "type.googleapis.com/google.rpc.RetryInfo"
_QUOTA_FAILURE = "type.googleapis.com/google.rpc.QuotaFailure"
PACIFIC = "America/Los_Angeles"  # Gemini's daily quotas reset at midnight here

MediaResolution = Literal[
    "MEDIA_RESOLUTION_LOW", "MEDIA_RESOLUTION_MEDIUM", "MEDIA_RESOLUTION_HIGH"
]
T = TypeVar("T")


def _transient_errors() -> tuple[type[Exception], ...]:
    # The SDK talks through httpx2 when it is installed, else httpx: catch both. Not every
    # TransportError: a bad URL or proxy setting (UnsupportedProtocol, ProxyError) never heals.
    found: list[type[Exception]] = []
    modules: list[Any] = [httpx]
    try:
        import httpx2  # noqa: PLC0415

        modules.append(httpx2)
    except ImportError:
        pass
    for module in modules:
        found += [
            module.TimeoutException,
            module.ConnectError,
            module.RemoteProtocolError,  # closed without an answer
            module.ReadError,  # reset while waiting for the answer
            module.WriteError,  # reset while sending (an upload's bytes)
        ]
    return tuple(found)


_TRANSIENT = _transient_errors()


@dataclass(frozen=True)
class GeminiSettings:
    model: str = DEFAULT_MODEL
    prompt: str = PROMPT
    base_url: str | None = None  # tests: the loopback fake; production: Google's default
    # Frames a second Gemini samples (its default is 1, valid up to 24): training clips are a
    # few seconds, and the prompt asks for motion and camera movement.
    video_fps: float = 5.0
    # LOW is about 66 tokens a frame against 258 at the default: 5 fps at LOW costs about what
    # 1 fps costs at the default, and a caption needs the action, not fine detail.
    media_resolution: MediaResolution = "MEDIA_RESOLUTION_LOW"
    concurrency: int = 2  # uploads of whole clips are the bottleneck; free-tier RPM is low
    max_attempts: int = 6  # per call, including the first
    backoff_initial_s: float = 2.0
    backoff_max_s: float = 60.0  # our own backoff; a wait Gemini asks for has its own bound
    # A per-minute quota asks for at most a minute. A longer asked wait fails at once, naming
    # the quota: a job should not sit it out, and calling sooner would only earn another 429.
    retry_delay_max_s: float = 300.0
    poll_interval_s: float = 2.0
    poll_timeout_s: float = 600.0  # long clips take minutes to process
    request_timeout_s: float = 300.0
    on_blocked: Literal["fail", "skip"] = "fail"

    def __post_init__(self) -> None:
        if self.concurrency < 1 or self.max_attempts < 1:
            raise ValueError("concurrency and max_attempts must be at least 1")
        if not 0 < self.video_fps <= 24:
            raise ValueError("video_fps must be in (0, 24], Gemini's range")


@dataclass(frozen=True)
class VideoCaptionReport:
    captioned: list[Path]
    skipped_existing: list[Path]
    blocked: dict[str, str] = field(default_factory=dict)  # file name -> block reason


class GeminiDailyQuota(CaptionError):
    """A per-day quota is used up: nothing helps before `resets_at` (midnight Pacific)."""

    def __init__(self, message: str, *, quota_id: str, model: str, resets_at: datetime) -> None:
        super().__init__(message)
        self.quota_id, self.model, self.resets_at = quota_id, model, resets_at


class GeminiRegionRefused(CaptionError):
    """Gemini does not serve the region this worker calls from; no retry changes that."""


def make_client(api_key: str, settings: GeminiSettings) -> genai.Client:
    options = types.HttpOptions(
        api_version=API_VERSION, timeout=int(settings.request_timeout_s * 1000)
    )
    if settings.base_url:
        options.base_url = settings.base_url
    # The SDK's own retries stay off (its default): ours read the body's retryDelay, share one
    # wait between the workers and count attempts.
    return genai.Client(api_key=api_key, http_options=options)


class _Blocked(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _Unusable(Exception):
    """An answer that is not a caption we may keep (empty, cut, ...): tried again."""

    def __init__(self, finish: str, partial: bool) -> None:
        super().__init__(finish)
        self.finish, self.partial = finish, partial

    def describe(self) -> str:
        if self.finish == "STOP":
            return "an empty answer (finish reason STOP)"
        if self.finish == "NO_CANDIDATES":
            return "an answer without candidates"
        text = "partial text" if self.partial else "no text"
        return f"finish reason {self.finish} with {text}"


@dataclass(frozen=True)
class _Quota:
    """What a 429's QuotaFailure names: the first violation (the daily one when present)."""

    quota_id: str
    model: str | None
    value: str | None

    @property
    def per_day(self) -> bool:
        return "PerDay" in self.quota_id


@dataclass
class _Run:
    client: genai.Client
    api_key: str
    settings: GeminiSettings
    sleep: Callable[[float], None]
    clock: Callable[[], float]
    now: Callable[[], datetime]
    stop: threading.Event = field(default_factory=threading.Event)
    # The project's quota is shared: after a 429 no worker calls before this `clock()` time.
    not_before: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def scrub(self, text: str) -> str:
        return scrub(text, [self.api_key])

    def hold_all(self, delay: float) -> None:
        with self._lock:
            self.not_before = max(self.not_before, self.clock() + delay)

    def wait_turn(self, stoppable: bool) -> None:
        """Sleep until the shared not-before time; again if a worker moved it meanwhile."""
        if not stoppable and self.stop.is_set():
            return  # a cleanup after a failure: best effort, not worth a quota wait
        while True:
            with self._lock:
                target = self.not_before
            left = target - self.clock()
            if left <= 0:
                return
            self.sleep(left)
            with self._lock:
                if self.not_before <= target:
                    return

    def call(self, what: str, video: Path, fn: Callable[[], T], *, stoppable: bool = True) -> T:
        """`fn()` with the retries of the module doc; every other API error becomes a clear
        one."""
        s = self.settings
        for attempt in range(1, s.max_attempts + 1):
            self._check_stop(stoppable)
            self.wait_turn(stoppable)
            self._check_stop(stoppable)
            last = attempt == s.max_attempts
            try:
                return fn()
            except errors.APIError as exc:
                self._raise_fatal(exc, what, video)
                if exc.code not in _RETRY_CODES or last:
                    raise CaptionError(
                        self.scrub(
                            f"Gemini {what} failed for {video.name} after {attempt} attempt(s): "
                            f"{_describe(exc)}"
                        )
                    ) from None
                delay = self._asked_delay(exc, what, video)
                why = _describe(exc, short=True)
                if exc.code == 429:
                    delay = self._backoff(attempt) if delay is None else delay
                    self.hold_all(delay)
                    log.warning(
                        "Gemini %s for %s: %s; every worker waits %.1fs (retry %d/%d)",
                        what,
                        video.name,
                        why,
                        delay,
                        attempt,
                        s.max_attempts - 1,
                    )
                    continue
            except _TRANSIENT as exc:
                if last:
                    raise CaptionError(
                        f"Gemini {what} failed for {video.name} after {attempt} attempt(s): "
                        f"{type(exc).__name__}"
                    ) from None
                delay, why = None, type(exc).__name__
            except _Unusable as exc:
                if last:
                    raise CaptionError(
                        f"Gemini gave no usable caption for {video.name} after {attempt} "
                        f"attempt(s): {exc.describe()}"
                    ) from None
                delay, why = None, exc.describe()
            if delay is None:
                delay = self._backoff(attempt)
            log.warning(
                "Gemini %s for %s: %s; retry %d/%d in %.1fs",
                what,
                video.name,
                why,
                attempt,
                s.max_attempts - 1,
                delay,
            )
            self.sleep(delay)
        raise AssertionError("unreachable")  # the loop returns or raises

    def _check_stop(self, stoppable: bool) -> None:
        if stoppable and self.stop.is_set():
            raise CaptionError("captioning stopped after an earlier failure")

    def _backoff(self, attempt: int) -> float:
        s = self.settings
        base = min(s.backoff_max_s, s.backoff_initial_s * 2.0 ** (attempt - 1))
        return base * random.uniform(0.5, 1.0)  # noqa: S311 - jitter, not crypto

    def _asked_delay(self, exc: errors.APIError, what: str, video: Path) -> float | None:
        """The wait Gemini asks for (body first, then Retry-After), within our bound."""
        delay = _retry_delay(exc)
        if delay is None:
            delay = _retry_after(exc)
        if delay is not None and delay > self.settings.retry_delay_max_s:
            quota = _quota(exc)
            named = f" (quota {quota.quota_id})" if quota is not None else ""
            raise CaptionError(
                self.scrub(
                    f"Gemini {what} for {video.name}: Gemini asks to wait {delay:.0f}s{named}, "
                    f"longer than a job waits ({self.settings.retry_delay_max_s:.0f}s); retry "
                    "the job later"
                )
            )
        return delay

    def _raise_fatal(self, exc: errors.APIError, what: str, video: Path) -> None:
        """The answers no retry can change: a refused key, a region Gemini does not serve, a
        daily quota used up."""
        if _key_refused(exc):
            reason = _reason(exc)
            shown = reason or _describe(exc)
            raise GeminiKeyRefused(self.scrub(f"{KEY_REFUSED} ({shown})")) from None
        if _region_refused(exc):
            raise GeminiRegionRefused(
                self.scrub(
                    f"Gemini refused the region this worker calls from ({_describe(exc)}): the "
                    f"Gemini API is not offered there ({REGIONS_PAGE}). Run the job on a worker "
                    "in a supported region, or caption the videos yourself (dataset.type "
                    "precaptioned)."
                )
            ) from None
        quota = _quota(exc) if exc.code == 429 else None
        if quota is not None and quota.per_day:
            model = quota.model or self.settings.model
            now = self.now()
            resets = next_pacific_midnight(now)
            in_hours = (resets - now).total_seconds() / 3600
            limit = f", {quota.value} requests" if quota.value else ""
            raise GeminiDailyQuota(
                self.scrub(
                    f"Gemini's daily quota {quota.quota_id} for {model}{limit} is used up "
                    f"({what} for {video.name}); it resets at midnight Pacific time, "
                    f"{resets:%Y-%m-%d %H:%M %Z} ({resets.astimezone(UTC):%Y-%m-%d %H:%M} UTC, "
                    f"in {in_hours:.1f} h). Videos captioned so far keep their captions: retry "
                    "the job after that, or use a key whose project has a paid tier."
                ),
                quota_id=quota.quota_id,
                model=model,
                resets_at=resets,
            ) from None

    def caption(self, video: Path) -> str:
        s = self.settings
        mime = VIDEO_MIME_TYPES[video.suffix.lower()]
        upload = types.UploadFileConfig(mime_type=mime, display_name=video.name)
        # Each attempt is a whole files.upload, so a reset mid-upload starts a new session.
        uploaded = self.call(
            "upload", video, lambda: self.client.files.upload(file=video, config=upload)
        )
        try:
            active = self._wait_active(video, uploaded)
            # The whole uploaded clip is one part, sampled at video_fps; the prompt the other.
            clip = types.Part(
                file_data=types.FileData(
                    file_uri=str(active.uri), mime_type=active.mime_type or mime
                ),
                video_metadata=types.VideoMetadata(fps=s.video_fps),
            )
            contents: list[types.PartUnionDict] = [clip, s.prompt]
            config = types.GenerateContentConfig(
                media_resolution=types.MediaResolution(s.media_resolution)
            )

            def generate() -> str:
                response = self.client.models.generate_content(
                    model=s.model, contents=contents, config=config
                )
                return _text(response)

            return self.call("generateContent", video, generate)
        finally:
            self._delete(video, uploaded)

    def _wait_active(self, video: Path, file: types.File) -> types.File:
        name = str(file.name)
        deadline = self.clock() + self.settings.poll_timeout_s
        while True:
            state = file.state.name if file.state is not None else "STATE_UNSPECIFIED"
            if state == "ACTIVE":
                return file
            if state == "FAILED":
                detail = file.error.message if file.error and file.error.message else "no detail"
                raise CaptionError(f"Gemini could not process {video.name}: {self.scrub(detail)}")
            if self.clock() >= deadline:
                raise CaptionError(
                    f"Gemini did not finish processing {video.name} within "
                    f"{self.settings.poll_timeout_s:.0f}s"
                )
            if self.settings.poll_interval_s > 0:
                self.sleep(self.settings.poll_interval_s)
            file = self.call("files.get", video, lambda: self.client.files.get(name=name))

    def _delete(self, video: Path, file: types.File) -> None:
        # Best effort: an upload left behind expires by itself after 48 hours.
        name = str(file.name)
        try:
            self.call(
                "files.delete", video, lambda: self.client.files.delete(name=name), stoppable=False
            )
        except CaptionError as exc:
            log.warning("could not delete the upload of %s: %s", video.name, exc)


def _details(exc: errors.APIError) -> list[dict[str, Any]]:
    """`error.details` of Google's body (the SDK keeps the whole body in `exc.details`)."""
    body: Any = exc.details
    if isinstance(body, dict):
        inner = body.get("error", body)
        body = inner.get("details", []) if isinstance(inner, dict) else []
    return [d for d in body if isinstance(d, dict)] if isinstance(body, list) else []


def _reason(exc: errors.APIError) -> str | None:
    for item in _details(exc):
        if isinstance(item.get("reason"), str):
            return str(item["reason"])
    return None


def _key_refused(exc: errors.APIError) -> bool:
    if exc.code == 401:
        return True
    if exc.code not in (400, 403):
        return False
    reason = _reason(exc) or ""
    if reason.startswith("API_KEY_") or reason in _KEY_REASONS:
        return True
    # A key reported leaked gets a 403 without an ErrorInfo, only the message; so does a call
    # without a key ("Please use API Key or other form of API consumer identity").
    return "api key" in (exc.message or "").lower()


def _region_refused(exc: errors.APIError) -> bool:
    return (
        exc.code == 400
        and exc.status == "FAILED_PRECONDITION"
        and "location is not supported" in (exc.message or "")
    )


def _quota(exc: errors.APIError) -> _Quota | None:
    violations: list[_Quota] = []
    for item in _details(exc):
        if item.get("@type") != _QUOTA_FAILURE:
            continue
        for v in item.get("violations") or []:
            if isinstance(v, dict) and isinstance(v.get("quotaId"), str):
                dims = v.get("quotaDimensions")
                model = dims.get("model") if isinstance(dims, dict) else None
                value = v.get("quotaValue")
                violations.append(
                    _Quota(
                        str(v["quotaId"]),
                        str(model) if model else None,
                        str(value) if value is not None else None,
                    )
                )
    # One 429 can list the day's quota beside the minute's: the day's decides.
    violations.sort(key=lambda q: not q.per_day)
    return violations[0] if violations else None


_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)s\s*$")


def _retry_delay(exc: errors.APIError) -> float | None:
    """RetryInfo's retryDelay, a proto Duration in JSON: "37s", "37.5s"."""
    for item in _details(exc):
        if item.get("@type") == _RETRY_INFO:
            match = _DURATION.match(str(item.get("retryDelay", "")))
            if match:
                return float(match.group(1))
    return None


def _retry_after(exc: errors.APIError) -> float | None:
    headers = getattr(exc.response, "headers", None)
    value = headers.get("retry-after") if headers is not None else None
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None  # an HTTP date: fall back to our own backoff


def _describe(exc: errors.APIError, *, short: bool = False) -> str:
    """ "429 RESOURCE_EXHAUSTED: <message>" on one line; Google's messages carry newlines, a
    404 from its front end a whole HTML page."""
    head = f"{exc.code} {exc.status or ''}".strip()
    quota = _quota(exc)
    if quota is not None:
        head += f" (quota {quota.quota_id}" + (f" for {quota.model})" if quota.model else ")")
    if short:
        return head
    message = " ".join(str(exc.message or "").split())
    if message.startswith("<"):
        message = "an HTML error page, not Gemini's API (a wrong base URL or API version?)"
    if len(message) > 300:
        message = message[:297] + "..."
    return f"{head}: {message}" if message else head


def _text(response: types.GenerateContentResponse) -> str:
    feedback = response.prompt_feedback
    if feedback is not None and feedback.block_reason is not None:
        raise _Blocked(feedback.block_reason.name)
    candidates = response.candidates or []
    if not candidates:
        raise _Unusable("NO_CANDIDATES", partial=False)
    candidate = candidates[0]
    parts = candidate.content.parts if candidate.content and candidate.content.parts else []
    text = clean_caption(" ".join(p.text for p in parts if p.text and not p.thought))
    finish = candidate.finish_reason.name if candidate.finish_reason is not None else "STOP"
    if finish in _BLOCK_FINISH:
        raise _Blocked(finish)
    if finish != "STOP" or not text:
        raise _Unusable(finish, partial=bool(text))
    return text


# --- when a daily quota resets ----------------------------------------------------------------


def next_pacific_midnight(now: datetime) -> datetime:
    """The first midnight in America/Los_Angeles after `now` (aware), as an aware datetime in
    Pacific time: when Gemini's daily quotas reset."""
    try:
        zone = ZoneInfo(PACIFIC)
    except ZoneInfoNotFoundError:  # an image without tzdata: the US rule since 2007
        return _pacific_midnight_by_rule(now)
    local = now.astimezone(zone)
    return datetime.combine(local.date() + timedelta(days=1), dtime(0), tzinfo=zone)


def _nth_sunday(year: int, month: int, n: int) -> date:
    first = date(year, month, 1)
    return first + timedelta(days=(6 - first.weekday()) % 7 + 7 * (n - 1))


def _pacific_midnight_by_rule(now: datetime) -> datetime:
    """PDT (UTC-7) from the second Sunday of March, 02:00, to the first Sunday of November,
    02:00; PST (UTC-8) otherwise. Midnight is never inside a change, which happens at 02:00."""
    utc = now.astimezone(UTC)
    year = utc.year
    starts = datetime.combine(_nth_sunday(year, 3, 2), dtime(10), tzinfo=UTC)  # 02:00 PST
    ends = datetime.combine(_nth_sunday(year, 11, 1), dtime(9), tzinfo=UTC)  # 02:00 PDT
    offset = -7 if starts <= utc < ends else -8
    day = (utc + timedelta(hours=offset)).date() + timedelta(days=1)
    summer = _nth_sunday(day.year, 3, 2) < day <= _nth_sunday(day.year, 11, 1)
    zone = timezone(timedelta(hours=-7), "PDT") if summer else timezone(timedelta(hours=-8), "PST")
    return datetime.combine(day, dtime(0), tzinfo=zone)


# --- the batch --------------------------------------------------------------------------------


class _Batch:
    """The videos of one `caption_videos` call, captioned by a few threads: what was
    captioned, blocked or failed, counted under one lock so progress never goes backwards."""

    def __init__(self, run: _Run, total: int, trigger: str | None, progress: Progress | None):
        self.run, self.total, self.trigger, self.progress = run, total, trigger, progress
        self.captioned: list[Path] = []
        self.blocked: dict[str, str] = {}
        self.failures: list[BaseException] = []
        self._lock = threading.Lock()

    def one(self, video: Path) -> None:
        try:
            write_caption(video, self.run.caption(video), self.trigger)
        except _Blocked as exc:
            log.warning("Gemini blocked captioning of %s: %s", video.name, exc.reason)
            with self._lock:
                self.blocked[video.name] = exc.reason
        except BaseException as exc:
            with self._lock:
                self.failures.append(exc)
            self.run.stop.set()  # running videos give up at their next call
            raise
        else:
            with self._lock:
                self.captioned.append(video)
        with self._lock:
            if self.progress is not None:
                self.progress(len(self.captioned) + len(self.blocked), self.total)

    def raise_first_failure(self) -> None:
        """The cause, not a later "stopped" follower, as a CaptionError."""
        first = self.failures[0]
        if isinstance(first, CaptionError):
            raise first
        raise CaptionError(
            self.run.scrub(f"Gemini captioning failed: {type(first).__name__}: {first}")
        ) from None


def _check_sendable(videos: Sequence[Path]) -> None:
    for video in videos:
        if video.suffix.lower() not in VIDEO_MIME_TYPES:
            raise CaptionError(f"cannot caption {video.name}: not a video type Gemini reads")
        size = video.stat().st_size
        if size > MAX_UPLOAD_BYTES:
            raise CaptionError(
                f"cannot caption {video.name}: it is {size / 1024**3:.2f} GiB ({size} bytes), "
                "over the 2 GiB the Gemini File API takes per file; cut it into shorter clips "
                "or re-encode it smaller"
            )


def _utc_now() -> datetime:
    return datetime.now(UTC)


def caption_videos(
    videos: Sequence[Path],
    *,
    api_key: str,
    trigger: str | None = None,
    settings: GeminiSettings | None = None,
    progress: Progress | None = None,
    client: genai.Client | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    now: Callable[[], datetime] = _utc_now,
) -> VideoCaptionReport:
    """Caption every video without a `.txt`; see the module doc for errors and blocks.

    `client` (made from `settings` when None) is closed before this returns or raises: the
    captions stage makes one per run. `sleep` and `clock` are the waits' (tests pass a
    simulated clock), `now` the wall clock a daily quota's reset is told from."""
    settings = settings or GeminiSettings()
    try:
        todo = [v for v in videos if not has_caption(v)]
        skipped = [v for v in videos if v not in todo]
        _check_sendable(todo)
        client = client or make_client(api_key, settings)
        run = _Run(client, api_key, settings, sleep, clock, now)
        batch = _Batch(run, len(todo), trigger, progress)
        if progress is not None:
            progress(0, len(todo))
        with ThreadPoolExecutor(settings.concurrency, thread_name_prefix="gemini") as pool:
            futures: list[Future[None]] = [pool.submit(batch.one, v) for v in todo]
            wait(futures, return_when=FIRST_EXCEPTION)
            if batch.failures:
                for f in futures:
                    f.cancel()  # queued videos never start
                wait(futures)
                batch.raise_first_failure()
    finally:
        # Older google-genai releases have no close(); 3.x frees its connection pool here.
        close = getattr(client, "close", None)
        if callable(close):
            close()
    captioned = sorted(batch.captioned, key=videos.index)
    if batch.blocked and settings.on_blocked == "fail":
        raise GeminiBlocked(batch.blocked)
    return VideoCaptionReport(captioned=captioned, skipped_existing=skipped, blocked=batch.blocked)
