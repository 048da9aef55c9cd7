"""The RPM database reader against a database rpm itself wrote, then hostile databases."""

from __future__ import annotations

import shutil
import sqlite3
import struct
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from cpuguard.guest import rpmdb
from cpuguard.guest.errors import GuestDataError
from cpuguard.guest.rpmdb import header_arch, header_files, owned_paths, package_arches
from tests.guest.rpmtools import Package, install_packages, rpm_file_list

ELF = Path("/usr/bin/true").read_bytes()

PACKAGES = [
    Package("hello-owned", {"/usr/bin/hello-owned": b"#!/bin/sh\necho hello\n", "/usr/lib64/libowned.so.1": b"lib"}),
    Package(
        "native-tools",
        {"/usr/sbin/true64": ELF, "/opt/vendor app/bin/run": b"#!/bin/sh\n", "/usr/share/doc/native-tools/README": b""},
        arch="x86_64",
        ghosts=["/var/log/native-tools.log"],
    ),
    Package("meta-only"),  # no files, like RHEL's gpg-pubkey entries
]


@pytest.fixture(scope="module")
def rpm_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("rocky") / "root"
    root.mkdir()
    install_packages(root, PACKAGES)
    return root


@pytest.fixture(scope="module")
def real_db(rpm_root: Path) -> Path:
    return rpm_root / "var/lib/rpm/rpmdb.sqlite"


def test_owned_paths_equal_what_rpm_lists(rpm_root: Path, real_db: Path) -> None:
    owned = owned_paths(real_db)
    assert owned == rpm_file_list(rpm_root)
    assert owned == {
        "/usr/bin/hello-owned",
        "/usr/lib64/libowned.so.1",
        "/usr/sbin/true64",
        "/opt/vendor app/bin/run",
        "/usr/share/doc/native-tools/README",
        "/var/log/native-tools.log",
    }


def test_sysimage_location_and_installed_files(tmp_path: Path) -> None:
    """Fedora's and RHEL 10's location; files really installed, not only recorded."""
    root = tmp_path / "root"
    root.mkdir()
    db = install_packages(root, PACKAGES[:1], dbpath="/usr/lib/sysimage/rpm")
    assert db == root / "usr/lib/sysimage/rpm/rpmdb.sqlite"
    assert (root / "usr/bin/hello-owned").read_bytes().startswith(b"#!")
    assert owned_paths(db) == {"/usr/bin/hello-owned", "/usr/lib64/libowned.so.1"}


def test_the_database_is_not_written(real_db: Path, tmp_path: Path) -> None:
    copy = tmp_path / "rpmdb.sqlite"
    shutil.copyfile(real_db, copy)
    before = copy.read_bytes()
    owned_paths(copy)
    assert copy.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rpmdb.sqlite"]  # no journal, no -shm


def test_committed_packages_still_in_a_write_ahead_log_are_seen(real_db: Path, blob: bytes, tmp_path: Path) -> None:
    """A transaction cut short leaves committed headers in rpmdb.sqlite-wal only."""
    live = tmp_path / "live"
    live.mkdir()
    shutil.copyfile(real_db, live / "rpmdb.sqlite")
    writer = sqlite3.connect(live / "rpmdb.sqlite")
    writer.execute("PRAGMA journal_mode = WAL")
    writer.execute("PRAGMA wal_autocheckpoint = 0")
    late = _replace_first_basename(blob, b"late-tool")
    new_paths = set(header_files(late)) - owned_paths(real_db)
    assert new_paths
    writer.execute("INSERT INTO Packages (blob) VALUES (?)", (late,))
    writer.commit()
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in ("rpmdb.sqlite", "rpmdb.sqlite-wal"):  # what an engine copies out of the guest
        shutil.copyfile(live / name, copy / name)
    writer.close()
    assert (copy / "rpmdb.sqlite-wal").stat().st_size > 0
    assert new_paths <= owned_paths(copy / "rpmdb.sqlite")


