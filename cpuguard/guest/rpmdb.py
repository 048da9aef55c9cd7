"""Files owned by RPM packages, from a guest's RPM database in SQLite form.

RHEL 9 and later, Rocky, AlmaLinux, Oracle Linux and Fedora 33+ keep the
database in ``/var/lib/rpm/rpmdb.sqlite`` or ``/usr/lib/sysimage/rpm/rpmdb.sqlite``:
a table ``Packages(hnum INTEGER PRIMARY KEY, blob BLOB)`` whose blobs are RPM
headers as rpm's ``headerExport`` writes them, without the 8-byte header magic.

The header layout is the one of the Linux Standard Base Core Specification,
"Package File Format", section "Header Structure" (refspecs.linuxfoundation.org,
LSB-Core-generic): two big-endian int32 fields, the index entry count and the
data size, then that many 16-byte index entries (tag, type, offset into the
data, count), then the data. rpm's "Immutable header regions" note (doc/hregions
in rpm's source) explains the region tag that opens a stored header, and the
rpm manual's "RPM Tags" page (rpm.org, docs/manual/tags.md) the tags read here:
BASENAMES (1117, string array), DIRNAMES (1118, string array) and DIRINDEXES
(1116, int32 array: each basename's directory), or in packages older than
``rpmlib(CompressedFileNames)`` OLDFILENAMES (1027, string array of whole paths). The limits are rpm's
own sanity checks as its lib/header_internal.h states them: at most 65,535
entries, 256 MiB of data (HEADER_DATA_MAX), 1,048,575 values in one array
(HEADER_ARRAY_MAX) and int32 data aligned to 4 bytes.

The file given is a private copy taken out of the guest. It is opened
read-only; without a write-ahead log beside it, also ``immutable`` (no lock,
no journal). Closing the database merges SQLite's write-ahead log into it
(rpm 4.18 leaves an empty ``-wal``), so a log is left only by a transaction
cut short: when the copy has one beside it,
SQLite reads it too (and may create a ``-shm`` index in that private
directory) so that committed packages are not missed.
"""

from __future__ import annotations

import os
import sqlite3
import stat
import struct
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from urllib.parse import quote

from cpuguard.guest.dpkg import normalise
from cpuguard.guest.errors import GuestDataError

TAG_ARCH = 1022
TAG_OLDFILENAMES = 1027
TAG_DIRINDEXES = 1116
TAG_BASENAMES = 1117
TAG_DIRNAMES = 1118

TYPE_INT32 = 4
TYPE_STRING = 6
TYPE_STRING_ARRAY = 8

#: rpm's own limits for one header (see above).
MAX_HEADER_ENTRIES = 0xFFFF
MAX_HEADER_DATA = 256 * 1024 * 1024
MAX_BLOB_BYTES = 8 + 16 * MAX_HEADER_ENTRIES + MAX_HEADER_DATA
#: Most installed packages read; a large server has a few thousand.
MAX_PACKAGES = 200_000
#: Most strings or numbers in one entry, rpm's HEADER_ARRAY_MAX: bounds the objects one header
#: can make (256 MiB of NUL bytes would otherwise be 256 million strings).
MAX_ENTRY_COUNT = 0xFFFFF
#: Most owned paths; a large server has a few hundred thousand.
MAX_PATHS = 4_000_000
#: Longest path kept (Linux's PATH_MAX); longer names are ignored.
MAX_PATH_BYTES = 4096
#: Wall-clock budget for SQLite's work on one database: a crafted file must not hang a scan.
MAX_SECONDS = 120.0

_INTRO = struct.Struct(">II")
_ENTRY = struct.Struct(">IIII")


class _Entry:
    __slots__ = ("count", "offset", "type")

    def __init__(self, type_: int, offset: int, count: int) -> None:
        self.type = type_
        self.offset = offset
        self.count = count


