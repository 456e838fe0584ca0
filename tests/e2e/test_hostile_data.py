"""Hostile datasets end to end through the handler: each is served over loopback to a tiny
precaptioned job run by `handle()`, and must end in a FAILED response naming the field or file,
or in its line of the pre-flight report (the DATASET_REPORT event), with nothing written outside
the job folder.

Archives refused while they are unpacked (zip-slip, links, bombs of every kind, duplicate names,
an archive of archives, a full disk) leave nothing in the job's dataset folder: not a file, not
the folder. The tar header bombs are also held to a memory bound: the extraction's traced peak
stays far below the header they declare (those jobs use a model without a CPU build, so nothing
else allocates while they unpack)."""

from __future__ import annotations

import asyncio
import importlib
import socket
import time
import tracemalloc
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest

from events.model import Event
from events.store import EventStore
from orchestrator.progress import ProgressReporter
from orchestrator.settings import Settings, address_policy
from orchestrator.worker import WorkerOptions, handle
from stages.addresses import AddressPolicy, check_host
from stages.dataset.download import download
from stages.dataset.extract import extract_dataset
from stages.dataset.limits import DownloadLimits
from stages.errors import DownloadFailed
from tests.support.dataserver import DataServer
from tests.support.fakehub import FakeHub
from tests.support.hostile_archives import (
    EVIL,
    NOT_UNPACKED,
    Case,
    cases,
    empty_video,
    hostile_archives,
    png,
    served_files,
)

av: Any
try:
    av = importlib.import_module("av")
except ImportError:  # pragma: no cover - PyAV is optional
    av = None


@pytest.fixture
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    # The reporter's 2 s pause before answering (for RunPod's late updates) is not tested here.
    original = ProgressReporter.quiet
    monkeypatch.setattr(ProgressReporter, "quiet", lambda self, gap_s=2.0: original(self, 0.0))


@pytest.fixture
def servers() -> Iterator[tuple[DataServer, FakeHub]]:
    """The dataset server and a fake Hub (model downloads of non-tiny models end there)."""
    with DataServer() as data, FakeHub() as hub:
        yield data, hub


def snapshot(tmp: Path, job_dir: Path, models: Path) -> dict[str, tuple[bool, int]]:
    """Everything under `tmp` outside the job folder and the shared model cache (a built tiny
    model lands there from a background thread; no dataset byte can)."""
    out: dict[str, tuple[bool, int]] = {}
    for path in tmp.rglob("*"):
        if path in (job_dir, models) or job_dir in path.parents or models in path.parents:
            continue
        if path in job_dir.parents:  # <root>, <root>/jobs: created for the job folder
            continue
        out[str(path.relative_to(tmp))] = (
            path.is_dir(),
            0 if path.is_dir() else path.stat().st_size,
        )
    return out


@dataclass
class Traced:
    """The traced memory peak of each extraction (`trace_extraction`)."""

    peaks: list[int] = field(default_factory=list)


def trace_extraction(monkeypatch: pytest.MonkeyPatch) -> Traced:
    """Trace the memory of the dataset stage's extraction (planning and writing), nothing else."""
    traced = Traced()

    def extract(*args: Any, **kwargs: Any) -> Any:
        started = not tracemalloc.is_tracing()
        if started:
            tracemalloc.start()
        tracemalloc.reset_peak()
        try:
            return extract_dataset(*args, **kwargs)
        finally:
            traced.peaks.append(tracemalloc.get_traced_memory()[1])
            if started:
                tracemalloc.stop()

    monkeypatch.setattr("stages.dataset.stage.extract_dataset", extract)
    return traced


