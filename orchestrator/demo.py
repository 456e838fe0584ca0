"""`make demo`: run, for real, what this version has built, and say what it has not.

1. Validate every bundled example request (and show the error a bad one gets).
2. Run a rehearsal job through the real runner, event store and lease: it is stopped
   mid-training, delivered again, resumes (attempt 2) and completes. Its stages are
   stand-ins that write small files; nothing is downloaded or trained.
3. Replay and audit the recorded event log in examples/recorded-job/.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from rich.console import Console
from rich.panel import Panel

from events.model import Event
from events.replay import AuditReport, audit
from events.store import EventStore, parse_blob
from orchestrator.cli import timeline_table
from orchestrator.logs import configure_logging
from orchestrator.rehearsal import Download, Publish, Train, Weights
from orchestrator.request import RequestError, parse_request
from orchestrator.runner import Stage, run_job

HERE = Path(__file__).resolve().parent.parent
EXAMPLES = HERE / "examples"
RECORDED = EXAMPLES / "recorded-job" / "events.jsonl"
NOT_BUILT = """[bold]Not built yet[/] (later issues):
  - dataset download, safe extraction, pre-flight report, JoyCaption / Gemini captions
  - base-model downloads, the diffusion-pipe driver and minipipe (the CPU trainer)
  - publishing to Hugging Face / S3, the UPDATES/ mirror
  - the RunPod handler end to end and the local endpoint (localpod)
  A real end-to-end CPU job will replace step 2 once those exist."""

console = Console(width=None if sys.stdout.isatty() else 120)


def validate_examples() -> None:
    console.rule("1. bundled example requests")
    for path in sorted(EXAMPLES.glob("*.json")):
        request = parse_request(json.loads(path.read_text()))
        training = request.masked()["training"]
        console.print(
            f"[green]valid[/] {path.name:<28} model_type={request.model_type:<13} "
            f"epochs={training['epochs']} lr={training['learning_rate']}"
        )
    bad = {"input": {"model_type": "wan14b_i2v", "dataset": {"type": "videos"}}}
    try:
        parse_request(bad)
    except RequestError as exc:
        console.print(f"[yellow]a bad request is refused before any GPU time:[/]\n{exc}")


def rehearse(root: Path) -> None:
    console.rule("2. rehearsal job: interrupted, delivered again, resumed")
    shutil.rmtree(root, ignore_errors=True)
    published = root / "published"

    def stages(interrupt_at: int | None = None) -> list[Stage]:
        return [
            Download(),
            Weights(),
            Train(epochs=3, interrupt_at=interrupt_at),
            Publish(published),
        ]

    first = run_job(root=root, job_id="demo-job", stages=stages(interrupt_at=2))
    console.print(f"first delivery : {first.status.value} (attempt {first.attempt})")
    second = run_job(root=root, job_id="demo-job", stages=stages())
    console.print(
        f"second delivery: {second.status.value} (attempt {second.attempt}), "
        f"skipped {second.skipped}, ran {second.ran}"
    )
    third = run_job(root=root, job_id="demo-job", stages=stages())
    console.print(f"third delivery : {third.status.value}, ran {third.ran or 'nothing'}")
    events = EventStore.on_disk(root).read("demo-job")
    _show(audit(events), events)
    console.print(f"log: {root / 'jobs' / 'demo-job' / 'events.jsonl'}")


def replay_recorded() -> None:
    console.rule("3. recorded event log")
    loaded = parse_blob(RECORDED.read_bytes(), str(RECORDED))
    report = audit(loaded.events)
    _show(report, loaded.events)
    if not report.ok:
        raise SystemExit(1)


def _show(report: AuditReport, events: list[Event]) -> None:
    console.print(timeline_table(report, events))
    verdict = "[green]verified[/]" if report.ok else f"[red]problems:[/] {report.problems}"
    console.print(f"{verdict}: seq, hash chain and transitions")


def main() -> None:
    configure_logging(json_lines=False)
    validate_examples()
    rehearse(HERE / "demo-root")
    replay_recorded()
    console.print(Panel(NOT_BUILT, title="what this demo did not do"))


if __name__ == "__main__":
    main()