def _index(blob: bytes, wanted: frozenset[int]) -> tuple[dict[int, _Entry], memoryview]:
    """The entries of ``wanted`` tags and the header's data store."""
    if len(blob) < _INTRO.size:
        raise GuestDataError(f"header of {len(blob)} bytes, shorter than its 8-byte intro")
    entries, size = _INTRO.unpack_from(blob)
    if entries > MAX_HEADER_ENTRIES:
        raise GuestDataError(f"header claims {entries:,} entries, more than rpm's {MAX_HEADER_ENTRIES:,}")
    if size > MAX_HEADER_DATA:
        raise GuestDataError(f"header claims {size:,} bytes of data, more than rpm's {MAX_HEADER_DATA:,}")
    start = _INTRO.size + _ENTRY.size * entries
    if len(blob) != start + size:
        raise GuestDataError(f"header of {len(blob):,} bytes, its intro says {start + size:,}")
    found: dict[int, _Entry] = {}
    for position in range(_INTRO.size, start, _ENTRY.size):
        tag, type_, offset, count = _ENTRY.unpack_from(blob, position)
        if tag in wanted:
            # a later entry wins: rpm lets entries appended after the immutable region
            # replace the region's own copy of a tag
            found[tag] = _Entry(type_, offset, count)
    return found, memoryview(blob)[start:]


def _check_count(entry: _Entry, tag: int) -> None:
    if entry.count > MAX_ENTRY_COUNT:
        raise GuestDataError(f"tag {tag} claims {entry.count:,} values, more than {MAX_ENTRY_COUNT:,}")


def _strings(data: memoryview, entry: _Entry, tag: int) -> list[bytes]:
    if entry.type != TYPE_STRING_ARRAY:
        raise GuestDataError(f"tag {tag} has type {entry.type}, not a string array")
    _check_count(entry, tag)
    if entry.offset >= len(data) or entry.count > len(data) - entry.offset:  # each string takes a byte at least
        raise GuestDataError(f"tag {tag}: {entry.count:,} strings at offset {entry.offset:,} past the data's end")
    raw = data[entry.offset :].tobytes()
    parts = raw.split(b"\x00", entry.count)
    if len(parts) <= entry.count:
        raise GuestDataError(f"tag {tag}: string {len(parts):,} of {entry.count:,} runs past the data's end")
    return parts[: entry.count]


def _string(data: memoryview, entry: _Entry, tag: int) -> bytes:
    if entry.type != TYPE_STRING or entry.count != 1:
        raise GuestDataError(f"tag {tag} has type {entry.type} and count {entry.count:,}, not one string")
    return _strings(data, _Entry(TYPE_STRING_ARRAY, entry.offset, 1), tag)[0]


def _int32s(data: memoryview, entry: _Entry, tag: int) -> tuple[int, ...]:
    if entry.type != TYPE_INT32:
        raise GuestDataError(f"tag {tag} has type {entry.type}, not an int32 array")
    _check_count(entry, tag)
    if entry.offset % 4:
        raise GuestDataError(f"tag {tag}: int32 data at unaligned offset {entry.offset:,}")
    if entry.offset > len(data) or entry.count > (len(data) - entry.offset) // 4:
        raise GuestDataError(f"tag {tag}: {entry.count:,} int32 values at offset {entry.offset:,} past the data's end")
    return struct.unpack_from(f">{entry.count}I", data, entry.offset)


def _path(raw: bytes) -> str | None:
    if len(raw) > MAX_PATH_BYTES:
        return None
    return normalise(raw.decode("utf-8", "surrogateescape"))


def header_files(blob: bytes) -> list[str]:
    """The absolute paths one RPM header (a ``Packages.blob``) lists as the package's files.

    Names that are not absolute, hold ``..`` or are too long are left out; a header
    that is cut short, claims more than it holds or contradicts itself raises
    :class:`GuestDataError`.
    """
    wanted = frozenset({TAG_OLDFILENAMES, TAG_DIRINDEXES, TAG_BASENAMES, TAG_DIRNAMES})
    found, data = _index(blob, wanted)
    joined: Iterable[bytes]
    if TAG_BASENAMES in found:
        if TAG_DIRNAMES not in found or TAG_DIRINDEXES not in found:
            raise GuestDataError("header has file basenames without their directories")
        basenames = _strings(data, found[TAG_BASENAMES], TAG_BASENAMES)
        dirnames = _strings(data, found[TAG_DIRNAMES], TAG_DIRNAMES)
        indexes = _int32s(data, found[TAG_DIRINDEXES], TAG_DIRINDEXES)
        if len(indexes) != len(basenames):
            raise GuestDataError(f"header has {len(basenames):,} file basenames but {len(indexes):,} directory indexes")
        if indexes and max(indexes) >= len(dirnames):
            raise GuestDataError(f"header names directory {max(indexes):,} of {len(dirnames):,}")
        joined = (dirnames[index] + basename for index, basename in zip(indexes, basenames, strict=True))
    elif TAG_OLDFILENAMES in found:
        joined = _strings(data, found[TAG_OLDFILENAMES], TAG_OLDFILENAMES)
    else:
        return []  # a package without files (a meta-package, gpg-pubkey)
    return [path for path in map(_path, joined) if path is not None]


