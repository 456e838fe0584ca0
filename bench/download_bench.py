"""Base-model download speed: the weights stage against `hf download`, same repo, same run.

A repo of a few hundred MB (three `.safetensors` of random bytes, 60-120 MB, and a dozen small
json/txt files) is seeded into the loopback Hub through the real client's upload path
(`HfApi.upload_folder`; with the fake's Xet CAS, hf_xet chunks it client-side). Then, in rounds
that alternate which goes first:

- ours: the weights stage's `ensure_model` with a `HubFiles` source naming every file (a fresh
  models root each round);
- baseline: `hf download <repo> --local-dir ...`, the installed CLI (a fresh HF_HOME each round).

Both run as a fresh process with the same environment (HF_ENDPOINT at the fake, HF_HOME fresh,
so no client-side chunk cache carries over), so both pay interpreter start and imports (ours
imports only the weights stage); ours also reports its start, download and exit separately.
Every round's files are checked against the uploaded bytes. A second set of rounds adds 100 ms
before each file's bytes and each xorb range (`FakeHub.delay_s`, both servers): the round trips
a Hub far away costs per request, which a client that fetches one file at a time pays in full.
Where the fake Hub has a CAS (`hub.cas`), the CAS requests of each run are counted: both must
have taken the Xet path.

Standalone: `.venv/bin/python -m bench.download_bench`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import HfApi

from bench.table import Result, secs
from tests.support.fakehub import FakeHub  # the loopback Hub lives with the tests

ROOT = Path(__file__).resolve().parent.parent  # the repository
HF_CLI = Path(sys.executable).with_name("hf")
REPO = "bench/weights"
TOKEN = "hf_bench_write"  # the fake accepts any token; the stage gets none (a public repo)
ROUNDS = 4
FAR_ROUNDS = 3
FAR_DELAY_S = 0.1  # FakeHub.delay_s: a round trip to a Hub far away, per content request
LARGE_MB = (120, 90, 60)  # three safetensors of random bytes: nothing dedupes
SMALL_FILES = 12
GOAL = 1.0


@dataclass
class Run:
    seconds: float  # process start -> exit, seen from here
    # ours only: process start -> download start (imports), the download, its end -> exit
    inner: tuple[float, float, float] | None
    cas: int | None  # CAS requests during the run (None: the fake has no CAS)
    gets: int  # file-content GETs on the Hub's resolve route (regular files)
    heads: int  # metadata HEADs on it (hf skips them for Xet files: its tree listing has them)


def repo_files() -> dict[str, bytes]:
    """The seeded repo: big random weights plus small configs, named as a diffusers repo."""
    files: dict[str, bytes] = {}
    for i, mb in enumerate(LARGE_MB):
        files[f"part{i}/diffusion_pytorch_model.safetensors"] = os.urandom(mb * 2**20)
    for i in range(SMALL_FILES):
        body = {"_class_name": f"Part{i}", "noise": os.urandom(512 * (i + 1)).hex()}
        name = f"part{i % 3}/config_{i}.json" if i % 2 else f"tokenizer/vocab_{i}.txt"
        files[name] = json.dumps(body).encode()
    return files


def seed(hub: FakeHub, files: dict[str, bytes], folder: Path) -> float:
    """Upload `files` as the user's client would (upload_folder); returns the seconds it took."""
    for name, data in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    api = HfApi(endpoint=hub.url, token=TOKEN)
    start = time.perf_counter()
    api.create_repo(REPO, exist_ok=True)
    api.upload_folder(repo_id=REPO, folder_path=folder, commit_message="bench weights")
    return time.perf_counter() - start