# --- hostile headers -------------------------------------------------------------------------


def _blobs(db: Path) -> list[bytes]:
    with sqlite3.connect(f"file:{db}?mode=ro&immutable=1", uri=True) as connection:
        return [row[0] for row in connection.execute("SELECT blob FROM Packages ORDER BY hnum")]


def _entries(blob: bytes) -> dict[int, tuple[int, int, int, int]]:
    """tag -> (position of its index entry, type, offset, count)"""
    count = struct.unpack_from(">I", blob)[0]
    found = {}
    for position in range(8, 8 + 16 * count, 16):
        tag, type_, offset, n = struct.unpack_from(">IIII", blob, position)
        found[tag] = (position, type_, offset, n)
    return found


def _patch_entry(blob: bytes, old_tag: int, **new: int) -> bytes:
    """``blob`` with the index entry of ``old_tag`` changed: ``tag``, ``type_``, ``offset``, ``count``."""
    position, old_type, old_offset, old_count = _entries(blob)[old_tag]
    tag, type_, offset, count = (new.get(key) for key in ("tag", "type_", "offset", "count"))
    entry = struct.pack(
        ">IIII",
        old_tag if tag is None else tag,
        old_type if type_ is None else type_,
        old_offset if offset is None else offset,
        old_count if count is None else count,
    )
    return blob[:position] + entry + blob[position + 16 :]


def _replace_first_basename(blob: bytes, name: bytes) -> bytes:
    """The same header with its first basename's bytes overwritten (same length)."""
    _, _, offset, _ = _entries(blob)[rpmdb.TAG_BASENAMES]
    start = 8 + 16 * struct.unpack_from(">I", blob)[0] + offset
    old = blob[start : blob.index(b"\x00", start)]
    new = name[: len(old)].ljust(len(old), b"x")
    return blob[:start] + new + blob[start + len(old) :]


@pytest.fixture(scope="module")
def blob(real_db: Path) -> bytes:
    """The header of native-tools: basenames, dirnames and dirindexes, a region tag."""
    (found,) = [b for b in _blobs(real_db) if b"true64" in b]
    return found


def test_header_files_of_a_real_header(blob: bytes) -> None:
    assert sorted(header_files(blob)) == [
        "/opt/vendor app/bin/run",
        "/usr/sbin/true64",
        "/usr/share/doc/native-tools/README",
        "/var/log/native-tools.log",
    ]


def test_truncated_at_every_byte(blob: bytes) -> None:
    for size in range(len(blob)):
        with pytest.raises(GuestDataError):
            header_files(blob[:size])


def test_every_byte_flipped_gives_a_list_or_a_reason(blob: bytes) -> None:
    """No corruption of any single byte escapes as another exception or a hang."""
    for position in range(len(blob)):
        for value in (0x00, 0xFF, blob[position] ^ 0x80):
            corrupt = blob[:position] + bytes([value]) + blob[position + 1 :]
            try:
                paths = header_files(corrupt)
            except GuestDataError as exc:
                assert "\n" not in str(exc)
            else:
                assert all(path.startswith("/") for path in paths)


