"""Media and archives made by code: JPEGs, a fading video, zips and tars of files."""

from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path

from PIL import Image


def make_zip(entries: dict[str, bytes], *, method: int = zipfile.ZIP_STORED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return buf.getvalue()


def make_tar(entries: dict[str, bytes], *, gz: bool = False) -> bytes:
    """A tar (or tar.gz) of regular files, in the given order."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz" if gz else "w") as tf:
        for name, data in entries.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def jpeg(size: tuple[int, int] = (96, 64), colour: str = "red") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, "JPEG")
    return buf.getvalue()


def shades_zip(n: int = 4) -> bytes:
    """n captioned 32x32 PNGs of different shades, in a folder: a job's smallest dataset."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for i in range(n):
            img = io.BytesIO()
            Image.new("RGB", (32, 32), (i * 50, 120, 220 - i * 40)).save(img, "PNG")
            zf.writestr(f"set/{i}.png", img.getvalue())
            zf.writestr(f"set/{i}.txt", f"a small square, shade {i}")
    return buf.getvalue()


def fade_video(
    path: Path, frames: int, *, fps: int = 30, size: tuple[int, int] = (48, 40), offset: int = 0
) -> None:
    """An MPEG-4 clip whose frame i is grey level (2*i + offset) mod 256, so a cut can be
    located by its pixels."""
    import av  # noqa: PLC0415 - only the video tests pay for PyAV and numpy
    import numpy as np  # noqa: PLC0415

    width, height = size
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(frames):
            pixels = np.full((height, width, 3), (2 * i + offset) % 256, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
