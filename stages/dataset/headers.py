"""Bounds on an archive's headers, checked before the standard library reads them.

`zipfile.ZipFile` reads a zip's whole central directory into memory and parses every record of
it when it opens; `tarfile` reads a PAX extended header or a GNU long name whole, and keeps
every member with a copy of its PAX header. A small archive could make either spend gigabytes
before extract.py's planning sees one entry. Here:

- `check_zip_directory` finds the end records as zipfile does, refuses an entry count over
  `max_files` (classic or zip64 end record) or a central directory larger than that many files
  need, then walks the directory record by record without keeping it (an end record may lie);
- `TarBudget.tarinfo` is a `TarInfo` class for `tarfile.open(tarinfo=...)` that refuses a header
  member over `max_header_bytes` before it is read (and chains of them, global headers in all,
  sparse files), drops the PAX header copy tarfile keeps on each member, and counts the header
  bytes so the archive's ratio check includes them.

Refusals are `ArchiveRefused` worded as extract.py words its own (`refused`).
"""

from __future__ import annotations

import struct
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, NoReturn

from stages.dataset.limits import ExtractLimits, human
from stages.errors import ArchiveRefused

MAX_NAME = 4096  # PATH_MAX: a longer entry name is no file name, and tarfile keeps every name
CD_BYTES_PER_FILE = 1024  # an honest central directory record is 46 bytes plus a name
MAX_CHAIN = 8  # header members before one entry: GNU tar and pax writers use at most three
MAX_GLOBAL_FIELDS = 64  # tarfile copies the global PAX fields onto every member

_EOCD = struct.Struct("<4s4H2LH")  # the classic end of central directory record
_LOCATOR = struct.Struct("<4sLQL")  # the zip64 end record locator, just before it
_EOCD64 = struct.Struct("<4sQ2H2L4Q")  # the zip64 end record, just before the locator
_CENTRAL_RECORD = 46  # fixed part of a central directory record; 3 lengths at offset 28
_HEADER_TYPES = frozenset(
    {
        tarfile.XHDTYPE,
        tarfile.XGLTYPE,
        tarfile.SOLARIS_XHDTYPE,
        tarfile.GNUTYPE_LONGNAME,
        tarfile.GNUTYPE_LONGLINK,
    }
)


def show(name: str) -> str:
    """An entry name for a message: escaped, and when long its start and its end (the file
    name, which is what a user looks for in the archive) around "..."."""
    text = name.encode("unicode_escape").decode("ascii")
    return text if len(text) <= 80 else f"{text[:38]}...{text[-39:]}"


def refused(field: str, why: str) -> ArchiveRefused:
    return ArchiveRefused(f"{field}: the archive was refused: {why}; nothing was extracted")


def too_many_files(field: str, limits: ExtractLimits) -> ArchiveRefused:
    return refused(
        field,
        f"more than {limits.max_files} files and folders: split the dataset or leave out what "
        "is not media (an operator can raise DPS_DATASET_MAX_FILES)",
    )


# --- zip ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Directory:
    entries: int  # as the end record claims
    size: int
    start: int


def _directory(f: IO[bytes]) -> _Directory | None:
    """Where zipfile will read the central directory from: its end records, found its way."""
    size = f.seek(0, 2)
    if size < _EOCD.size:
        return None
    f.seek(size - _EOCD.size)
    record = f.read()
    at = size - _EOCD.size
    if record[:4] != b"PK\x05\x06" or record[-2:] != b"\0\0":  # a comment follows it
        base = max(size - (1 << 16) - _EOCD.size, 0)
        f.seek(base)
        tail = f.read()
        found = tail.rfind(b"PK\x05\x06")
        if found < 0 or len(tail) - found < _EOCD.size:
            return None
        record, at = tail[found : found + _EOCD.size], base + found
    fields = _EOCD.unpack(record)
    entries, cd_size, cd_offset_end = fields[4], fields[5], at - fields[5]
    if at >= _EOCD64.size + _LOCATOR.size:
        f.seek(at - _EOCD64.size - _LOCATOR.size)
        both = f.read(_EOCD64.size + _LOCATOR.size)
        if both[:4] == b"PK\x06\x06" and both[_EOCD64.size : _EOCD64.size + 4] == b"PK\x06\x07":
            wide = _EOCD64.unpack(both[: _EOCD64.size])
            entries, cd_size = wide[7], wide[8]
            cd_offset_end = at - _EOCD64.size - _LOCATOR.size - cd_size
    return _Directory(entries, cd_size, cd_offset_end)


