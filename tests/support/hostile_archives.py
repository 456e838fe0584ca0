"""The hostile datasets `tests/e2e/test_hostile_data.py` serves: each `Case` is what the server
holds, what the answer must say, and what the report must list (archives built byte by byte,
so they can be as hostile as a real attacker's)."""

from __future__ import annotations

import errno
import functools
import importlib
import io
import stat
import struct
import tarfile
import uuid
import warnings
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tests.support.archives import TAR_END, pax_record, tar_block, tar_member, tar_padded
from tests.support.dataserver import DataServer
from tests.support.full_disk import fill_volume, written
from tests.support.media import make_tar, make_zip

av: Any
try:
    av = importlib.import_module("av")
except ImportError:  # pragma: no cover - PyAV is optional
    av = None

FIELD = "dataset.images_url"
# A name no product code would ever write: if it shows up anywhere, an entry escaped.
EVIL = f"evil-{uuid.uuid4().hex[:8]}.png"


def png(size: tuple[int, int] = (8, 8), mode: str = "RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size).save(buf, "PNG")
    return buf.getvalue()


def symlink_zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("ok.png", png())
        zf.writestr("ok.txt", "a caption")
        info = zipfile.ZipInfo("link.png")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, "/etc/passwd")
    return buf.getvalue()


def device_tar() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        info = tarfile.TarInfo("null.png")
        info.type = tarfile.CHRTYPE
        info.devmajor, info.devminor = 1, 3
        tf.addfile(info)
    return buf.getvalue()


def empty_video() -> bytes | None:
    """An MP4 with a video stream and no frames, or None when PyAV cannot write one."""
    if av is None:
        return None
    path = Path(f"/tmp/{uuid.uuid4().hex}.mp4")
    try:
        container = av.open(str(path), "w")
        stream = container.add_stream("mpeg4", rate=16)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        container.start_encoding()
        for packet in stream.encode():
            container.mux(packet)
        container.close()
        return path.read_bytes() if path.stat().st_size else None
    except Exception:
        return None
    finally:
        path.unlink(missing_ok=True)


@dataclass
class Case:
    """One hostile dataset and what the job must say about it."""

    serve: Callable[[DataServer], None]  # puts the dataset at /d.zip (or sets up a redirect)
    error: list[str]  # substrings of the FAILED error, all required
    report: dict[str, str] = field(default_factory=dict)  # report problem -> a file it names
    fatal: str | None = None  # a substring of the report's "fatal" list
    model_type: str = "tiny"
    url_field: str = "images_url"
    env: dict[str, str] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)  # over epochs 1, resolution 32
    # The error starts with the URL field ("dataset.images_url: ...").
    names_field: bool = False
    # Unpacked: file -> a fragment of its content in the job's dataset/images.
    extracted: dict[str, bytes] = field(default_factory=dict)
    max_traced: int | None = None  # bytes: the extraction's traced memory peak
    # Refused from the zip's end records, before zipfile parses its central directory.
    before_zipfile: bool = False
    # Set up before the job (the job's dataset folder, the monkeypatch): a full disk.
    patch: Callable[[Path, pytest.MonkeyPatch], None] | None = None


def served_files(entries: dict[str, bytes]) -> Callable[[DataServer], None]:
    data = make_zip(entries)
    return lambda srv: srv.files.__setitem__("/d.zip", data)


def _raw(data: bytes) -> Callable[[DataServer], None]:
    return lambda srv: srv.files.__setitem__("/d.zip", data)


