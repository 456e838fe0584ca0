"""`python -m bench` (make bench): every benchmark, one table, also written to bench/results.md."""

from pathlib import Path

from bench import (
    caption_bench,
    dataset_bench,
    download_bench,
    events_bench,
    gemini_bench,
    mirror_bench,
    overlap_bench,
    publish_bench,
    shared_repo_bench,
    trainer_bench,
    verify_bench,
    worker_bench,
)
from bench.table import publish

if __name__ == "__main__":
    results = []
    for module in (
        events_bench,
        trainer_bench,
        dataset_bench,
        publish_bench,
        verify_bench,
        mirror_bench,
        shared_repo_bench,
        download_bench,
        overlap_bench,
        caption_bench,
        gemini_bench,
        worker_bench,
    ):
        print(f"running {module.__name__} ...", flush=True)
        results.extend(module.run())
    publish(results, Path(__file__).resolve().parent / "results.md")
