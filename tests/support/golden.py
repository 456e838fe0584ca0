"""The golden trainer configs: one fixed request per model type, rendered to
`tests/stages/training/golden/`.

    python -m tests.support.golden --regen-golden   # rewrite them (then review the diff)
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from orchestrator.catalogue import ALL_MODEL_TYPES, get_model
from orchestrator.plan import trainer_spec
from orchestrator.request import TrainingRequest, parse_request
from stages.training.config import JobPaths, render

GOLDEN_DIR = Path(__file__).resolve().parents[1] / "stages" / "training" / "golden"
GOLDEN_PATHS = JobPaths(
    config_dir=Path("/work/job/config"),
    output_dir=Path("/work/job/output"),
    models_root=Path("/models"),
    images_dir=Path("/work/job/dataset/images"),
    videos_dir=Path("/work/job/dataset/videos"),
    clips_dir=Path("/work/job/dataset/clips"),
)


def golden_request(model_type: str) -> TrainingRequest:
    """The fixed request each golden file is rendered from: catalogue defaults, both media where
    the model takes them, distinct repeats so a swapped mapping shows."""
    entry = get_model(model_type)
    dataset: dict[str, Any] = {"type": "precaptioned", "image_repeats": 2, "video_repeats": 5}
    if entry.trains_images:
        dataset["images_url"] = "https://example.com/images.zip"
    if entry.trains_videos:
        dataset["videos_url"] = "https://example.com/videos.zip"
    body: dict[str, Any] = {"model_type": model_type, "dataset": dataset}
    if entry.gated:
        body["api_keys"] = {"huggingface_token": "hf_golden"}
    return parse_request(body)


def golden_texts(model_type: str) -> dict[str, str]:
    configs = render(trainer_spec(golden_request(model_type)), GOLDEN_PATHS)
    return {"dataset.toml": configs.dataset_toml(), "main.toml": configs.main_toml()}


def regen_golden(directory: Path = GOLDEN_DIR) -> list[Path]:
    written: list[Path] = []
    for model_type in ALL_MODEL_TYPES:
        folder = directory / model_type
        folder.mkdir(parents=True, exist_ok=True)
        for name, text in golden_texts(model_type).items():
            (folder / name).write_text(text, encoding="utf-8")
            written.append(folder / name)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.support.golden")
    parser.add_argument("--regen-golden", action="store_true", help="rewrite the golden files")
    parser.add_argument("--dir", type=Path, default=GOLDEN_DIR, help="golden folder")
    args = parser.parse_args(argv)
    if not args.regen_golden:
        parser.print_help()
        return 2
    for path in regen_golden(args.dir):
        print(path.relative_to(args.dir))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