def _truncated() -> bytes:
    data = make_zip({"a.png": png((64, 64)) * 20, "a.txt": b"cap"})
    return data[: len(data) // 2]


def _absolute_zip(target: Path) -> bytes:
    return make_zip({"ok.png": png(), "ok.txt": b"cap", str(target / EVIL): png()})


@functools.cache
def _bomb_png() -> bytes:
    """Just over twice Pillow's MAX_IMAGE_PIXELS (181 MP in 22 KiB): Image.open refuses it as
    a decompression bomb, as it does in the trainer. (Below that the trainer decodes it, and
    the report only warns that it is huge.)"""
    limit = Image.MAX_IMAGE_PIXELS or 89_478_485  # None: unlimited; the default then
    side = int((2 * limit) ** 0.5) + 64
    buf = io.BytesIO()
    Image.new("1", (side, side)).save(buf, "PNG")
    return buf.getvalue()


def _redirect(target: str) -> Callable[[DataServer], None]:
    return lambda srv: srv.redirects.__setitem__("/d.zip", target)


REFUSED = "the archive was refused"
# Errors that mean the archive was not unpacked: nothing may be left in the dataset folder.
NOT_UNPACKED = (REFUSED, "damaged or truncated", "only other archives", "the disk is full")
MiB = 1 << 20

# --- tar headers -----------------------------------------------------------------------------

X, G = tarfile.XHDTYPE, tarfile.XGLTYPE
L, K = tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK


def _captioned() -> bytes:
    return tar_member("a.png", png()) + tar_member("a.txt", b"a caption") + TAR_END


def _claimed(kind: bytes) -> bytes:
    """A tar whose first header member claims 1 TiB: no read of it can succeed (the archive is
    a few KiB), so only a refusal made before reading says "tar header"."""
    return tar_block(kind, 1 << 40) + _captioned()


@functools.cache
def _header_bomb(kind: bytes, size: int = 32 * MiB) -> bytes:
    """A tar.gz whose first header member really holds `size` bytes (one PAX comment record,
    or a GNU long name) before a captioned image: 32 MiB of header in about 32 KiB."""
    if kind in (X, G):
        prefix = f"{size} comment=".encode()
        head, fill, tail = prefix, b"a", b"\n"
    else:
        head, fill, tail = b"", b"n", b"\0"
    body = size - len(head) - len(tail)
    gz = zlib.compressobj(6, zlib.DEFLATED, 31)  # wbits 31: the gzip container
    parts = [gz.compress(tar_block(kind, size) + head)]
    parts += [gz.compress(fill * MiB) for _ in range(body // MiB)]
    parts.append(gz.compress(fill * (body % MiB) + tail + b"\0" * (-size % 512)))
    parts += [gz.compress(_captioned()), gz.flush()]
    return b"".join(parts)


def _chained_pax() -> bytes:
    """Two 600 KiB PAX headers before one entry: each under the 1 MiB cap, together over it."""
    one = pax_record("comment", "a" * (600 << 10))
    headers = (tar_block(X, len(one)) + tar_padded(one)) * 2
    return _gz(headers + _captioned())


def _globals_in_all() -> bytes:
    """Three 400 KiB global headers, each before its own entry: 1.2 MiB of global fields."""
    one = pax_record("comment", "g" * (400 << 10))
    parts = [
        tar_block(G, len(one)) + tar_padded(one) + tar_member(f"{i}.mp4", b"v") for i in range(3)
    ]
    return _gz(b"".join(parts) + TAR_END)


def _gz(data: bytes) -> bytes:
    gz = zlib.compressobj(6, zlib.DEFLATED, 31)
    return gz.compress(data) + gz.flush()


# --- zip end records -------------------------------------------------------------------------


def _eocd_at(data: bytes) -> int:
    return data.rindex(b"PK\x05\x06")


def _claims_entries(entries: dict[str, bytes], count: int) -> bytes:
    """The zip with its end record's entry counts replaced by `count`."""
    data = bytearray(make_zip(entries))
    at = _eocd_at(bytes(data))
    data[at + 8 : at + 12] = struct.pack("<HH", count, count)
    return bytes(data)


def _zip64_claims(count: int) -> bytes:
    """A captioned image whose zip64 end record claims `count` entries (the classic end record
    defers to it with 0xFFFF counts)."""
    base = make_zip({"a.png": png(), "a.txt": b"a caption"})
    at = _eocd_at(base)
    cd_size, cd_offset = struct.unpack_from("<LL", base, at + 12)
    body = base[:at]
    record = struct.pack(
        "<4sQ2H2L4Q", b"PK\x06\x06", 44, 45, 45, 0, 0, count, count, cd_size, cd_offset
    )
    locator = struct.pack("<4sLQL", b"PK\x06\x07", 0, len(body), 1)
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0)
    return body + record + locator + end


# --- names -----------------------------------------------------------------------------------


def _zip_names(names: list[str]) -> bytes:
    """A zip with these entry names in order, duplicates included."""
    buf = io.BytesIO()
    with warnings.catch_warnings(), zipfile.ZipFile(buf, "w") as zf:
        warnings.simplefilter("ignore")  # zipfile warns of a duplicate name, and writes it
        for i, name in enumerate(names):
            zf.writestr(name, png() if name.endswith(".png") else f"entry {i}".encode())
    return buf.getvalue()


# --- a full disk -----------------------------------------------------------------------------


def _disk_full(code: int, suffix: str) -> Callable[[Path, pytest.MonkeyPatch], None]:
    """Every file written under the job's dataset folder whose name ends with `suffix` finds
    the volume full after two bytes: what the OS answers, at the call the product makes."""

    def patch(dataset: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        fill_volume(
            monkeypatch,
            code,
            lambda path, mode: (
                written(mode) and dataset in path.parents and path.name.endswith(suffix)
            ),
        )

    return patch


def _lazy(build: Callable[[], bytes]) -> Callable[[DataServer], None]:
    """Serve what `build` makes, built only for the case that runs."""
    return lambda srv: srv.files.__setitem__("/d.zip", build())


def cases(tmp: Path) -> dict[str, Case]:
    bomb = make_zip({"bomb.png": b"\0" * (8 << 20)}, method=zipfile.ZIP_DEFLATED)
    return {
        "zip_slip": Case(
            served_files({"ok.png": png(), "ok.txt": b"cap", "../" * 8 + EVIL: png()}),
            [FIELD, REFUSED, "points outside the archive", EVIL],
        ),
        "absolute_path": Case(
            _raw(_absolute_zip(tmp)), [FIELD, REFUSED, "has an absolute path", EVIL]
        ),
        "symlink_entry": Case(_raw(symlink_zip()), [FIELD, REFUSED, '"link.png" is a symbolic']),
        "ratio_bomb": Case(_raw(bomb), [FIELD, REFUSED, '"bomb.png" expands', "bomb?"]),
        "too_many_files": Case(
            served_files({f"{i}.txt": b"c" for i in range(30)}),
            [FIELD, REFUSED, "more than 20 files"],
            env={"DPS_DATASET_MAX_FILES": "20"},
        ),
        "truncated_zip": Case(_raw(_truncated()), [FIELD, "damaged or truncated"]),
        "no_media": Case(
            served_files({"notes.txt": b"just text", "readme.md": b"# hi", "data.csv": b"a,b"}),
            ["No images/videos found in the dataset"],
            fatal="No images/videos found",
        ),
        "tar_device_file": Case(_raw(device_tar()), [FIELD, REFUSED, '"null.png" is a device']),
        "decompression_bomb_png": Case(
            _lazy(lambda: make_zip({"huge.png": _bomb_png(), "huge.txt": b"a huge image"})),
            ["No usable images/videos", "image_too_large"],
            report={"image_too_large": "huge.png"},
        ),
        # PyAV opens a PNG as a one-frame stream: a video model drops it as too short.
        "image_named_mp4": Case(
            served_files({"clip.mp4": png(), "clip.txt": b"not a video"}),
            ["No usable images/videos", "wan13", "short_videos"],
            report={"short_videos": "clip.mp4"},
            model_type="wan13",
            url_field="videos_url",
        ),
        "captions_invalid_utf8": Case(
            served_files({"a.png": png((32, 32)), "a.txt": b"caf\xe9 \xff\xfe broken"}),
            ["not UTF-8", "a.png"],
            report={"captions_not_utf8": "a.png"},
            fatal="not UTF-8",
        ),
        "redirect_to_file_url": Case(
            _redirect("file:///etc/passwd"), [FIELD, 'redirected to a "file" URL']
        ),
        **hostile_archives(),
    }


def _header_case(data: Callable[[], bytes], size: str, **kw: Any) -> Case:
    return Case(
        _lazy(data),
        [
            REFUSED,
            f"it holds a tar header (PAX or GNU long name) of {size}, over the 1.0 MiB limit",
            "re-create it with an ordinary tar or zip tool",
            "nothing was extracted",
        ],
        names_field=True,
        **kw,
    )


def _memory_case(kind: bytes, **kw: Any) -> Case:
    # A model that is downloaded (from the fake Hub, which fails at once), not built on the
    # CPU: nothing else allocates while the archive is planned.
    kw.setdefault("model_type", "sdxl")
    return _header_case(lambda: _header_bomb(kind), "32.0 MiB", max_traced=8 * MiB, **kw)


def hostile_archives() -> dict[str, Case]:
    """The archive classes bounded by the hardening, two or more examples each."""
    too_many = [REFUSED, "files and folders", "nothing was extracted"]
    bomb = [REFUSED, "it expands more than 200x: a compression bomb?", "nothing was extracted"]
    twice = [REFUSED, "is in the archive twice", "keep one", "nothing was extracted"]
    only_archives = [
        "the archive holds no images or videos, only other archives",
        "nested archives are not unpacked: put the media files in one archive",
    ]
    full = [
        "the disk is full: the dataset did not fit on the worker's volume",
        "free space on the volume or use a smaller dataset; nothing was kept",
    ]
    wan: dict[str, Any] = {"model_type": "wan13", "url_field": "videos_url"}
    thirty = {f"{i}.png": b"i" for i in range(30)}

    def zeros(count: int, size: int) -> dict[str, bytes]:  # each entry under the 1 MiB floor
        return {f"{i}.png": b"\0" * size for i in range(count)}

    return {
        # PAX extended headers (x): read whole by tarfile, so capped before it reads them.
        "pax_x_header_claims_1tib": _header_case(lambda: _claimed(X), "1024.0 GiB"),
        "pax_x_header_32mib_in_gz": _memory_case(X),
        "pax_x_headers_chained_over_the_cap": Case(
            _lazy(_chained_pax),
            [REFUSED, "tar headers of more than 1.0 MiB before one entry", "re-create it"],
            names_field=True,
        ),
        # PAX global headers (g): copied onto every member after them.
        "pax_g_header_claims_1tib": _header_case(lambda: _claimed(G), "1024.0 GiB", **wan),
        "pax_g_header_32mib_in_gz": _memory_case(G, **wan),
        "pax_g_headers_over_the_cap_in_all": Case(
            _lazy(_globals_in_all),
            [REFUSED, "tar global headers of more than 1.0 MiB in all", "re-create it"],
            names_field=True,
            **wan,
        ),
        # GNU long names (L) and long link names (K).
        "gnu_long_name_claims_1tib": _header_case(lambda: _claimed(L), "1024.0 GiB"),
        "gnu_long_name_32mib_in_gz": _memory_case(L),
        "gnu_long_link_claims_1tib": _header_case(lambda: _claimed(K), "1024.0 GiB", **wan),
        # The zip end record's entry count, refused before zipfile parses the directory.
        "zip_end_record_claims_65535_entries": Case(
            _lazy(lambda: _claims_entries({"a.png": png(), "a.txt": b"cap"}, 0xFFFF)),
            [*too_many, "more than 1000 files"],
            names_field=True,
            before_zipfile=True,
            env={"DPS_DATASET_MAX_FILES": "1000"},
        ),
        "zip64_end_record_claims_2e40_entries": Case(
            _lazy(lambda: _zip64_claims(1 << 40)),
            [*too_many, "more than 100000 files"],
            names_field=True,
            before_zipfile=True,
            **wan,
        ),
        # An end record that says less than the directory holds: the records are counted.
        "zip_end_record_says_1_of_30": Case(
            _lazy(lambda: _claims_entries(thirty, 1)),
            [*too_many, "more than 20 files"],
            names_field=True,
            before_zipfile=True,
            env={"DPS_DATASET_MAX_FILES": "20"},
        ),
        "zip_end_record_says_0_of_30": Case(
            _lazy(lambda: _claims_entries(thirty, 0)),
            [*too_many, "more than 20 files"],
            names_field=True,
            before_zipfile=True,
            env={"DPS_DATASET_MAX_FILES": "20"},
            **wan,
        ),
        # The archive's ratio as a whole: every entry under the 1 MiB per-entry floor.
        "ratio_many_small_entries_zip": Case(
            _lazy(lambda: make_zip(zeros(64, 128 << 10), method=zipfile.ZIP_DEFLATED)),
            bomb,
            names_field=True,
        ),
        "ratio_many_smaller_entries_zip": Case(
            _lazy(lambda: make_zip(zeros(256, 64 << 10), method=zipfile.ZIP_DEFLATED)),
            bomb,
            names_field=True,
            **wan,
        ),
        "ratio_many_small_entries_tar_gz": Case(
            _lazy(lambda: make_tar(zeros(64, 128 << 10), gz=True)), bomb, names_field=True
        ),
        "ratio_many_tiny_entries_tar_gz": Case(
            _lazy(lambda: make_tar(zeros(400, 16 << 10), gz=True)), bomb, names_field=True
        ),
        # Two entries for one file: which is meant? The entry is named.
        "duplicate_name_zip": Case(
            _lazy(lambda: _zip_names(["x.png", "x.txt", "x.png"])),
            [*twice, 'entry "x.png" is in the archive twice; keep one'],
            names_field=True,
        ),
        "duplicate_backslash_and_slash_zip": Case(
            _lazy(lambda: _zip_names(["d/x.png", "d\\x.png"])),
            [*twice, 'entry "d\\\\x.png" is in the archive twice (also as "d/x.png")'],
            names_field=True,
        ),
        "duplicate_dot_slash_tar": Case(
            _lazy(lambda: tar_member("x.png", png()) + tar_member("./x.png", png()) + TAR_END),
            [*twice, 'entry "./x.png" is in the archive twice (also as "x.png")'],
            names_field=True,
        ),
        "duplicate_video_zip": Case(
            _lazy(lambda: _zip_names(["clip.mp4", "clip.txt", "clip.mp4"])),
            [*twice, 'entry "clip.mp4" is in the archive twice'],
            names_field=True,
            **wan,
        ),
        # A colon is an ordinary character (only "C:/" and "C:\\" are drive roots): unpacked as
        # a_b.png. The jobs then stop in the dataset stage, after the report.
        "colon_names_are_plain_names": Case(
            _lazy(
                lambda: make_zip(
                    {"a:b.png": png(), "a:b.txt": b"one", "C:d.png": png(), "C:d.txt": b"two"}
                )
            ),
            ["training.batch_size: 0 steps per epoch", "lower training.batch_size"],
            training={"batch_size": 8},  # 2 images: the batch is larger than the dataset
            extracted={"a_b.png": b"\x89PNG", "a_b.txt": b"sqr, one", "C_d.txt": b"sqr, two"},
        ),
        "colon_names_in_a_folder": Case(
            _lazy(lambda: make_zip({"set:1/x:y.png": png(), "ok.png": png(), "ok.txt": b"c"})),
            ["1 media file(s) have no caption", "x_y.png", "add the captions"],
            report={"missing_captions": "x_y.png"},
            extracted={"x_y.png": b"\x89PNG", "ok.txt": b"sqr, c"},
        ),
        # Archives inside the archive are not unpacked: said, not "no images found" later.
        "only_nested_archives_zip": Case(
            _lazy(
                lambda: make_zip(
                    {"inner.zip": make_zip({"a.png": png(), "a.txt": b"c"}), "more.tar.gz": b"x"}
                )
            ),
            [*only_archives, "(inner.zip, more.tar.gz)"],
            names_field=True,
        ),
        "only_nested_archives_tar_gz": Case(
            _lazy(
                lambda: make_tar(
                    {n: b"x" for n in ("a.zip", "b.tgz", "c.7z", "d.rar", "notes.txt")}, gz=True
                )
            ),
            [*only_archives, "(a.zip, b.tgz, c.7z, ...)"],
            names_field=True,
            **wan,
        ),
        # The volume fills up while unpacking: nothing half-written is kept, no path shown.
        "disk_full_on_a_media_file": Case(
            served_files({"a.png": png(), "a.txt": b"cap", "b.png": png(), "b.txt": b"cap"}),
            full,
            names_field=True,
            patch=_disk_full(errno.ENOSPC, ".png"),
        ),
        "disk_full_on_a_caption_quota": Case(
            served_files({"a.png": png(), "a.txt": b"cap", "b.png": png(), "b.txt": b"cap"}),
            full,
            names_field=True,
            patch=_disk_full(errno.EDQUOT, ".txt"),
        ),
    }