HOSTILE: dict[str, tuple[Callable[[bytes], bytes], str]] = {
    "huge index count": (lambda b: struct.pack(">I", 0x7FFFFFFF) + b[4:], "more than rpm's 65,535"),
    "huge data size": (lambda b: b[:4] + struct.pack(">I", 0x7FFFFFFF) + b[8:], "more than rpm's"),
    "size contradicts intro": (lambda b: b + b"\x00", "its intro says"),
    "strings past the end": (lambda b: _patch_entry(b, rpmdb.TAG_BASENAMES, offset=0xFFFFFF00), "past the data's end"),
    "too many strings": (lambda b: _patch_entry(b, rpmdb.TAG_BASENAMES, count=0xFFFFFFFF), "more than 1,048,575"),
    "more strings than data": (lambda b: _patch_entry(b, rpmdb.TAG_DIRNAMES, count=900_000), "past the data's end"),
    "ints past the end": (lambda b: _patch_entry(b, rpmdb.TAG_DIRINDEXES, count=500_000), "past the data's end"),
    "unaligned ints": (lambda b: _patch_entry(b, rpmdb.TAG_DIRINDEXES, offset=_entries(b)[1116][2] + 1), "unaligned"),
    "wrong type": (lambda b: _patch_entry(b, rpmdb.TAG_BASENAMES, type_=rpmdb.TYPE_INT32), "not a string array"),
    "index count mismatch": (lambda b: _patch_entry(b, rpmdb.TAG_DIRINDEXES, count=1), "but 1 directory indexes"),
    "no dirnames": (lambda b: _patch_entry(b, rpmdb.TAG_DIRNAMES, tag=999), "without their directories"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_header(blob: bytes, case: str) -> None:
    corrupt, message = HOSTILE[case]
    with pytest.raises(GuestDataError, match=message):
        header_files(corrupt(blob))


def test_directory_index_out_of_range(blob: bytes) -> None:
    _, _, offset, _ = _entries(blob)[rpmdb.TAG_DIRINDEXES]
    start = 8 + 16 * struct.unpack_from(">I", blob)[0] + offset
    corrupt = blob[:start] + struct.pack(">I", 0xFFFFFFFF) + blob[start + 4 :]
    with pytest.raises(GuestDataError, match="names directory"):
        header_files(corrupt)


def test_unterminated_strings(blob: bytes) -> None:
    data_size = struct.unpack_from(">I", blob, 4)[0]
    # one string starting at the data's last byte, which is not a NUL
    corrupt = _patch_entry(blob, rpmdb.TAG_BASENAMES, offset=data_size - 1, count=1)[:-1] + b"x"
    with pytest.raises(GuestDataError, match="string 1 of 1 runs past the data's end"):
        header_files(corrupt)


def test_old_style_file_names() -> None:
    """Packages built before rpm 4.1 list whole paths in OLDFILENAMES (1027)."""
    data = b"/usr/bin/old\x00relative\x00/usr/lib/../x\x00/opt/a//b/\x00"
    entry = struct.pack(">IIII", rpmdb.TAG_OLDFILENAMES, rpmdb.TYPE_STRING_ARRAY, 0, 4)
    header = struct.pack(">II", 1, len(data)) + entry + data
    assert header_files(header) == ["/usr/bin/old", "/opt/a/b"]


# --- hostile databases -----------------------------------------------------------------------


def _database(path: Path, statements: list[str], rows: Sequence[object] = ()) -> Path:
    with sqlite3.connect(path) as connection:
        for statement in statements:
            connection.execute(statement)
        for row in rows:
            connection.execute("INSERT INTO Packages (blob) VALUES (?)", (row,))
    connection.close()
    return path


PACKAGES_TABLE = "CREATE TABLE Packages (hnum INTEGER PRIMARY KEY AUTOINCREMENT, blob BLOB NOT NULL)"


def test_not_sqlite(tmp_path: Path) -> None:
    path = tmp_path / "rpmdb.sqlite"
    path.write_bytes(b"\x00\x06\x15\x61" + b"\x00" * 4092)  # a Berkeley DB hash file's magic, RHEL 8
    message = r"^rpmdb\.sqlite: not a readable SQLite rpm database: file is not a database$"
    with pytest.raises(GuestDataError, match=message):
        owned_paths(path)


def test_empty_file_and_missing_file(tmp_path: Path) -> None:
    (tmp_path / "empty").write_bytes(b"")
    with pytest.raises(GuestDataError, match="no Packages table"):
        owned_paths(tmp_path / "empty")
    with pytest.raises(GuestDataError, match="not a regular file"):
        owned_paths(tmp_path / "missing")


def test_no_packages_table(tmp_path: Path) -> None:
    path = _database(tmp_path / "db", ["CREATE TABLE Other (x)"])
    with pytest.raises(GuestDataError, match="no Packages table: not an rpm database"):
        owned_paths(path)


def test_packages_as_a_view_is_refused(tmp_path: Path) -> None:
    """A view could run arbitrary (and arbitrarily long) queries: only a table is read."""
    view = (
        "CREATE VIEW Packages AS WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) "
        "SELECT i AS hnum, zeroblob(8) AS blob FROM n"
    )
    path = _database(tmp_path / "db", [view])
    with pytest.raises(GuestDataError, match="no Packages table"):
        owned_paths(path)


def test_blob_that_is_text_or_corrupt(tmp_path: Path, blob: bytes) -> None:
    path = _database(tmp_path / "text", ["CREATE TABLE Packages (hnum INTEGER PRIMARY KEY, blob)"], ["text"])
    with pytest.raises(GuestDataError, match="package 1: header is str, not a blob"):
        owned_paths(path)
    path = _database(tmp_path / "cut", [PACKAGES_TABLE], [blob, blob[:-3]])
    with pytest.raises(GuestDataError, match=r"^cut: package 2: header of .* bytes, its intro says"):
        owned_paths(path)


def test_symlinked_database_is_not_followed(tmp_path: Path, real_db: Path) -> None:
    link = tmp_path / "rpmdb.sqlite"
    link.symlink_to(real_db)
    with pytest.raises(GuestDataError, match="not a regular file"):
        owned_paths(link)


def test_limits(tmp_path: Path, blob: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _database(tmp_path / "db", [PACKAGES_TABLE], [blob, blob, blob])
    assert len(owned_paths(path)) == 4
    monkeypatch.setattr(rpmdb, "MAX_PACKAGES", 2)
    with pytest.raises(GuestDataError, match="more than 2 packages"):
        owned_paths(path)
    monkeypatch.setattr(rpmdb, "MAX_PACKAGES", 10)
    monkeypatch.setattr(rpmdb, "MAX_PATHS", 3)
    with pytest.raises(GuestDataError, match="more than 3 owned paths"):
        owned_paths(path)


def test_time_budget(tmp_path: Path, blob: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _database(tmp_path / "db", [PACKAGES_TABLE], [blob] * 2000)
    monkeypatch.setattr(rpmdb, "MAX_SECONDS", -1.0)
    with pytest.raises(GuestDataError, match=r"^db: reading took longer than -1 s, refusing it$"):
        owned_paths(path)


def test_file_name_with_uri_characters(tmp_path: Path, real_db: Path) -> None:
    odd = tmp_path / "a?b#c%d"
    odd.mkdir()
    shutil.copyfile(real_db, odd / "rpmdb.sqlite")
    assert owned_paths(odd / "rpmdb.sqlite") == owned_paths(real_db)


# --- package architectures -------------------------------------------------------------------


def test_package_arches_of_a_real_database(real_db: Path) -> None:
    assert package_arches(real_db) == {"noarch", "x86_64"}


def test_header_arch_of_built_headers(blob: bytes) -> None:
    assert header_arch(blob) == "x86_64"
    # AlmaLinux 10's second build names its packages x86_64_v2 (rpm 4.18 cannot build one)
    data = b"x86_64_v2\x00"
    header = struct.pack(">II", 1, len(data)) + struct.pack(">IIII", rpmdb.TAG_ARCH, rpmdb.TYPE_STRING, 0, 1) + data
    assert header_arch(header) == "x86_64_v2"
    assert header_arch(struct.pack(">II", 0, 0)) is None
    unprintable = header.replace(b"x86_64_v2", b"x86\x1b[2Jv2")
    assert header_arch(unprintable) is None
    with pytest.raises(GuestDataError, match="not one string"):
        header_arch(_patch_entry(blob, rpmdb.TAG_ARCH, count=2))