def _env(hub: FakeHub, home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_"))}
    env.update(HF_ENDPOINT=hub.url, HF_HOME=str(home), HF_HUB_DISABLE_TELEMETRY="1")
    env["PYTHONPATH"] = str(ROOT)
    return env


def _cas_count(hub: FakeHub) -> int | None:
    if not getattr(hub, "xet", False):  # a fake Hub without a CAS (before issue 14)
        return None
    return int(hub.cas.count())


def _timed(hub: FakeHub, argv: list[str], env: dict[str, str], log: Path) -> Run:
    cas0, gets0, heads0 = _cas_count(hub), _resolves(hub, "GET"), _resolves(hub, "HEAD")
    start = time.monotonic()
    with log.open("wb") as out:
        done = subprocess.run(
            argv, check=False, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT
        )
    end = time.monotonic()
    seconds = end - start
    if done.returncode != 0:
        raise RuntimeError(f"{argv[:3]} failed ({done.returncode}):\n{log.read_text()[-3000:]}")
    cas1 = _cas_count(hub)
    inner = None
    for line in log.read_text().splitlines():
        if line.startswith("INNER "):
            began, ended = (float(x) for x in line.split()[1:3])
            inner = (began - start, ended - began, end - ended)
    cas = None if cas0 is None or cas1 is None else cas1 - cas0
    gets, heads = _resolves(hub, "GET") - gets0, _resolves(hub, "HEAD") - heads0
    return Run(seconds, inner, cas, gets, heads)


def _resolves(hub: FakeHub, method: str) -> int:
    return hub.count(method, "/resolve/")


def ours(hub: FakeHub, names: list[str], work: Path) -> tuple[Run, Path]:
    models = work / "models"
    argv = [sys.executable, "-c", OURS_CHILD, str(models), REPO, *names]
    return _timed(hub, argv, _env(hub, work / "hf-home"), work / "ours.log"), models / "weights"


def hf_download(hub: FakeHub, work: Path) -> tuple[Run, Path]:
    dest = work / "local"
    argv = [str(HF_CLI), "download", REPO, "--local-dir", str(dest)]
    return _timed(hub, argv, _env(hub, work / "hf-home"), work / "hf.log"), dest


def check(folder: Path, files: dict[str, bytes], *, full: bool) -> None:
    """Every file is there with the uploaded size (and the uploaded bytes, when `full`)."""
    for name, data in files.items():
        path = folder / name
        if path.stat().st_size != len(data):
            raise RuntimeError(f"{path}: {path.stat().st_size} bytes, uploaded {len(data)}")
        if full and hashlib.sha256(path.read_bytes()).digest() != hashlib.sha256(data).digest():
            raise RuntimeError(f"{path}: not the uploaded bytes")


def _median(runs: list[Run], attr: str) -> float:
    return statistics.median(float(getattr(r, attr)) for r in runs)


def _rounds(
    hub: FakeHub, files: dict[str, bytes], tmp: Path, rounds: int, label: str
) -> tuple[list[Run], list[Run]]:
    """`rounds` of ours and hf download, alternating which goes first; every result checked."""
    mine: list[Run] = []
    theirs: list[Run] = []
    for r in range(rounds):
        order = ("ours", "hf") if r % 2 == 0 else ("hf", "ours")
        for who in order:
            work = tmp / f"{label}-{who}{r}"
            work.mkdir()
            if who == "ours":
                got, folder = ours(hub, sorted(files), work)
                mine.append(got)
            else:
                got, folder = hf_download(hub, work)
                theirs.append(got)
            check(folder, files, full=r == 0)
            print(
                f"  {label} round {r} {who:4}: {got.seconds:.2f} s"
                + (
                    " (start {:.2f}, download {:.2f}, exit {:.2f})".format(*got.inner)
                    if got.inner is not None
                    else ""
                )
                + f", CAS requests {got.cas}, resolve GET {got.gets} HEAD {got.heads}",
                flush=True,
            )
            shutil.rmtree(work)  # keep the disk free
    return mine, theirs


def run() -> list[Result]:
    files = repo_files()
    total_mb = sum(len(d) for d in files.values()) / 2**20
    with FakeHub() as hub, tempfile.TemporaryDirectory(prefix="dps-bench-dl-") as tmp_name:
        tmp = Path(tmp_name)
        upload_s = seed(hub, files, tmp / "upload")
        cas_after_upload = _cas_count(hub)
        near = _rounds(hub, files, tmp, ROUNDS, "loopback")
        hub.delay_s = FAR_DELAY_S  # before each file's bytes and each xorb range, both servers
        far = _rounds(hub, files, tmp, FAR_ROUNDS, "far")
    what = f"{len(LARGE_MB)} safetensors + {SMALL_FILES} small files, {total_mb:.0f} MB"
    return [
        _result(
            f"base-model download, {total_mb:.0f} MB repo (weights stage)",
            near,
            f"median of {ROUNDS} alternating rounds; {what}; "
            + _xet_note(*near, cas_after_upload)
            + f"; seeded by upload_folder in {upload_s:.1f} s",
            total_mb,
        ),
        _result(
            f"  same, a far Hub ({FAR_DELAY_S * 1000:.0f} ms before each file or xorb range)",
            far,
            f"median of {FAR_ROUNDS} rounds; the round trips a far Hub adds per request",
            total_mb,
        ),
    ]


def _result(name: str, runs: tuple[list[Run], list[Run]], note: str, total_mb: float) -> Result:
    mine, theirs = runs
    ours_s, hf_s = _median(mine, "seconds"), _median(theirs, "seconds")
    inner = statistics.median(r.inner[1] for r in mine if r.inner is not None)
    return Result(
        name,
        secs(ours_s),
        f"hf download {secs(hf_s)}",
        ours_s / hf_s,
        GOAL,
        f"{note}; each a fresh process (ours' download itself {inner:.2f} s); "
        f"{total_mb / ours_s:.0f} vs {total_mb / hf_s:.0f} MB/s",
    )


def _xet_note(mine: list[Run], theirs: list[Run], after_upload: int | None) -> str:
    if after_upload is None:
        return "no CAS in the fake Hub: plain HTTP resolve both ways"
    ours_cas = min(r.cas or 0 for r in mine)
    hf_cas = min(r.cas or 0 for r in theirs)
    if ours_cas == 0 or hf_cas == 0:
        raise RuntimeError(
            f"a download skipped Xet: CAS requests ours {ours_cas}, hf {hf_cas} (per run, min)"
        )
    return (
        f"Xet both ways (CAS requests per run: ours {ours_cas}, hf {hf_cas}; upload "
        f"{after_upload}; resolve GET+HEAD ours {mine[0].gets}+{mine[0].heads}, hf "
        f"{theirs[0].gets}+{theirs[0].heads})"
    )


# The child process for "ours": only what a worker imports for the weights stage (the bench's own
# imports, the fake Hub and rich among them, would otherwise count against it).
OURS_CHILD = """
import os, sys, time
from pathlib import Path
from stages.weights.ensure import ensure_model
from stages.weights.inputs import WeightsOptions
from stages.weights.sources import HubFiles

models_root, repo, names = Path(sys.argv[1]), sys.argv[2], sys.argv[3:]
options = WeightsOptions(
    models_root=models_root,
    hub_endpoint=os.environ["HF_ENDPOINT"],
    hf_cache_dir=models_root / "no-runpod-cache",
)
start = time.monotonic()  # one clock for every process here: the parent reads these
result = ensure_model("bench", [HubFiles(repo, "weights", files=tuple(names))], options=options)
print(f"INNER {start:.4f} {time.monotonic():.4f} {result.source} {result.bytes}", flush=True)
"""


if __name__ == "__main__":
    from bench.table import publish

    publish(run(), Path(tempfile.gettempdir()) / "dps-bench-download.md")
