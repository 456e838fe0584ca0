"""Gemini video captions per second under a per-minute quota, two workers against one, and
against the quota's ceiling.

Method: the real google-genai client against the loopback Gemini (tests/support/fakegemini),
which enforces a free-tier-like quota on generateContent (10 requests per minute, fixed
windows) and answers beyond it with Gemini's real 429 body: QuotaFailure, Help, and a RetryInfo
whose retryDelay is the time left in the window. To run in seconds, a minute is simulated by
one real second: the quota's window, the model's time per caption (6 s of a minute, so one
worker alone stays under the quota and two go past it), and the captioner's own waits (2 s
polls and backoff, a 300 s bound on an asked wait) are all scaled by 1/60. The fake's retryDelay
keeps its fraction (Google's is whole seconds, which a one-second window cannot use).

Rows, each measured in this run: two workers (the default concurrency, sharing one wait after a
429) against the quota's ceiling, its rate (n captions take n / limit minutes; fixed windows let
the first one go a little faster, and n is a whole number of windows so that evens out); and two
workers against one worker under the same quota. The notes count the 429s: with the shared
wait, about one per window.
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench.table import Result, render
from stages.captions.gemini import GeminiSettings, caption_videos
from tests.support.fakegemini import FakeGemini, RateQuota

KEY = "AIzaBENCHKEY-000000000000000000000000"
MINUTE_S = 1.0  # one simulated minute, in real seconds
SCALE = MINUTE_S / 60.0
LIMIT = 10  # gemini-2.5-flash's free tier: 10 requests per minute
VIDEOS = 30
CAPTION_S = 6.0 * SCALE  # the model's time per caption


@dataclass(frozen=True)
class Run:
    seconds: float
    captioned: int
    refused: int  # 429s the quota answered

    @property
    def rate(self) -> float:
        return self.captioned / self.seconds


def _videos(folder: Path) -> list[Path]:
    folder.mkdir(parents=True)
    paths = []
    for i in range(VIDEOS):
        path = folder / f"clip{i:02d}.mp4"
        path.write_bytes(i.to_bytes(4, "big") * 256)
        paths.append(path)
    return paths


def measure(root: Path, workers: int) -> Run:
    quota = RateQuota(limit=LIMIT, window_s=MINUTE_S)
    with FakeGemini(api_key=KEY, processing_polls=0, quota=quota, latency_s=CAPTION_S) as fake:
        settings = GeminiSettings(
            base_url=fake.base_url,
            concurrency=workers,
            poll_interval_s=2.0 * SCALE,
            backoff_initial_s=2.0 * SCALE,
            backoff_max_s=60.0 * SCALE,
            retry_delay_max_s=300.0 * SCALE,
            request_timeout_s=30.0,
        )
        videos = _videos(root / f"workers{workers}")
        start = time.perf_counter()
        report = caption_videos(videos, api_key=KEY, settings=settings)
        seconds = time.perf_counter() - start
    return Run(seconds, len(report.captioned), quota.refused)


def ceiling_s() -> float:
    """The time of `VIDEOS` captions at the quota's rate, `LIMIT` a minute."""
    return VIDEOS / LIMIT * MINUTE_S


def run() -> list[Result]:
    logging.getLogger("stages.captions.gemini").setLevel(logging.ERROR)  # one line per 429
    with tempfile.TemporaryDirectory() as tmp:
        one = measure(Path(tmp), 1)
        two = measure(Path(tmp), 2)
    ceiling = ceiling_s()
    quota = f"{LIMIT}/min quota, 1 min = {MINUTE_S:g} s"

    def shown(r: Run) -> str:
        return f"{r.seconds:.2f} s ({r.rate:.1f} captions/s)"

    return [
        Result(
            f"Gemini captions of {VIDEOS} videos, 2 workers, {quota}",
            shown(two),
            f"quota ceiling {ceiling:.2f} s ({VIDEOS / ceiling:.1f} captions/s)",
            two.seconds / ceiling,
            1.15,
            f"{two.refused} 429s answered, {two.captioned}/{VIDEOS} captioned",
        ),
        Result(
            f"Gemini captions of {VIDEOS} videos, 2 workers vs 1, {quota}",
            shown(two),
            f"1 worker {shown(one)}",
            two.seconds / one.seconds,
            0.8,
            f"1 worker: {one.refused} 429s answered, {one.captioned}/{VIDEOS} captioned",
        ),
    ]


def main() -> None:
    from rich.console import Console  # noqa: PLC0415

    results = run()
    Console(width=160).print(render(results))
    for r in results:
        print(f"{r.name}: ratio {r.ratio:.2f} (goal <= {r.goal:g}, met: {r.met})")


if __name__ == "__main__":
    main()
