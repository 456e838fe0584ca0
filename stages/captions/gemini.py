"""Video captions with Gemini through the current `google-genai` SDK.

Per video without a caption: upload the whole clip with the File API, poll until it is ACTIVE
(bounded), ask the model for one training caption with the uploaded file as a part (the clip,
not sampled frames: the old ports captioned a single frame), write it atomically with the
trigger word in front, and delete the upload. Videos run on a small thread pool; 429 and 5xx
answers (and connection timeouts) are retried with exponential backoff, honouring Retry-After.

Errors: a refused key (400/401/403 with API_KEY_INVALID and friends) stops everything with
"api_keys.gemini_api_key was refused by Gemini". A safety block names the file and the reason.
By default a block fails the job once every other video is captioned (their captions are kept
for a retry): training on a clip without its caption silently teaches the wrong thing, and the
user can drop the clip or caption it. `on_blocked="skip"` leaves such a video uncaptioned with a
warning instead. The API key goes in a header (the SDK's `x-goog-api-key`) and is scrubbed from
every message this module writes.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import httpx
from google import genai
from google.genai import errors, types

from events.redact import scrub
from stages.captions.text import Progress, clean_caption, has_caption, write_caption
from stages.errors import CaptionError, GeminiBlocked, GeminiKeyRefused

log = logging.getLogger(__name__)

# "latest" aliases follow Google's newest Flash release: the old ports died because they named
# model ids that Google later shut down (gemini-1.5-*, gemini-2.0-flash*). Pin one with `model`.
DEFAULT_MODEL = "gemini-flash-latest"
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
_KEY_REASONS = ("API_KEY_INVALID", "API_KEY_EXPIRED", "API_KEY_SERVICE_BLOCKED")
_RETRY_CODES = frozenset({408, 429, 500, 502, 503, 504})

T = TypeVar("T")


def _transient_errors() -> tuple[type[Exception], ...]:
    # The SDK talks through httpx2 when it is installed, else httpx: catch both.
    found: list[type[Exception]] = [httpx.TimeoutException, httpx.ConnectError]
    try:
        import httpx2  # noqa: PLC0415

        found += [httpx2.TimeoutException, httpx2.ConnectError]
    except ImportError:
        pass
    return tuple(found)


_TRANSIENT = _transient_errors()


@dataclass(frozen=True)
class GeminiSettings:
    model: str = DEFAULT_MODEL
    prompt: str = PROMPT
    base_url: str | None = None  # tests: the loopback fake; production: Google's default
    concurrency: int = 2  # uploads of whole clips are the bottleneck; free-tier RPM is low
    max_attempts: int = 6  # per call, including the first
    backoff_initial_s: float = 2.0
    backoff_max_s: float = 60.0
    poll_interval_s: float = 2.0
    poll_timeout_s: float = 600.0  # long clips take minutes to process
    request_timeout_s: float = 300.0
    on_blocked: Literal["fail", "skip"] = "fail"

    def __post_init__(self) -> None:
        if self.concurrency < 1 or self.max_attempts < 1:
            raise ValueError("concurrency and max_attempts must be at least 1")


@dataclass(frozen=True)
class VideoCaptionReport:
    captioned: list[Path]
    skipped_existing: list[Path]
    blocked: dict[str, str] = field(default_factory=dict)  # file name -> block reason


def make_client(api_key: str, settings: GeminiSettings) -> genai.Client:
    options = types.HttpOptions(timeout=int(settings.request_timeout_s * 1000))
    if settings.base_url:
        options.base_url = settings.base_url
    # The SDK's own retries stay off (its default): ours honour Retry-After and count attempts.
    return genai.Client(api_key=api_key, http_options=options)


class _Blocked(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class _Run:
    client: genai.Client
    api_key: str
    settings: GeminiSettings
    sleep: Callable[[float], None]
    stop: threading.Event = field(default_factory=threading.Event)

    def scrub(self, text: str) -> str:
        return scrub(text, [self.api_key])

    def call(self, what: str, video: Path, fn: Callable[[], T], *, stoppable: bool = True) -> T:
        """`fn()` with retries on 429/5xx/timeouts; every other API error becomes a clear one."""
        s = self.settings
        for attempt in range(1, s.max_attempts + 1):
            if stoppable and self.stop.is_set():
                raise CaptionError("captioning stopped after an earlier failure")
            try:
                return fn()
            except errors.APIError as exc:
                if _key_refused(exc):
                    raise GeminiKeyRefused(f"{KEY_REFUSED} ({_reason(exc) or exc.code})") from None
                if exc.code not in _RETRY_CODES or attempt == s.max_attempts:
                    raise CaptionError(
                        self.scrub(
                            f"Gemini {what} failed for {video.name} after {attempt} attempt(s): "
                            f"{exc.code} {exc.status or ''} {exc.message or ''}".rstrip()
                        )
                    ) from None
                delay = _retry_after(exc)
                why = f"{exc.code} {exc.status or ''}".strip()
            except _TRANSIENT as exc:
                if attempt == s.max_attempts:
                    raise CaptionError(
                        f"Gemini {what} failed for {video.name} after {attempt} attempt(s): "
                        f"{type(exc).__name__}"
                    ) from None
                delay, why = None, type(exc).__name__
            if delay is None:
                base = min(s.backoff_max_s, s.backoff_initial_s * 2 ** (attempt - 1))
                delay = base * random.uniform(0.5, 1.0)  # noqa: S311 - jitter, not crypto
            delay = min(delay, s.backoff_max_s)
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

    def caption(self, video: Path) -> str:
        s = self.settings
        mime = VIDEO_MIME_TYPES[video.suffix.lower()]
        upload = types.UploadFileConfig(mime_type=mime, display_name=video.name)
        uploaded = self.call(
            "upload", video, lambda: self.client.files.upload(file=video, config=upload)
        )
        try:
            active = self._wait_active(video, uploaded)
            # The whole uploaded clip is one part; the prompt is the other.
            contents: list[types.PartUnionDict] = [
                types.Part.from_uri(file_uri=str(active.uri), mime_type=active.mime_type or mime),
                s.prompt,
            ]
            response = self.call(
                "generateContent",
                video,
                lambda: self.client.models.generate_content(model=s.model, contents=contents),
            )
            return _text(response)
        finally:
            self._delete(video, uploaded)

    def _wait_active(self, video: Path, file: types.File) -> types.File:
        name = str(file.name)
        deadline = time.monotonic() + self.settings.poll_timeout_s
        while True:
            state = file.state.name if file.state is not None else "STATE_UNSPECIFIED"
            if state == "ACTIVE":
                return file
            if state == "FAILED":
                detail = file.error.message if file.error and file.error.message else "no detail"
                raise CaptionError(f"Gemini could not process {video.name}: {self.scrub(detail)}")
            if time.monotonic() >= deadline:
                raise CaptionError(
                    f"Gemini did not finish processing {video.name} within "
                    f"{self.settings.poll_timeout_s:.0f}s"
                )
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


def _key_refused(exc: errors.APIError) -> bool:
    if exc.code == 401:
        return True
    if exc.code in (400, 403):
        reason = _reason(exc)
        return reason in _KEY_REASONS or "API key not valid" in (exc.message or "")
    return False


def _reason(exc: errors.APIError) -> str | None:
    details: Any = exc.details
    if isinstance(details, dict):
        details = details.get("error", details).get("details", [])
    for item in details if isinstance(details, list) else []:
        if isinstance(item, dict) and isinstance(item.get("reason"), str):
            return str(item["reason"])
    return None


def _retry_after(exc: errors.APIError) -> float | None:
    headers = getattr(exc.response, "headers", None)
    value = headers.get("retry-after") if headers is not None else None
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None  # an HTTP date: fall back to our own backoff


def _text(response: types.GenerateContentResponse) -> str:
    feedback = response.prompt_feedback
    if feedback is not None and feedback.block_reason is not None:
        raise _Blocked(feedback.block_reason.name)
    candidates = response.candidates or []
    if not candidates:
        raise _Blocked("NO_CANDIDATES")
    candidate = candidates[0]
    parts = candidate.content.parts if candidate.content and candidate.content.parts else []
    text = clean_caption(" ".join(p.text for p in parts if p.text and not p.thought))
    finish = candidate.finish_reason.name if candidate.finish_reason is not None else "STOP"
    if not text:
        raise _Blocked(finish if finish != "STOP" else "EMPTY_RESPONSE")
    return text


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


def caption_videos(
    videos: Sequence[Path],
    *,
    api_key: str,
    trigger: str | None = None,
    settings: GeminiSettings | None = None,
    progress: Progress | None = None,
    client: genai.Client | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> VideoCaptionReport:
    """Caption every video without a `.txt`; see the module doc for errors and blocks."""
    settings = settings or GeminiSettings()
    todo = [v for v in videos if not has_caption(v)]
    skipped = [v for v in videos if v not in todo]
    for video in todo:
        if video.suffix.lower() not in VIDEO_MIME_TYPES:
            raise CaptionError(f"cannot caption {video.name}: not a video type Gemini reads")
    run = _Run(client or make_client(api_key, settings), api_key, settings, sleep)
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
    captioned = sorted(batch.captioned, key=videos.index)
    if batch.blocked and settings.on_blocked == "fail":
        raise GeminiBlocked(batch.blocked)
    return VideoCaptionReport(captioned=captioned, skipped_existing=skipped, blocked=batch.blocked)
