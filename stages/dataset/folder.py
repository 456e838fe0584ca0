"""What a job's dataset folder holds: `images/` and `videos/` of media with same-stem `.txt`
captions, and the completion marker (`.complete.json`, written last) that proves an extraction
finished and still matches what is on disk."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

from events.atomic import write_atomic

IMAGE_EXTS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"})
VIDEO_EXTS = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm"})
MEDIA_EXTS = IMAGE_EXTS | VIDEO_EXTS
CAPTION_EXT = ".txt"
COMPLETE_MARKER = ".complete.json"


def listing_digest(dataset_dir: Path) -> tuple[int, int, str]:
    """(images, videos, digest over names and sizes) of the extracted media.

    Media files only: later stages add to these folders without making the extraction stale
    (the captioner writes `.txt` files, diffusion-pipe its latent `cache/`), and a marker that
    counted them would make every redelivery download, extract and caption again."""
    digest = hashlib.sha256()
    counts = []
    for sub in ("images", "videos"):
        folder = dataset_dir / sub
        entries = sorted(os.scandir(folder), key=lambda e: e.name) if folder.is_dir() else []
        media = [
            e
            for e in entries
            if Path(e.name).suffix.lower() in MEDIA_EXTS and e.is_file(follow_symlinks=False)
        ]
        counts.append(len(media))
        for e in media:
            digest.update(f"{sub}/{e.name}\0{e.stat().st_size}\n".encode())
    return counts[0], counts[1], digest.hexdigest()


def write_marker(dataset_dir: Path) -> Path:
    """Record what the dataset folder holds; written last, so its presence means complete."""
    images, videos, digest = listing_digest(dataset_dir)
    marker = dataset_dir / COMPLETE_MARKER
    write_atomic(marker, json.dumps({"images": images, "videos": videos, "digest": digest}))
    return marker


def marker_matches(dataset_dir: Path) -> bool:
    try:
        recorded = json.loads((dataset_dir / COMPLETE_MARKER).read_text("utf-8"))
        images, videos, digest = listing_digest(dataset_dir)
    except (OSError, ValueError):
        return False
    return bool(recorded == {"images": images, "videos": videos, "digest": digest})


def iter_media(folder: Path, exts: frozenset[str]) -> Iterator[Path]:
    if folder.is_dir():
        yield from sorted(p for p in folder.iterdir() if p.suffix.lower() in exts and p.is_file())
