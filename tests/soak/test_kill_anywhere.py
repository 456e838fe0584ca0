"""Kill anywhere: the same `tiny` job, 20 times through localpod, its worker SIGKILLed at a
different point each time, in every stage. Every run must end COMPLETE on redelivery, with a
LoRA that loads and is finite, a log that audits, one COMPLETE, `UPDATES/` equal to the
projection of the log, and nothing written outside the job and output folders.

The worker is this file run as a script: `handler.py`'s handler with one difference, a tiny
random LLaVA (tests/tiny_llava.py) as the image captioner, because the production handler
takes JoyCaption from the Hub and has no setting that points it at a local model. The job's
dataset has images without captions, so every run goes through captioning.

Kill moments are chosen by watching the job's events.jsonl (or its train.log) for a marker,
then waiting a delay: the table `KILLS`. Soak test: `make test-slow` (`pytest -m soak`).
"""

from __future__ import annotations

import io
import os
import re
import shutil
import signal
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from events.audit import audit
from events.model import Event
from events.store import EventStore
from tests.support.paths import REPO

CAPTIONER_ENV = "KILL_ANYWHERE_CAPTIONER"  # the tiny LLaVA folder the worker captions with
STEP_SLEEP_S = "0.05"  # minipipe's pause per step, on top of the step itself
IMAGES = 3
EPOCHS = 3  # 3 images x 3 epochs = 9 steps, a checkpoint and an epoch save every 3
TOTAL_STEPS = IMAGES * EPOCHS
TERMINAL = ("COMPLETE", "ERROR", "CANCELLED")
DOWNLOAD_PIECES, PIECE_DELAY_S = 10, 0.3


@dataclass(frozen=True)
class Kill:
    name: str
    needle: str  # a marker in the source file: kill once it appears `count` times ...
    delay_s: float = 0.0  # ... and this long after
    source: str = "events"  # "events": events.jsonl; "train": logs/train.log
    count: int = 1
    slow_download: bool = False  # the data server sends the zip in pieces with pauses
    fresh_model: bool = False  # delete the built tiny model first, so this job builds it


def ev(kind: str) -> str:
    return f'"type":"{kind}"'


KILLS: tuple[Kill, ...] = (
    # A slow download takes DOWNLOAD_PIECES x PIECE_DELAY_S = 3 s.
    Kill("download: first bytes", ev("DOWNLOADING"), 0.3, slow_download=True),
    Kill("download: half way", '"bytes_done":0,', 1.5, slow_download=True),
    Kill("download: near the end", '"bytes_done":0,', 2.6, slow_download=True),
    Kill("extraction", '"message":"extracting"'),
    Kill("media check", '"message":"checking media and captions"'),
    Kill("dataset report written", ev("DATASET_REPORT")),
    Kill("captioning: loading the captioner", ev("CAPTIONING")),
    Kill("captioning: generating", ev("CAPTIONING"), 0.3),
    Kill("model build (in the background)", '"stage":"prepare"', 0.2, fresh_model=True),
    Kill("model download stage", ev("MODEL_DOWNLOAD"), fresh_model=True),
    Kill("trainer starting", ev("TRAINING"), 0.5),
    Kill("training: step 1, before any checkpoint", "steps: 1 ", source="train"),
    Kill("training: step 2, before any checkpoint", "steps: 2 ", 0.05, source="train"),
    Kill("first checkpoint recorded", ev("CHECKPOINT")),
    Kill("first checkpoint + 2 steps", ev("CHECKPOINT"), 0.3),
    Kill("first epoch save", ev("EPOCH_SAVED")),
    Kill("training: between the 2nd and 3rd checkpoint", "steps: 7 ", source="train"),
    Kill("last epoch save", ev("EPOCH_SAVED"), count=EPOCHS),
    Kill("upload (local output)", ev("UPLOADING")),
    Kill("mirror flush (COMPLETE appended)", ev("COMPLETE")),
)


# --- the worker: handler.py plus a tiny captioner ---------------------------------------------
def _captions_factory(inputs: Any) -> Any:
    from stages.captions.joycaption import JoyCaptionSettings, load_captioner  # noqa: PLC0415
    from stages.captions.stage import Captions  # noqa: PLC0415

    folder = os.environ[CAPTIONER_ENV]
    return Captions(
        inputs,
        load_image_captioner=lambda: load_captioner(folder, device="cpu"),
        joycaption=JoyCaptionSettings(do_sample=False, max_new_tokens=5, batch_size=2),
    )