def _records(f: IO[bytes], directory: _Directory, stop: int) -> int:
    """The records zipfile would parse (it reads until `size` bytes), counted up to `stop`."""
    f.seek(directory.start)
    count = done = 0
    while done < directory.size and count < stop:
        head = f.read(_CENTRAL_RECORD)
        if len(head) != _CENTRAL_RECORD or head[:4] != b"PK\x01\x02":
            break  # zipfile stops here too, and says the archive is damaged
        skip = sum(struct.unpack_from("<3H", head, 28))  # name, extra field, comment
        f.seek(skip, 1)
        done += _CENTRAL_RECORD + skip
        count += 1
    return count


def check_zip_directory(path: Path, field: str, limits: ExtractLimits) -> None:
    """Refuse a zip whose central directory is over the limits, before zipfile reads it.

    A damaged zip is left to zipfile, which says so."""
    with path.open("rb") as f:
        directory = _directory(f)
        if directory is None or directory.start < 0:
            return
        if directory.entries > limits.max_files:
            raise too_many_files(field, limits)
        bound = max(1 << 20, limits.max_files * CD_BYTES_PER_FILE)
        if directory.size > bound:
            raise refused(
                field,
                f"its list of entries (central directory) is {human(directory.size)}, more "
                f"than {limits.max_files} files need ({human(bound)}): re-create the zip",
            )
        if _records(f, directory, limits.max_files + 1) > limits.max_files:
            raise too_many_files(field, limits)


# --- tar ---------------------------------------------------------------------------------------


class TarBudget:
    """What one tar's header members have cost; open the tar with `tarinfo=budget.tarinfo`."""

    def __init__(self, field: str, limits: ExtractLimits) -> None:
        self.field = field
        self.limit = limits.max_header_bytes
        self.total = 0  # header bytes read in all: they are unpacked bytes for the ratio
        self._chain = 0  # header members since the last entry
        self._chain_bytes = 0
        self._global_bytes = 0
        self.tarinfo = self._tarinfo_class()

    def _refuse(self, why: str) -> ArchiveRefused:
        return refused(self.field, f"{why}: re-create it with an ordinary tar or zip tool")

    def sparse(self, name: str) -> ArchiveRefused:
        return refused(
            self.field, f'entry "{show(name)}" is a sparse file: re-create it without --sparse'
        )

    def before(self, info: tarfile.TarInfo) -> None:
        """Called with a header block parsed and nothing after it read."""
        if info.type == tarfile.GNUTYPE_SPARSE:  # its map blocks are read with no bound
            raise self.sparse(info.name)
        if info.type not in _HEADER_TYPES:
            self._chain = self._chain_bytes = 0
            return
        size, limit = info.size, human(self.limit)
        self.total += size
        self._chain += 1
        self._chain_bytes += size
        if size > self.limit:
            raise self._refuse(
                f"it holds a tar header (PAX or GNU long name) of {human(size)}, over the "
                f"{limit} limit"
            )
        if self._chain > MAX_CHAIN:
            raise self._refuse(f"it holds more than {MAX_CHAIN} tar headers before one entry")
        if self._chain_bytes > self.limit:
            raise self._refuse(f"it holds tar headers of more than {limit} before one entry")
        if info.type == tarfile.XGLTYPE:
            self._global_bytes += size
            if self._global_bytes > self.limit:
                raise self._refuse(f"it holds tar global headers of more than {limit} in all")

    def after(self, tf: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        """Called with the member its headers made."""
        if member.sparse is not None:  # GNU PAX sparse 0.x: its map was in a bounded header
            raise self.sparse(member.name)
        if len(tf.pax_headers) > MAX_GLOBAL_FIELDS:
            raise self._refuse(
                f"it holds a tar global header with more than {MAX_GLOBAL_FIELDS} fields"
            )
        member.pax_headers = {}  # tarfile keeps every member: not with its header too

    def _tarinfo_class(self) -> type[tarfile.TarInfo]:
        budget = self

        class BoundedTarInfo(tarfile.TarInfo):
            __slots__ = ()

            # tarfile's documented hook for subclasses (private, so typeshed omits it).
            def _proc_member(self, tf: tarfile.TarFile) -> tarfile.TarInfo:
                budget.before(self)
                member: tarfile.TarInfo = super()._proc_member(tf)  # type: ignore[misc]
                budget.after(tf, member)
                return member

            def _proc_gnusparse_10(
                self, next: tarfile.TarInfo, pax: dict[str, str], tf: tarfile.TarFile
            ) -> NoReturn:
                # GNU PAX sparse 1.0 keeps its map in the data, read with no bound.
                raise budget.sparse(pax.get("GNU.sparse.name", next.name))

        return BoundedTarInfo
