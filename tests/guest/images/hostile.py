"""The bad-input catalog: disks and roots a guest scan must refuse or survive.

Each entry of ``HOSTILE`` builds one case; its docstring is the one line saying
what it tests.
"""

from __future__ import annotations

import os
import random
import struct
import tempfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Literal

from tests.conftest import need_tool
from tests.guest.images.disks import ext4_disk, fs_size_for, layout, mkfs_ext4, place, qcow2_of, raw_disk
from tests.guest.images.programs import MAIN_SOURCE, UNIT_TEMPLATE, compile_c
from tests.guest.images.records import ROOT_LABEL, Disk, Planted, Root, Table
from tests.guest.images.roots import copy_root
from tests.guest.images.tools import ImageBuildError, MiB, TiB, guest_dir, install_file, run, symlink

_EMPTY_SIZE = 64 * MiB


def luks_disk(path: Path, *, table: Table = "gpt", size: int = _EMPTY_SIZE) -> Disk:
    """A LUKS2 partition (``cryptsetup luksFormat`` on a file: no device-mapper needed);
    its payload is never written, opening it needs dm-crypt."""
    slot = layout(path, size, table, "linux")
    cryptsetup = need_tool("cryptsetup")

    # pbkdf2 at its lowest cost: the default argon2id would spend a second and a GiB on a test key
    cheap_kdf = ["--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000"]

    def make(target: Path) -> None:
        options = ["--batch-mode", "--type", "luks2", *cheap_kdf, "--key-file", "-"]
        run([cryptsetup, "luksFormat", *options, str(target)], input=os.urandom(32))

    place(path, slot, make)
    return raw_disk(path, slot, table, "crypto_LUKS", None)


def unknown_fs_disk(path: Path, *, table: Table = "mbr", size: int = _EMPTY_SIZE, seed: int = 9) -> Disk:
    """A Linux partition whose first 4 MiB are random bytes: no filesystem anyone knows."""
    slot = layout(path, size, table, "linux")
    with open(path, "r+b") as handle:
        handle.seek(slot.offset)
        handle.write(random.Random(seed).randbytes(4 * MiB))
    return raw_disk(path, slot, table, None, None)