async def handler(job: dict[str, Any]) -> dict[str, Any]:
    import runpod  # noqa: PLC0415

    from orchestrator.settings import Settings  # noqa: PLC0415
    from orchestrator.worker import WorkerOptions, handle  # noqa: PLC0415

    def send(payload: dict[str, Any]) -> None:
        runpod.serverless.progress_update(job, payload)

    options = WorkerOptions(settings=Settings.from_env(), captions_factory=_captions_factory)
    return await handle(job, options, send)


# --- the test -----------------------------------------------------------------------------
def uncaptioned_zip(n: int = IMAGES) -> bytes:
    from PIL import Image  # noqa: PLC0415

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for i in range(n):
            img = io.BytesIO()
            Image.new("RGB", (32, 32), (i * 60, 120, 220 - i * 50)).save(img, "PNG")
            zf.writestr(f"set/{i}.png", img.getvalue())
    return buf.getvalue()


@dataclass
class RunReport:
    name: str
    job_id: str
    seconds: float
    status_at_kill: str = "-"
    deliveries: int = 0
    redone_steps: int = 0
    problems: list[str] = field(default_factory=list)


@dataclass
class Harness:
    tmp: Path
    pod: Any
    data: Any
    body: dict[str, Any]

    @property
    def root(self) -> Path:
        return self.tmp / "root"

    def submit(self) -> str:
        answer = httpx.post(f"{self.pod.url}/run", json=self.body, headers={"Authorization": "k"})
        answer.raise_for_status()
        return str(answer.json()["id"])

    def source(self, job_id: str, kind: str) -> Path:
        job = self.root / "jobs" / job_id
        return job / "events.jsonl" if kind == "events" else job / "logs" / "train.log"

    def run(self, kill: Kill | None) -> RunReport:
        self.data.chunk_delay_s.clear()
        if kill is not None and kill.slow_download:
            self.data.chunk_delay_s["/d.zip"] = PIECE_DELAY_S
        if kill is not None and kill.fresh_model:
            shutil.rmtree(self.root / "models", ignore_errors=True)
        # The shared model cache may change only in a run that has to build the model.
        builds_model = not (self.root / "models").exists()
        self.pod.wait_ready(120)
        before = _tree(self.tmp)
        started = time.monotonic()
        job_id = self.submit()
        report = RunReport(kill.name if kill else "baseline", job_id, 0.0)
        if kill is not None:
            report.status_at_kill = self._kill_at(job_id, kill)
        final = self.pod.wait_for(job_id, timeout=240)
        report.seconds = time.monotonic() - started
        self.data.chunk_delay_s.clear()
        report.deliveries = len(self.pod.events.deliveries.get(job_id, []))
        self._check(job_id, final, report, before, killed=kill is not None, models=builds_model)
        return report

    def _kill_at(self, job_id: str, kill: Kill) -> str:
        path = self.source(job_id, kill.source)
        needle = kill.needle.encode()
        deadline = time.monotonic() + 180
        while not (path.exists() and path.read_bytes().count(needle) >= kill.count):
            if time.monotonic() > deadline:
                raise AssertionError(f"{kill.name}: {kill.needle!r} never appeared")
            time.sleep(0.02)
        time.sleep(kill.delay_s)
        self.pod.kill_worker(signal.SIGKILL)
        events = EventStore.on_disk(self.root).read(job_id)
        return f"{events[-1].type}/{events[-1].status}" if events else "-"

    def _check(
        self,
        job_id: str,
        final: dict[str, Any],
        report: RunReport,
        before: set[Path],
        *,
        killed: bool,
        models: bool,
    ) -> None:
        problems = report.problems
        if final.get("status") != "COMPLETED" or final["output"].get("status") != "success":
            problems.append(f"ended {final.get('status')}: {str(final)[:300]}")
            return
        lora = Path(final["output"]["output"]["safetensors_url"].removeprefix("file://"))
        problems += _lora_problems(lora)
        events = EventStore.on_disk(self.root).read(job_id)
        result = audit(events)
        if not result.ok:
            problems.append(f"audit: {result}")
        if [e.seq for e in events] != list(range(1, len(events) + 1)):
            problems.append("seq not contiguous")
        terminal = [e.type for e in events if e.type in TERMINAL]
        if terminal != ["COMPLETE"] or events[-1].type != "COMPLETE":
            problems.append(f"terminal events {terminal}, last {events[-1].type}")
        resumed = report.deliveries >= 2 and any(e.type == "RESUMED" for e in events)
        if killed and not report.status_at_kill.startswith("COMPLETE") and not resumed:
            # The kill interrupted the job: a second delivery must have finished it.
            problems.append(f"not resumed (deliveries {report.deliveries})")
        problems += _updates_problems(self.root / "jobs" / job_id, events)
        train_log = self.source(job_id, "train").read_text()
        steps = _steps(train_log)
        report.redone_steps = len(steps) - len(set(steps))
        # Killed after the final checkpoint, before the answer: diffusion-pipe, resumed, trains
        # one more epoch (its loader state is the next epoch). The stage says so; those steps
        # are new ones, not work lost, and the redone count still counts repeats only.
        extra = any(e.type == "PROGRESS" and "extra_epoch" in e.data for e in events)
        total = TOTAL_STEPS + (IMAGES if extra else 0)
        # A SIGKILLed worker loses the trainer's lines it had not read yet: a step missing from
        # the log is accounted for only when the checkpoint the retry resumed from holds it.
        missing = set(range(1, total + 1)) - set(steps)
        resumed_at = _resumed_at(train_log)
        held = bool(missing) and resumed_at is not None and max(missing) < resumed_at
        if set(steps) - set(range(1, total + 1)) or (missing and not held):
            problems.append(f"steps trained {sorted(set(steps))}")
        allowed = [self.root / "jobs" / job_id, self.tmp / "outputs" / job_id, self.tmp / "logs"]
        if models:
            allowed.append(self.root / "models")
        stray = [
            p for p in _tree(self.tmp) - before if not any(p.is_relative_to(a) for a in allowed)
        ]
        if stray:
            problems.append(f"files outside the job folder: {sorted(map(str, stray))[:5]}")


