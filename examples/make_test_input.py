"""Write `test_input.json` (RunPod's local test job) and `.runpod/tests.json` (the Hub's test),
the same job, complete in itself.

    python examples/make_test_input.py            # rewrite both files
    python examples/make_test_input.py --check    # exit 1 if a committed file differs

The job trains the `tiny` model (minipipe, the CPU stand-in in the image) on four captioned
32x32 images carried inline as a `data:` URL, and keeps the results in the job's folder
(`output.local` without a path), so `python handler.py` succeeds on any machine, with no
host to serve the dataset and no volume. The bytes are built by hand (BMP images in a stored
zip with fixed dates), so every machine writes the same file whatever its Pillow or zlib.
"""

from __future__ import annotations

import base64
import io
import json
import struct
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TEST_INPUT = REPO / "test_input.json"
HUB_TESTS = REPO / ".runpod" / "tests.json"
# The Hub's per-test timeout includes the worker's cold start (pulling this CUDA image, the
# SDK's fitness checks): worker-vllm raised its 30 s to 300 s for that reason. The tiny job
# itself takes well under a minute.
HUB_TIMEOUT_MS = 600_000
HUB_CONFIG = {
    "gpuTypeId": "NVIDIA GeForce RTX 4090",
    "gpuCount": 1,
    "allowedCudaVersions": ["12.8"],
}
SIZE = 32
# (background, square) colours and the caption that names them.
IMAGES = (
    ((240, 240, 240), (200, 30, 30), "a red square on a white background"),
    ((20, 20, 20), (40, 160, 60), "a green square on a black background"),
    ((250, 230, 120), (30, 60, 200), "a blue square on a yellow background"),
    ((90, 90, 200), (250, 250, 250), "a white square on a blue background"),
)


def bmp(background: tuple[int, int, int], square: tuple[int, int, int]) -> bytes:
    """A 24-bit SIZE x SIZE BMP: `square` in the middle half, `background` around it."""
    rows = []
    for y in range(SIZE):
        row = bytearray()
        for x in range(SIZE):
            inside = SIZE // 4 <= x < 3 * SIZE // 4 and SIZE // 4 <= y < 3 * SIZE // 4
            r, g, b = square if inside else background
            row += bytes((b, g, r))
        row += b"\0" * (-len(row) % 4)  # rows are padded to 4 bytes
        rows.append(bytes(row))
    pixels = b"".join(reversed(rows))  # bottom-up
    header = struct.pack("<2sIHHI", b"BM", 54 + len(pixels), 0, 0, 54)
    info = struct.pack("<IiiHHIIiiII", 40, SIZE, SIZE, 1, 24, 0, len(pixels), 2835, 2835, 0, 0)
    return header + info + pixels


def dataset_zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for i, (background, square, caption) in enumerate(IMAGES):
            for name, data in ((f"{i}.bmp", bmp(background, square)), (f"{i}.txt", caption)):
                entry = zipfile.ZipInfo(f"squares/{name}", date_time=(2024, 1, 1, 0, 0, 0))
                entry.external_attr = 0o644 << 16
                zf.writestr(entry, data)
    return buf.getvalue()


def test_input() -> dict[str, object]:
    url = "data:application/zip;base64," + base64.b64encode(dataset_zip()).decode("ascii")
    return {
        "input": {
            "model_type": "tiny",
            "dataset": {"type": "precaptioned", "images_url": url, "trigger_word": "sqr"},
            "training": {"epochs": 2, "resolution": 32},
            "output": {"method": "local"},
        }
    }


def hub_tests() -> dict[str, object]:
    test = {
        "name": "a tiny LoRA trains and completes (inline dataset, CPU model)",
        "input": test_input()["input"],
        "timeout": HUB_TIMEOUT_MS,
    }
    return {"tests": [test], "config": HUB_CONFIG}


def render() -> dict[Path, str]:
    """Each file's content."""
    return {
        TEST_INPUT: json.dumps(test_input(), indent=2) + "\n",
        HUB_TESTS: json.dumps(hub_tests(), indent=2) + "\n",
    }


def main(argv: list[str]) -> int:
    files = render()
    if "--check" in argv:
        stale = [p for p, t in files.items() if not p.is_file() or p.read_text("utf-8") != t]
        for path in stale:
            name = path.relative_to(REPO)
            print(f"{name} is stale: run python examples/make_test_input.py", file=sys.stderr)
        return 1 if stale else 0
    for path, text in files.items():
        path.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
