"""Dataset preparation speed against the bare minimum the same work needs.

Ours: download over loopback (stages.dataset.download) + safe extraction + the pre-flight check
(every image decoded) + dataset.toml written via stages.training.config. Baseline: `curl` to a
file plus `unzip`, the same archive from the same server. The archive (~200 noise JPEGs, about
200 MB) is generated once and cached in the temp folder.
"""

from __future__ import annotations

import io
import shutil
import statistics
import subprocess
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from bench.table import Result, secs
from orchestrator.plan import dataset_inputs, trainer_spec
from orchestrator.request import effective_training, parse_request
from orchestrator.settings import Settings
from stages.dataset.check import build_report
from stages.dataset.stage import prepare
from stages.training.config import JobPaths, render, write_configs
from tests.support.dataserver import DataServer

IMAGES = 200
SIDE = (1408, 1024)  # noise at quality 90: about 1 MB per JPEG
ROUNDS = 3
CACHE = Path(tempfile.gettempdir()) / f"dps-bench-dataset-{IMAGES}-{SIDE[0]}x{SIDE[1]}.zip"


def dataset_zip() -> bytes:
    if CACHE.is_file():
        return CACHE.read_bytes()
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for i in range(IMAGES):
            pixels = rng.integers(0, 256, (SIDE[1], SIDE[0], 3), dtype=np.uint8)
            jpeg = io.BytesIO()
            Image.fromarray(pixels).save(jpeg, "JPEG", quality=90)
            zf.writestr(f"set/img{i:03}.jpg", jpeg.getvalue())
            zf.writestr(f"set/img{i:03}.txt", f"a noisy picture number {i}")
    data = buf.getvalue()
    tmp = CACHE.with_suffix(".tmp")
    tmp.write_bytes(data)
    tmp.replace(CACHE)
    return data


def run() -> list[Result]:
    data = dataset_zip()
    have_tools = shutil.which("curl") and shutil.which("unzip")
    with DataServer() as srv, tempfile.TemporaryDirectory() as tmp_name:
        srv.files["/d.zip"] = data
        url = srv.url + "/d.zip"
        tmp = Path(tmp_name)
        request = parse_request(
            {"model_type": "qwen", "dataset": {"type": "precaptioned", "images_url": url}}
        )
        training = effective_training(request)
        inputs = dataset_inputs(request, training, Settings(root=tmp))
        spec = trainer_spec(request, training)
        ours_times: list[float] = []
        check_times: list[float] = []
        bare_times: list[float] = []
        for r in range(ROUNDS):
            root = tmp / f"ours{r}"
            start = time.perf_counter()
            report = prepare(inputs, root / "jobs" / "j")
            paths = JobPaths.for_job(root, "j")
            configs = render(spec, paths, image_count=report.usable_images, video_count=0)
            write_configs(configs, paths.config_dir)
            ours_times.append(time.perf_counter() - start)
            assert report.usable_images == IMAGES, report.to_event()

            start = time.perf_counter()
            build_report(paths.images_dir, paths.videos_dir, inputs.rules)
            check_times.append(time.perf_counter() - start)
            shutil.rmtree(root)

            if have_tools:
                bare = tmp / f"bare{r}"
                bare.mkdir()
                start = time.perf_counter()
                subprocess.run(["curl", "-sSf", "-o", str(bare / "d.zip"), url], check=True)
                unzip = ["unzip", "-qo", str(bare / "d.zip"), "-d", str(bare / "x")]
                subprocess.run(unzip, check=True)
                bare_times.append(time.perf_counter() - start)
                shutil.rmtree(bare)
    ours = statistics.median(ours_times)
    check = statistics.median(check_times)
    size = len(data) / 2**20
    name = f"dataset prep: {IMAGES} JPEGs, {size:.0f} MB zip"
    return [
        Result(
            name,
            secs(ours),
            f"curl + unzip {secs(statistics.median(bare_times))}" if bare_times else "skipped",
            ours / statistics.median(bare_times) if bare_times else None,
            1.5,
            "" if bare_times else "curl or unzip not found",
        ),
        Result(
            "dataset check alone (open every image)",
            f"{IMAGES / check:.0f} images/s",
            "-",
            None,
            None,
            f"{secs(check)}; download+extract+toml {secs(ours - check)}",
        ),
    ]


def main() -> None:
    for r in run():
        print(r)


if __name__ == "__main__":
    main()