def _tree(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*") if p.is_file()}


def _steps(log: str) -> list[int]:
    return [int(line.split()[1]) for line in log.splitlines() if line.startswith("steps: ")]


def _resumed_at(log: str) -> int | None:
    """The step the last resume started at ("Resuming at epoch: E, step: S"), if any."""
    found = re.findall(r"Resuming at epoch: \d+, step: (\d+)", log)
    return int(found[-1]) if found else None


def _lora_problems(lora: Path) -> list[str]:
    from safetensors.torch import load_file  # noqa: PLC0415

    if not lora.is_file():
        return [f"no LoRA at {lora}"]
    try:
        tensors = load_file(str(lora))
    except Exception as exc:  # a torn or foreign file
        return [f"LoRA does not load: {exc}"]
    if not tensors:
        return ["LoRA has no tensors"]
    bad = [k for k, t in tensors.items() if not bool(t.float().isfinite().all())]
    return [f"non-finite tensors {bad[:3]}"] if bad else []


def _updates_problems(job_dir: Path, events: list[Event]) -> list[str]:
    """`UPDATES/` must be exactly the projection of the final log (what LocalMirror writes)."""
    import json  # noqa: PLC0415

    from events.projections.base import MirrorSettings  # noqa: PLC0415
    from events.projections.updates import ProjectionState, project  # noqa: PLC0415
    from events.redact import Redactor  # noqa: PLC0415

    expected: dict[str, bytes] = {}
    state = ProjectionState()
    for event in events:
        state, update = project(
            state, event, repo_id="local", thinning=MirrorSettings().thinning, redactor=Redactor(())
        )
        if update is not None:
            expected[Path(update.path).name] = update.content
            for gone in update.deletes:
                expected.pop(Path(gone).name, None)
    folder = job_dir / "UPDATES"
    found = {p.name: p.read_bytes() for p in folder.iterdir() if not p.name.startswith(".")}
    problems = []
    if set(found) != set(expected):
        extra, missing = sorted(set(found) - set(expected)), sorted(set(expected) - set(found))
        problems.append(f"UPDATES names differ: extra {extra[:3]}, missing {missing[:3]}")
    # Compared as JSON: a live event's data keeps its insertion order, a replayed one's is
    # sorted, so a file rewritten after a redelivery may order its keys differently.
    problems += [
        f"UPDATES/{n} differs from the log"
        for n in expected
        if n in found and json.loads(found[n]) != json.loads(expected[n])
    ]
    by_seq = {e.seq: e for e in events}
    for name, content in found.items():
        doc = json.loads(content)
        logged = by_seq.get(doc.get("seq"))
        if logged is None or logged.hash != doc.get("hash"):
            problems.append(f"UPDATES/{name}: seq {doc.get('seq')} not in the log with that hash")
    if found and not sorted(found)[-1].endswith("_COMPLETE.json"):
        problems.append(f"last UPDATES file {sorted(found)[-1]}")
    return problems


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    from localpod import LocalPod  # noqa: PLC0415
    from tests.support.dataserver import DataServer  # noqa: PLC0415
    from tests.support.tiny_llava import build_tiny_llava  # noqa: PLC0415

    llava = build_tiny_llava(tmp_path / "tiny-llava")
    work = tmp_path / "work"
    work.mkdir()
    archive = uncaptioned_zip()
    with DataServer(chunk_size=-(-len(archive) // DOWNLOAD_PIECES)) as data:
        data.files["/d.zip"] = archive
        pod = LocalPod(
            Path(__file__),
            cwd=REPO,
            env={
                "DPS_ROOT": str(work / "root"),
                # Both dead-worker timeouts scaled down alike (60 s each by default).
                "DPS_LEASE_TTL_S": "3",
                "DPS_MODEL_LOCK_TTL_S": "3",
                "MINIPIPE_STEP_SLEEP": STEP_SLEEP_S,
                "PYTHONPATH": str(REPO),
                CAPTIONER_ENV: str(llava),
            },
            log_dir=work / "logs",
            ping_timeout_s=None,
        )
        body = {
            "input": {
                "model_type": "tiny",
                "dataset": {"type": "images", "images_url": data.url + "/d.zip"},
                "training": {
                    "epochs": EPOCHS,
                    "resolution": 32,
                    "checkpoint_every_n_epochs": 1,
                },
                "output": {"method": "local", "local": {"path": str(work / "outputs")}},
            }
        }
        with pod:
            yield Harness(work, pod, data, body)


def _line(r: RunReport) -> str:
    head = f"{r.name:46} {r.status_at_kill:26} {r.deliveries:5} {r.redone_steps:6} "
    return f"{head}{r.seconds:6.1f}  {'; '.join(r.problems) or 'ok'}"


@pytest.mark.soak
@pytest.mark.timeout(900)
def test_kill_anywhere(harness: Harness) -> None:
    assert len(KILLS) == 20
    assert len({k.name for k in KILLS}) == 20
    print(f"\n{'run':46} {'last event at kill':26} {'deliv':>5} {'redone':>6} {'secs':>6}")
    warm = harness.run(None)  # builds the tiny model and warms the worker
    warm.name = "warm-up"
    print(_line(warm), flush=True)
    baseline = harness.run(None)
    print(_line(baseline), flush=True)
    killed = []
    for kill in KILLS:
        killed.append(harness.run(kill))
        print(_line(killed[-1]), flush=True)
    completed = sum(1 for r in killed if not r.problems)
    redone = max(r.redone_steps for r in killed)
    extra = max(r.seconds - baseline.seconds for r in killed)
    summary = f"{completed}/{len(killed)} completed, max redone steps {redone}"
    print(f"{summary}, max extra seconds {extra:.1f}")
    assert not warm.problems, warm.problems
    assert not baseline.problems, baseline.problems
    assert completed == len(killed), [(r.name, r.problems) for r in killed if r.problems]
    # A checkpoint every epoch (3 steps): a resumed run redoes at most the steps since it.
    assert redone <= IMAGES


if __name__ == "__main__":  # pragma: no cover - the worker process (see the module docstring)
    import runpod

    from orchestrator.logs import configure_logging

    configure_logging(json_lines=True)
    runpod.serverless.start({"handler": handler})
