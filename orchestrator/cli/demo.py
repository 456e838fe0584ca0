"""`make demo`: a real training job, end to end, on the CPU, in about a minute.

1. Makes a small dataset (images drawn by code, with captions), zips it and serves it on
   127.0.0.1.
2. Starts localpod (a local RunPod-compatible endpoint) running the real handler.py under the
   real RunPod SDK worker loop.
3. Submits a `tiny` job (minipipe, the CPU trainer) with `local` output and follows its
   progress the way a client polls RunPod's /status.
4. Prints the response, the LoRA file, and the job's timeline from its event log.
Everything it starts is stopped at the end; its files stay in ./demo-root.
"""

from __future__ import annotations

import functools
import io
import json
import math
import shutil
import sys
import threading
import time
import zipfile
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw
from rich.console import Console
from rich.panel import Panel

from events.audit import audit
from events.store import EventStore
from localpod import LocalPod
from orchestrator.cli.events import timeline_table
from orchestrator.cli.submit import call_endpoint, follow_job

HERE = Path(__file__).resolve().parents[2]
DEMO = HERE / "demo-root"
JOB_ID_FILE = "last-job-id"
COLORS = [("red", (220, 40, 40)), ("green", (40, 180, 60)), ("blue", (40, 80, 220))]
SHAPES = ["circle", "square", "triangle", "diamond"]

console = Console(width=None if sys.stdout.isatty() else 120)


def make_dataset(count: int = 24, size: int = 64) -> bytes:
    """A zip of `count` PNGs (coloured shapes on varied backgrounds) with one caption each."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for i in range(count):
            name, rgb = COLORS[i % len(COLORS)]
            shape = SHAPES[(i // len(COLORS)) % len(SHAPES)]
            shade = 200 + (i * 7) % 55
            image = Image.new("RGB", (size, size), (shade, shade, 255 - shade // 2))
            draw = ImageDraw.Draw(image)
            box = (size // 5, size // 5, size * 4 // 5, size * 4 // 5)
            if shape == "circle":
                draw.ellipse(box, fill=rgb)
            elif shape == "square":
                draw.rectangle(box, fill=rgb)
            else:
                c, r = size / 2, size * 0.32
                corners = 3 if shape == "triangle" else 4
                draw.polygon(
                    [
                        (
                            c + r * math.sin(2 * math.pi * k / corners),
                            c - r * math.cos(2 * math.pi * k / corners),
                        )
                        for k in range(corners)
                    ],
                    fill=rgb,
                )
            png = io.BytesIO()
            image.save(png, "PNG")
            folder = "shapes" if i % 2 else "more/shapes"  # subfolders are flattened
            zf.writestr(f"{folder}/{i:02d}.png", png.getvalue())
            zf.writestr(f"{folder}/{i:02d}.txt", f"a {name} {shape} on a pale background")
    return buf.getvalue()


class StaticServer:
    """Serves one folder on 127.0.0.1 (the dataset URL a user would host somewhere)."""

    def __init__(self, folder: Path) -> None:
        handler = functools.partial(_QuietHandler, directory=str(folder))
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> StaticServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def request_body(dataset_url: str, outputs: Path) -> dict[str, Any]:
    return {
        "input": {
            "model_type": "tiny",
            "dataset": {
                "type": "precaptioned",
                "images_url": dataset_url,
                "trigger_word": "shp",
            },
            "training": {"epochs": 4, "resolution": 64, "save_every_n_epochs": 2},
            "output": {"method": "local", "local": {"path": str(outputs)}},
        }
    }


def main() -> None:
    started = time.monotonic()
    shutil.rmtree(DEMO, ignore_errors=True)
    (DEMO / "www").mkdir(parents=True)
    (DEMO / "www" / "dataset.zip").write_bytes(make_dataset())
    console.rule("diffusion-pipe-serverless demo: a real tiny LoRA, trained on the CPU")
    root, outputs = DEMO / "root", DEMO / "outputs"
    with (
        StaticServer(DEMO / "www") as www,
        LocalPod(HERE / "handler.py", env={"DPS_ROOT": str(root)}, log_dir=DEMO / "logs") as pod,
    ):
        console.print(f"dataset served at {www.url}/dataset.zip (24 captioned images)")
        console.print(f"local RunPod endpoint at {pod.url} (worker log: {DEMO / 'logs'})")
        body = request_body(f"{www.url}/dataset.zip", outputs)
        console.print_json(json.dumps(body))
        queued = call_endpoint("POST", f"{pod.url}/run", "demo", body)
        job_id = str(queued["id"])
        console.print(f"submitted job {job_id}; following /status:")
        final = follow_job(pod.url, "demo", job_id, 0.5, console)
    (DEMO / JOB_ID_FILE).write_text(job_id)
    console.rule("response (RunPod /status output)")
    console.print_json(json.dumps(final))
    output = final.get("output") or {}
    if final.get("status") != "COMPLETED" or output.get("status") != "success":
        console.print(f"[red]the demo job did not complete:[/] {final.get('error') or output}")
        raise SystemExit(1)
    lora = Path(output["output"]["safetensors_url"].removeprefix("file://"))
    console.rule("the trained LoRA")
    console.print(f"{lora}  ({lora.stat().st_size:,} bytes)")
    events = EventStore.on_disk(root).read(job_id)
    report = audit(events)
    console.rule(f"timeline (dpserve events {root / 'jobs' / job_id})")
    console.print(timeline_table(report, events))
    verdict = "[green]verified[/]" if report.ok else f"[red]problems:[/] {report.problems}"
    console.print(f"{verdict}: seq, hash chain and transitions")
    console.print(
        Panel(
            f"done in {time.monotonic() - started:.0f}s; nothing is left running.\n"
            f"Try: .venv/bin/dpserve events {root / 'jobs' / job_id} --verify",
            title="demo complete",
        )
    )


if __name__ == "__main__":
    main()