def truncated_qcow2(source: Disk, path: Path, *, keep: float = 0.5) -> Disk:
    """A qcow2 of ``source`` cut to ``keep`` of its length: header intact, clusters missing."""
    disk = qcow2_of(source, path)
    os.truncate(path, max(65536, int(path.stat().st_size * keep) // 65536 * 65536))
    return disk


# qcow2 header fields (docs/interop/qcow2.txt in QEMU): big-endian, at these offsets.
_QCOW2_FIELDS = {"cluster_bits": (20, ">I", 99), "l1_table_offset": (40, ">Q", 0x7FFF_FFFF_FFFF_0200)}


def corrupt_qcow2(
    source: Disk, path: Path, *, field: Literal["cluster_bits", "l1_table_offset"] = "cluster_bits"
) -> Disk:
    """A qcow2 of ``source`` whose header has an impossible ``field`` (cluster_bits 99, an
    L1 table past any file): the magic still says qcow2."""
    disk = qcow2_of(source, path)
    offset, fmt, value = _QCOW2_FIELDS[field]
    with open(path, "r+b") as handle:
        handle.seek(offset)
        handle.write(struct.pack(fmt, value))
    return disk


def backing_loop(directory: Path, *, size: int = _EMPTY_SIZE) -> Disk:
    """a.qcow2 backed by b.qcow2 backed by a.qcow2 (made with an unsafe ``rebase -u``)."""
    qemu_img = need_tool("qemu-img")
    a, b = (directory / "loop-a.qcow2").absolute(), (directory / "loop-b.qcow2").absolute()
    run([qemu_img, "create", "-q", "-f", "qcow2", str(a), str(size)])
    run([qemu_img, "create", "-q", "-f", "qcow2", "-b", str(a), "-F", "qcow2", str(b)])
    run([qemu_img, "rebase", "-u", "-b", str(b), "-F", "qcow2", str(a)])
    return Disk(a, "qcow2", size, None, None, 0, None, chain=(b, a), backing_format="qcow2")


def host_backing_qcow2(path: Path, *, host_file: str = "/etc/shadow", size: int = _EMPTY_SIZE) -> Disk:
    """A qcow2 whose header names a host file as its raw backing file (``-b /etc/shadow -F raw``)."""
    run(
        [need_tool("qemu-img"), "create", "-q", "-f", "qcow2", "-u", "-b", host_file, "-F", "raw", str(path), str(size)]
    )
    return Disk(path, "qcow2", size, None, None, 0, None, chain=(Path(host_file),), backing_format="raw")


def no_backing_format_qcow2(base: Disk, path: Path) -> Disk:
    """An overlay whose header names its backing file but not its format (as QEMU before 6.1 wrote them).

    qemu-img no longer writes such headers, so the backing-format header extension
    (0xE2792ACA) of a normal overlay is turned into the end-of-extensions marker.
    """
    base_path = base.path.absolute()
    run([need_tool("qemu-img"), "create", "-q", "-f", "qcow2", "-b", str(base_path), "-F", base.format, str(path)])
    with open(path, "r+b") as handle:
        header = handle.read(65536)
        version = struct.unpack_from(">I", header, 4)[0]
        position = struct.unpack_from(">I", header, 100)[0] if version >= 3 else 72
        while position + 8 <= len(header):
            kind, length = struct.unpack_from(">II", header, position)
            if kind == 0:
                raise ImageBuildError(f"{path}: qemu-img wrote no backing-format extension")
            if kind == 0xE2792ACA:
                handle.seek(position)
                handle.write(bytes(8))
                break
            position += 8 + (length + 7) // 8 * 8
    return replace(base, path=path, format="qcow2", chain=(base_path, *base.chain), backing_format=None)


def add_hostile_links(root: Root) -> Root:
    """Guest symlinks that lead to host paths if resolved on the host, and loops, with enabled
    units whose ExecStart goes through them."""
    links = (
        Planted("/usr/local/bin/evil", "symlink-to-host", "/etc/shadow"),
        Planted("/usr/local/lib/x", "symlink-to-host", "../../../../../../etc/passwd"),
        Planted("/opt/hostroot", "symlink-to-host", "/"),
        Planted("/usr/local/bin/loop-a", "symlink-loop", "loop-b"),
        Planted("/usr/local/bin/loop-b", "symlink-loop", "loop-a"),
        Planted("/usr/local/bin/self", "symlink-loop", "self"),
        Planted("/usr/local/lib/dirloop", "symlink-loop", "."),
        Planted("/etc/systemd/system/multi-user.target.wants/shadow.service", "symlink-to-host", "/etc/shadow"),
    )
    for link in links:
        symlink(root.path, link.guest_path, link.target or "")
    planted = list(links)
    for unit, program in (("evil.service", "/usr/local/bin/evil"), ("loop.service", "/usr/local/bin/loop-a")):
        unit_path = f"/etc/systemd/system/{unit}"
        install_file(root.path, unit_path, UNIT_TEMPLATE.format(name=unit, program=program, exec_prefix="").encode())
        symlink(root.path, f"/etc/systemd/system/multi-user.target.wants/{unit}", unit_path)
        planted.append(Planted(unit_path, "unit", program))
    return replace(root, planted=(*root.planted, *planted))


CONTROL_NAMES = (
    "/usr/local/bin/esc\x1b[31mred",
    "/usr/local/bin/new\nline",
    os.fsdecode(b"/usr/local/bin/latin1-\xe9"),
)


def add_control_char_names(root: Root, *, march: str = "haswell") -> Root:
    """Unowned -march=haswell programs whose names hold an ANSI escape, a newline and a
    byte that is not UTF-8: a scan reports them, a terminal must never get them raw.
    (XFS prototypes cannot hold a newline: use these roots with ext4 or btrfs.)"""
    with tempfile.TemporaryDirectory(prefix="cpuguard-build-") as build_dir:
        program = compile_c(MAIN_SOURCE, Path(build_dir) / "prog", march).read_bytes()
    for name in CONTROL_NAMES:
        parent, base = name.rsplit("/", 1)
        target = guest_dir(root.path, parent) / base
        target.write_bytes(program)
        target.chmod(0o755)
    planted = tuple(Planted(name, "control-characters") for name in CONTROL_NAMES)
    return replace(root, planted=(*root.planted, *planted))


def huge_sparse_disk(root: Root, path: Path, *, virtual_size: int = 2 * TiB) -> Disk:
    """A GPT disk of ``virtual_size`` (2 TiB) that occupies a few MB: the root in partition 2,
    an empty data partition over the rest."""
    fs_size = fs_size_for(root.path, 32 * MiB, 1.25, 24 * MiB)
    slot = layout(path, fs_size, "gpt", "linux", disk_size=virtual_size)
    mkfs_ext4(root.path, path, slot.offset, slot.length, ROOT_LABEL)
    return raw_disk(path, slot, "gpt", "ext4", ROOT_LABEL, root=root)


NO_OS_FILES = ("/data/files/report.txt", "/data/files/archive.bin")


def no_os_disk(path: Path, *, table: Table = "gpt") -> Disk:
    """ext4 holding only /data/files: a data disk, no operating system."""
    with tempfile.TemporaryDirectory(prefix="cpuguard-tree-") as tree:
        install_file(Path(tree), NO_OS_FILES[0], b"quarterly figures\n")
        install_file(Path(tree), NO_OS_FILES[1], random.Random(1).randbytes(64 * 1024))
        slot = layout(path, 32 * MiB, table, "linux")
        mkfs_ext4(Path(tree), path, slot.offset, slot.length, "data")
    return raw_disk(path, slot, table, "ext4", "data", files=NO_OS_FILES)


def _minimal_pe() -> bytes:
    """The headers of an x86-64 console PE32+ program (what file(1) calls one), no code.

    libguestfs takes a Windows guest's architecture from its cmd.exe with file(1).
    Layout: DOS header with e_lfanew=64, "PE\\0\\0", COFF header (machine 0x8664,
    optional header size 240, executable), PE32+ optional header (magic 0x20b,
    subsystem 3 = console).
    """
    dos = bytearray(64)
    dos[0:2] = b"MZ"
    struct.pack_into("<I", dos, 0x3C, 64)
    coff = struct.pack("<4sHHIIIHH", b"PE\0\0", 0x8664, 0, 0, 0, 0, 240, 0x0022)
    optional = bytearray(240)
    struct.pack_into("<H", optional, 0, 0x20B)
    struct.pack_into("<H", optional, 68, 3)
    return bytes(dos) + coff + bytes(optional) + bytes(512)


WINDOWS_FILES = ("/Windows/System32/cmd.exe", "/Windows/System32/config", "/Windows/System32/drivers/etc/hosts",
                 "/Program Files/Vendor/app.exe", "/Users/Public/desktop.ini")  # fmt: skip


def windows_disk(path: Path, *, table: Table = "mbr", size: int = _EMPTY_SIZE) -> Disk:
    """NTFS with a Windows system root (Windows/System32 with cmd.exe and config/), made
    with mkntfs and filled by wimlib straight into the unmounted volume; no registry hives."""
    mkntfs, wimcapture, wimapply = need_tool("mkntfs"), need_tool("wimcapture"), need_tool("wimapply")
    slot = layout(path, size, table, "ntfs")
    with tempfile.TemporaryDirectory(prefix="cpuguard-tree-") as tree_dir:
        tree = Path(tree_dir) / "tree"
        for guest_path in WINDOWS_FILES:
            if guest_path.endswith("/config"):
                guest_dir(tree, guest_path)
            else:
                install_file(tree, guest_path, _minimal_pe() if guest_path.endswith(".exe") else b"\r\n")
        wim = Path(tree_dir) / "image.wim"
        run([wimcapture, str(tree), str(wim), "--compress=none"])

        def make(target: Path) -> None:
            # the partition's geometry goes into the boot sector, as Windows' own installer writes it
            geometry = ["-s", "512", "-p", str(slot.offset // 512), "-H", "255", "-S", "63"]
            run([mkntfs, "-F", "-Q", "-q", "-L", "Windows", *geometry, str(target)])
            run([wimapply, str(wim), "1", str(target)])

        place(path, slot, make)
    return raw_disk(path, slot, table, "ntfs", "Windows", files=WINDOWS_FILES)


def _hostile_luks(directory: Path, root: Root) -> Disk:
    """Encrypted disk: a LUKS2 partition, nothing readable without its key."""
    return luks_disk(directory / "luks.img")


def _hostile_unknown_fs(directory: Path, root: Root) -> Disk:
    """Unknown filesystem: a partition of random bytes."""
    return unknown_fs_disk(directory / "unknown-fs.img")


def _hostile_truncated(directory: Path, root: Root) -> Disk:
    """Truncated qcow2: a real guest's qcow2 cut in half."""
    return truncated_qcow2(ext4_disk(root, directory / "truncated.raw"), directory / "truncated.qcow2")


def _hostile_corrupt_header(directory: Path, root: Root) -> Disk:
    """Corrupt qcow2 header: cluster_bits 99."""
    return corrupt_qcow2(ext4_disk(root, directory / "corrupt.raw"), directory / "corrupt.qcow2")


def _hostile_corrupt_l1(directory: Path, root: Root) -> Disk:
    """Corrupt qcow2 header: an L1 table offset far past the end of the file."""
    raw = ext4_disk(root, directory / "corrupt-l1.raw")
    return corrupt_qcow2(raw, directory / "corrupt-l1.qcow2", field="l1_table_offset")


def _hostile_backing_loop(directory: Path, root: Root) -> Disk:
    """Backing-file loop: a.qcow2 -> b.qcow2 -> a.qcow2."""
    return backing_loop(directory)


def _hostile_backing_host_file(directory: Path, root: Root) -> Disk:
    """Backing file pointing at a host file: -b /etc/shadow -F raw in the header."""
    return host_backing_qcow2(directory / "shadow.qcow2")


def _hostile_backing_no_format(directory: Path, root: Root) -> Disk:
    """Backing file without a backing format in the header (format probing would be needed)."""
    base = qcow2_of(ext4_disk(root, directory / "noformat-base.raw"), (directory / "noformat-base.qcow2").absolute())
    return no_backing_format_qcow2(base, directory / "noformat.qcow2")


def _hostile_symlinks(directory: Path, root: Root) -> Disk:
    """Guest symlinks to host paths (absolute and ../ escapes) and symlink loops, used by enabled units."""
    return ext4_disk(add_hostile_links(copy_root(root, directory / "links-root")), directory / "links.img", table="gpt")


def _hostile_control_chars(directory: Path, root: Root) -> Disk:
    """File names with an ANSI escape, a newline and non-UTF-8 bytes, on unowned programs."""
    planted = add_control_char_names(copy_root(root, directory / "names-root"))
    return ext4_disk(planted, directory / "names.img", table="mbr")


def _hostile_huge(directory: Path, root: Root) -> Disk:
    """Huge sparse image: 2 TiB virtual, a small real root at its start."""
    return huge_sparse_disk(root, directory / "huge.img")


def _hostile_no_os(directory: Path, root: Root) -> Disk:
    """No OS found: an ext4 data disk with only /data/files."""
    return no_os_disk(directory / "no-os.img")


def _hostile_windows(directory: Path, root: Root) -> Disk:
    """Windows guest: NTFS with Windows/System32/cmd.exe."""
    return windows_disk(directory / "windows.img")


#: The bad-input catalog: name -> builder(directory, a root to build from) -> Disk.
HOSTILE: dict[str, Callable[[Path, Root], Disk]] = {
    "encrypted": _hostile_luks,
    "unknown-filesystem": _hostile_unknown_fs,
    "truncated-qcow2": _hostile_truncated,
    "corrupt-qcow2-header": _hostile_corrupt_header,
    "corrupt-qcow2-l1": _hostile_corrupt_l1,
    "backing-loop": _hostile_backing_loop,
    "backing-host-file": _hostile_backing_host_file,
    "backing-no-format": _hostile_backing_no_format,
    "symlinks-to-host": _hostile_symlinks,
    "control-characters": _hostile_control_chars,
    "huge-sparse": _hostile_huge,
    "no-os": _hostile_no_os,
    "windows": _hostile_windows,
}
