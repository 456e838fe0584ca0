"""Inline datasets: a zip inside the request as a data: URL. Accepted by the request, fetched by
the download step within DPS_DATASET_MAX_INLINE_BYTES, unpacked under the same archive checks
as any download, and its payload never shown (errors, the recorded request, events)."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path
from typing import Any

import pytest

from events.store import EventStore
from events.vocabulary import Status
from orchestrator.errors import RequestError
from orchestrator.request import parse_request
from orchestrator.runner import run_job
from orchestrator.settings import Settings, download_limits
from stages.dataset import inline
from stages.dataset.download import download
from stages.dataset.limits import DownloadLimits
from stages.dataset.stage import Dataset
from stages.errors import DownloadFailed, StageFailed
from tests.support.helpers import dataset_inputs_for
from tests.support.media import make_zip, shades_zip

FIELD = "dataset.images_url"


def _body(url: str) -> dict[str, Any]:
    return {"model_type": "tiny", "dataset": {"type": "precaptioned", "images_url": url}}


def _payload(url: str) -> str:
    return url.split(",", 1)[1]


def _refusal(url: str) -> str:
    with pytest.raises(RequestError) as caught:
        parse_request(_body(url))
    return str(caught.value)


# --- the request ----------------------------------------------------------------------------


def test_a_data_url_is_accepted_and_shown_by_its_size_and_digest() -> None:
    archive = shades_zip(3)
    url = inline.to_data_url(archive)
    request = parse_request(_body(url))
    assert request.dataset.images_url == url
    digest = hashlib.sha256(archive).hexdigest()[:12]
    shown = f"data:application/zip;base64,… ({len(archive)} bytes, sha256 {digest})"
    masked = request.masked()
    assert masked["dataset"]["images_url"] == shown
    assert _payload(url)[:40] not in repr(request)
    assert _payload(url)[:40] not in str(masked)


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("data:application/zip," + "UEsFBg" * 4, "base64"),
        ("data:text/plain;base64,aGVsbG8gd29ybGQh", 'media type "text/plain"'),
        ("data:application/zip;base64,UEsD!!!BBQAAAAA", "not valid base64"),
        ("data:application/zip;base64,UEsD\nBBQA", "whitespace"),
        ("data:application/zip;base64,", "empty"),
        ("data:application/zip;base64", "no comma"),
    ],
)
def test_a_malformed_data_url_is_refused_naming_the_field(url: str, why: str) -> None:
    message = _refusal(url)
    assert FIELD in message
    assert why in message
    payload = url.partition(",")[2]
    assert not payload or payload not in message


def test_an_oversized_data_url_is_refused_at_validation_without_echoing_it() -> None:
    url = "data:application/zip;base64," + "A" * inline.MAX_DATA_URL_CHARS
    message = _refusal(url)
    assert FIELD in message
    assert "more than any RunPod request holds" in message
    assert "AAAAAAAAAAAAAAAA" not in message


def test_an_http_url_keeps_its_length_bound() -> None:
    message = _refusal("https://example.com/" + "a" * 9000 + ".zip")
    assert FIELD in message
    assert "longer than 8192 characters" in message


# --- the download ---------------------------------------------------------------------------


def test_the_archive_is_written_where_a_download_would_be_and_reused(tmp_path: Path) -> None:
    archive = shades_zip(2)
    url = inline.to_data_url(archive)
    seen: list[tuple[int, int | None]] = []
    got = download(url, tmp_path, field=FIELD, name="images", on_bytes=lambda *a: seen.append(a))
    assert got.path == tmp_path / "images"
    assert got.path.read_bytes() == archive
    assert (got.size, got.sha256, got.reused) == (
        len(archive),
        hashlib.sha256(archive).hexdigest(),
        False,
    )
    assert seen == [(len(archive), len(archive))]
    again = download(url, tmp_path, field=FIELD, name="images")
    assert again.reused
    # The manifest keeps a hash of the URL, never the URL.
    manifest = (tmp_path / "images.manifest.json").read_text()
    assert _payload(url)[:32] not in manifest


def test_an_archive_over_the_inline_bound_is_refused_naming_the_setting(tmp_path: Path) -> None:
    archive = shades_zip(4)
    limits = DownloadLimits(max_inline_bytes=len(archive) - 1)
    url = inline.to_data_url(archive)
    with pytest.raises(DownloadFailed) as caught:
        download(url, tmp_path, field=FIELD, name="images", limits=limits)
    message = str(caught.value)
    assert message.startswith(f"{FIELD}: the inline dataset is ")
    assert "DPS_DATASET_MAX_INLINE_BYTES" in message
    assert _payload(url)[:16] not in message
    assert not (tmp_path / "images").exists()
    # Exactly at the bound it passes.
    at_bound = DownloadLimits(max_inline_bytes=len(archive))
    assert download(url, tmp_path, field=FIELD, name="images", limits=at_bound).size == len(archive)


def test_the_bound_is_a_worker_setting() -> None:
    assert download_limits({}).max_inline_bytes == 4 << 20
    assert download_limits({"DPS_DATASET_MAX_INLINE_BYTES": "1000"}).max_inline_bytes == 1000
    assert Settings.from_env({"DPS_ROOT": "/r"}).download_limits.max_inline_bytes == 4 << 20


def test_a_malformed_data_url_fails_the_download_too(tmp_path: Path) -> None:
    # The stage can be given a URL that never went through the request (the CLI, a test).
    with pytest.raises(DownloadFailed, match=rf"^{FIELD}: a data: URL must be"):
        download("data:text/html;base64,PGI+", tmp_path, field=FIELD, name="images")


# --- the dataset stage: the same archive checks, nothing shown --------------------------------


def _dataset_job(tmp_path: Path, url: str) -> tuple[Any, str]:
    request = parse_request(_body(url))
    stage = Dataset(dataset_inputs_for(request))
    outcome = run_job(root=tmp_path / "root", job_id="j", stages=[stage])
    events = (tmp_path / "root" / "jobs" / "j" / "events.jsonl").read_text()
    return outcome, events


def test_an_inline_dataset_trains_the_same_as_a_downloaded_one(tmp_path: Path) -> None:
    url = inline.to_data_url(shades_zip(3))
    outcome, events = _dataset_job(tmp_path, url)
    assert outcome.view.stages["dataset"]["images"] == 3
    assert _payload(url)[:24] not in events
    stored = EventStore.on_disk(tmp_path / "root").read("j")
    assert any(e.type == "DATASET_REPORT" for e in stored)


@pytest.mark.parametrize(
    ("archive", "why"),
    [
        (make_zip({"../escape.png": b"x", "ok.txt": b"y"}), "the archive was refused"),
        (b"PK\x03\x04 this is no zip at all" * 4, "damaged or truncated"),
        (base64.b64decode("R0lGODlhAQABAAAAACw="), "not a zip or tar archive"),
    ],
    ids=["path-traversal", "corrupt-zip", "not-an-archive"],
)
def test_a_hostile_inline_archive_is_refused_as_a_download_is(
    tmp_path: Path, archive: bytes, why: str
) -> None:
    url = inline.to_data_url(archive)
    outcome, events = _dataset_job(tmp_path, url)
    assert outcome.status is Status.ERROR
    assert outcome.error is not None
    assert FIELD in outcome.error
    assert why in outcome.error
    assert _payload(url)[:16] not in outcome.error
    assert _payload(url)[:16] not in events
    assert not list((tmp_path / "root" / "jobs" / "j").rglob("escape.png"))


def test_download_failed_is_a_stage_failure() -> None:
    assert issubclass(DownloadFailed, StageFailed)