def _regular(path: Path) -> bool:
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def _blobs(db: Path, deadline: float) -> Iterator[tuple[int, bytes]]:
    wal = db.with_name(db.name + "-wal")
    with_log = _regular(wal) and wal.stat().st_size > 0
    uri = f"file:{quote(str(db))}?mode=ro" + ("" if with_log else "&immutable=1")
    connection = sqlite3.connect(uri, uri=True)
    try:
        connection.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, MAX_BLOB_BYTES)
        connection.set_progress_handler(lambda: int(time.monotonic() > deadline), 1000)
        # the schema is the guest's: no functions from its views or triggers, no writes
        connection.execute("PRAGMA trusted_schema = OFF")
        connection.execute("PRAGMA query_only = ON")
        kinds = connection.execute("SELECT type FROM sqlite_master WHERE name = 'Packages'").fetchall()
        if kinds != [("table",)]:
            raise GuestDataError(f"{db.name}: no Packages table: not an rpm database")
        for count, (hnum, blob) in enumerate(connection.execute("SELECT hnum, blob FROM Packages"), start=1):
            if count > MAX_PACKAGES:
                raise GuestDataError(f"{db.name}: more than {MAX_PACKAGES:,} packages")
            if not isinstance(blob, bytes):
                raise GuestDataError(f"{db.name}: package {hnum}: header is {type(blob).__name__}, not a blob")
            yield hnum, blob
    finally:
        connection.close()


def header_arch(blob: bytes) -> str | None:
    """The architecture one RPM header names (``x86_64``, ``noarch``, AlmaLinux 10's
    ``x86_64_v2``), or None for a header without one (``gpg-pubkey``)."""
    found, data = _index(blob, frozenset({TAG_ARCH}))
    if TAG_ARCH not in found:
        return None
    raw = _string(data, found[TAG_ARCH], TAG_ARCH)
    arch = raw.decode("utf-8", "replace")
    return arch if arch.isprintable() and 0 < len(arch) <= 64 else None


def _collect(db: Path, per_header: Callable[[bytes], Iterable[str]], what: str) -> frozenset[str]:
    """The union of ``per_header`` over every header of ``db``, with every refusal one line."""
    if not _regular(db):
        raise GuestDataError(f"{db.name}: not a regular file")
    found: set[str] = set()
    deadline = time.monotonic() + MAX_SECONDS
    try:
        for hnum, blob in _blobs(db, deadline):
            try:
                found.update(per_header(blob))
            except GuestDataError as exc:
                raise GuestDataError(f"{db.name}: package {hnum}: {exc}") from None
            if len(found) > MAX_PATHS:
                raise GuestDataError(f"{db.name}: more than {MAX_PATHS:,} {what}")
    except sqlite3.Error as exc:
        if time.monotonic() > deadline:
            raise GuestDataError(f"{db.name}: reading took longer than {MAX_SECONDS:g} s, refusing it") from None
        raise GuestDataError(f"{db.name}: not a readable SQLite rpm database: {exc}") from None
    except MemoryError:
        raise GuestDataError(f"{db.name}: too large to read") from None
    return frozenset(found)


def owned_paths(db: Path) -> frozenset[str]:
    """Every file path the packages of the RPM SQLite database ``db`` own.

    ``db`` is a private copy taken out of the guest. A file that is not an SQLite
    database, has no ``Packages`` table or holds a corrupt header raises
    :class:`GuestDataError` with one line; so do more packages or paths than the
    limits above.
    """
    return _collect(db, header_files, "owned paths")


def package_arches(db: Path) -> frozenset[str]:
    """The architectures of the installed packages (``{"x86_64", "noarch"}``): which
    build of a distribution the guest runs, where the os-release does not say
    (AlmaLinux 10's ``x86_64_v2`` build). Refusals as :func:`owned_paths`."""
    return _collect(db, lambda blob: [arch] if (arch := header_arch(blob)) else [], "architectures")