def count_directory_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every zip whose central directory zipfile parses (its whole list of entries, in
    memory), from now on."""
    read: list[str] = []
    real = vars(zipfile.ZipFile)["_RealGetContents"]

    def parse(self: zipfile.ZipFile) -> None:
        read.append(str(self.filename))
        real(self)

    monkeypatch.setattr("zipfile.ZipFile._RealGetContents", parse)
    return read


def run_job(
    tmp: Path, servers: tuple[DataServer, FakeHub], case: Case, job_id: str
) -> tuple[dict[str, Any], list[Event], float]:
    data, hub = servers
    root = tmp / "root"
    case.serve(data)
    # From the environment, as the worker reads it (a case may set DPS_DATASET_* limits).
    settings = replace(
        Settings.from_env(), root=root, hub_endpoint=hub.url, download_attempts=1, retry_wait_s=0
    )
    options = WorkerOptions(settings=settings, progress_every_s=0)
    body = {
        "model_type": case.model_type,
        "dataset": {
            "type": "precaptioned",
            case.url_field: data.url + "/d.zip",
            "trigger_word": "sqr",
        },
        "training": {"epochs": 1, "resolution": 32, **case.training},
        "output": {"method": "local", "local": {"path": str(tmp / "outputs")}},
    }
    job_dir = root / "jobs" / job_id
    (tmp / "bystander.txt").write_text("must stay as it is")
    before = snapshot(tmp, job_dir, root / "models")
    started = time.perf_counter()
    response = asyncio.run(handle({"id": job_id, "input": body}, options))
    elapsed = time.perf_counter() - started
    assert snapshot(tmp, job_dir, root / "models") == before, "written outside the job folder"
    # An escaped entry would have landed in one of these folders.
    deepest = job_dir / "dataset" / "images" / "x"
    for folder in (deepest, *deepest.parents):
        assert not (folder / EVIL).exists(), folder / EVIL
    assert not any(p.name == EVIL for p in tmp.rglob("*"))
    events = EventStore.on_disk(root).read(job_id)
    return response, events, elapsed


def _report(events: list[Event]) -> dict[str, Any] | None:
    found = [e.data for e in events if e.type == "DATASET_REPORT"]
    return found[-1] if found else None


CASE_NAMES = [
    "zip_slip",
    "absolute_path",
    "symlink_entry",
    "ratio_bomb",
    "too_many_files",
    "truncated_zip",
    "no_media",
    "tar_device_file",
    "decompression_bomb_png",
    "image_named_mp4",
    "captions_invalid_utf8",
    "redirect_to_file_url",
    *hostile_archives(),
]


@pytest.mark.usefixtures("quick")
@pytest.mark.parametrize("name", CASE_NAMES)
def test_hostile_dataset(
    name: str,
    tmp_path: Path,
    servers: tuple[DataServer, FakeHub],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if name == "image_named_mp4" and av is None:
        pytest.skip("PyAV is not installed: videos are not probed, so nothing flags the file")
    case = cases(tmp_path)[name]
    for key, value in case.env.items():
        monkeypatch.setenv(key, value)
    job_id = f"hostile-{name}"
    dataset = tmp_path / "root" / "jobs" / job_id / "dataset"
    if case.patch is not None:
        case.patch(dataset, monkeypatch)
    traced = trace_extraction(monkeypatch)
    directories = count_directory_reads(monkeypatch)
    response, events, _ = run_job(tmp_path, servers, case, job_id)
    assert response["status"] == "failed", response
    error = response["error"]
    assert isinstance(error, str)
    assert "Traceback" not in error
    assert not error.startswith("internal error"), error
    assert str(tmp_path / "root") not in error  # the worker's paths are not the user's business
    if case.names_field:
        assert error.startswith(f"dataset.{case.url_field}: "), error
    for part in case.error:
        assert part in error, (part, error)
    assert events[-1].status == "ERROR", [e.type for e in events]
    report = _report(events)
    if case.report or case.fatal or case.extracted:
        assert report is not None, "no DATASET_REPORT event"
        for problem, file in case.report.items():
            assert file in report["problems"][problem]["examples"], report["problems"]
        if case.fatal:
            assert any(case.fatal in line for line in report["fatal"]), report
    for file, content in case.extracted.items():
        assert content in (dataset / "images" / file).read_bytes(), file
    if any(marker in part for part in case.error for marker in NOT_UNPACKED):
        # Refused archives: nothing was extracted, so there is nothing to report on, and the
        # dataset folder (which the extraction would have created) is not there at all.
        assert report is None
        assert not dataset.exists(), sorted(str(p) for p in dataset.rglob("*"))
    if case.before_zipfile:
        assert directories == [], "zipfile parsed the central directory of a refused zip"
    if case.max_traced is not None:
        assert len(traced.peaks) == 1, traced.peaks
        assert traced.peaks[0] < case.max_traced, f"{traced.peaks[0]} bytes traced"


@pytest.mark.usefixtures("quick")
def test_video_with_no_frames(tmp_path: Path, servers: tuple[DataServer, FakeHub]) -> None:
    video = empty_video()
    if video is None:
        pytest.skip("PyAV is not installed or cannot write a video without frames")
    case = Case(
        served_files({"empty.mp4": video, "empty.txt": b"a clip with no frames"}),
        ["No usable images/videos", "wan13"],
        model_type="wan13",  # a video model: the frame count matters
        url_field="videos_url",
    )
    response, events, _ = run_job(tmp_path, servers, case, "hostile-empty-video")
    assert response["status"] == "failed", response
    for part in case.error:
        assert part in response["error"], response
    report = _report(events)
    assert report is not None
    problems = report["problems"]
    # No frames at all: PyAV either cannot open it (corrupt) or counts 0 (short); both name it.
    named = [
        key
        for key in ("corrupt_videos", "short_videos")
        if "empty.mp4" in problems.get(key, {}).get("examples", [])
    ]
    assert named, problems
    assert report["usable_videos"] == 0


@pytest.mark.usefixtures("quick")
def test_ten_thousand_tiny_images(tmp_path: Path, servers: tuple[DataServer, FakeHub]) -> None:
    """10,000 files are under the default limit (100,000): extracted, every image checked, and
    reported; without captions the precaptioned job stops at the report, before any training."""
    one = png((2, 2))
    entries = {f"set/{i:05d}.png": one for i in range(10_000)}
    case = Case(served_files(entries), ["10000 media file(s) have no caption", "00000.png"])
    response, events, _ = run_job(tmp_path, servers, case, "hostile-10k")
    assert response["status"] == "failed", response
    for part in case.error:
        assert part in response["error"], response["error"]
    report = _report(events)
    assert report is not None
    assert report["images"] == 10_000
    assert report["problems"]["missing_captions"]["count"] == 10_000
    assert len(report["problems"]["missing_captions"]["examples"]) <= 20  # the event stays small


@pytest.mark.parametrize(
    "target",
    ["http://10.0.0.1/x.zip", "http://169.254.169.254/latest/meta-data/", "http://[fd00::1]/x"],
)
def test_redirect_to_a_private_address_is_refused_before_connecting(
    tmp_path: Path, target: str
) -> None:
    """The address is checked before any connection: no traffic leaves loopback."""
    with DataServer() as srv:
        srv.redirects["/old.zip"] = target
        with pytest.raises(DownloadFailed, match="private or reserved network") as info:
            download(
                srv.url + "/old.zip",
                tmp_path / "downloads",
                field="dataset.images_url",
                name="images",
                limits=DownloadLimits(attempts=1, retry_wait_s=0),
            )
    assert str(info.value).startswith("dataset.images_url: ")
    assert not list((tmp_path / "downloads").glob("*.zip"))


def test_a_private_host_can_be_allowed_by_the_operator() -> None:
    policy = address_policy({"DPS_DATASET_ALLOW_HOSTS": " 10.0.0.1 ,Minio.internal"})
    assert policy.allow_hosts == frozenset({"10.0.0.1", "minio.internal"})
    assert address_policy({"DPS_ALLOW_HOSTS": "minio.internal"}).allow_hosts == {"minio.internal"}
    check_host("http://10.0.0.1/x.zip", "dataset.images_url", policy)  # no error, no traffic
    with pytest.raises(DownloadFailed, match=r"10\.0\.0\.2"):
        check_host("http://10.0.0.2/x.zip", "dataset.images_url", policy, error=DownloadFailed)


def test_a_name_that_rebinds_to_a_refused_address_is_caught_at_the_connection(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DNS rebinding: the name is public when checked and loopback when connected. The peer
    address of the real socket is checked before the body is read, so nothing is written."""
    real = socket.getaddrinfo
    lookups: list[str] = []

    def rebinding(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host != "rebind.example":
            return real(host, port, *args, **kwargs)
        lookups.append(host)
        address = "93.184.216.34" if len(lookups) == 1 else "127.0.0.1"
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port or 0))]

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    limits = DownloadLimits(
        attempts=1, retry_wait_s=0, addresses=AddressPolicy(allow_loopback=False)
    )
    with DataServer(files={"/d.zip": b"PK\x05\x06" + bytes(18)}) as srv:
        port = srv.url.rsplit(":", 1)[1]
        with pytest.raises(DownloadFailed, match=r"rebind\.example .*\(127\.0\.0\.1\)"):
            download(
                f"http://rebind.example:{port}/d.zip",
                tmp_path / "downloads",
                field="dataset.images_url",
                name="images",
                limits=limits,
            )
        assert len(lookups) == 2  # the check, then the connect
        assert srv.gets("/d.zip") == [None]  # it connected; the answer was not used
        # Without the rebinding the same rule refuses before connecting.
        with pytest.raises(DownloadFailed, match="private or reserved network"):
            download(
                srv.url + "/d.zip",
                tmp_path / "downloads",
                field="dataset.images_url",
                name="images",
                limits=limits,
            )
        assert srv.gets("/d.zip") == [None]
    written = [p for p in (tmp_path / "downloads").rglob("*") if p.is_file()]
    assert all(p.stat().st_size == 0 for p in written)  # not a byte of the answer kept


def test_loopback_datasets_can_be_turned_off() -> None:
    assert address_policy({}).allow_loopback
    assert not address_policy({"DPS_DATASET_ALLOW_LOOPBACK": "0"}).allow_loopback
    assert not address_policy({"DPS_ALLOW_LOOPBACK": "false"}).allow_loopback
