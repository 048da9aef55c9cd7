"""Disk images of a root: ext4, XFS, btrfs, LVM, partition tables, qcow2 and backing chains.

Filesystems are written by their own tools from the root directory, never by
mounting: ``mke2fs -d`` (at a partition's offset with ``-E offset=``),
``mkfs.xfs -p protofile`` and ``mkfs.btrfs --rootdir`` (in a scratch file copied into
the partition). LVM uses a loop device and never activates an LV.
"""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import pytest

from tests.conftest import in_ci, need_tool
from tests.guest.images.records import ROOT_LABEL, Disk, Lvm, Root, Table
from tests.guest.images.tools import (
    ImageBuildError,
    MiB,
    copy_region,
    new_file,
    resolve_in_root,
    round_mib,
    run,
    scratch_file,
    tree_size,
)

# Partition type codes: sfdisk's MBR ids and the GPT type GUIDs of the UEFI specification.
PART_TYPES = {
    ("mbr", "linux"): "83",
    ("mbr", "lvm"): "8e",
    ("mbr", "ntfs"): "7",
    ("gpt", "linux"): "0FC63DAF-8483-4772-8E79-3D69D8477DE4",
    ("gpt", "lvm"): "E6D6D379-F507-44C2-A23C-238F2A3DF928",
    ("gpt", "ntfs"): "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7",
    ("gpt", "bios"): "21686148-6449-6E6F-744E-656564454649",
}


@dataclass(frozen=True)
class Slot:
    """Where a filesystem goes: partition ``number`` (None: the whole disk), in bytes."""

    number: int | None
    offset: int
    length: int


def layout(path: Path, fs_size: int, table: Table, kind: str, *, disk_size: int | None = None) -> Slot:
    """Create the image file with a partition table; return where the OS partition is.

    MBR: partition 1 from 1 MiB, bootable. GPT (a cloud image's shape): a 1 MiB BIOS
    boot partition, then the OS in partition 2. With ``disk_size`` the disk is that big
    and one more (empty) Linux partition covers the rest.
    """
    if table is None:
        new_file(path, fs_size)
        return Slot(None, 0, fs_size)
    head = MiB * (2 if table == "gpt" else 1)
    new_file(path, disk_size or head + fs_size + MiB)
    os_partition = f"size={fs_size // 512}, type={PART_TYPES[table, kind]}"
    if table == "gpt":
        lines = ["label: gpt", f"start=2048, size=2048, type={PART_TYPES['gpt', 'bios']}", os_partition]
    else:
        lines = ["label: dos", f"start=2048, {os_partition}, bootable"]
    if disk_size:
        lines.append(f"type={PART_TYPES[table, 'linux']}")
    run([need_tool("sfdisk"), "-q", "--no-reread", "--no-tell-kernel", str(path)], input="\n".join(lines).encode())
    number = 2 if table == "gpt" else 1
    return partition_slot(path, number)


def partition_slot(path: Path, number: int) -> Slot:
    table = json.loads(run([need_tool("sfdisk"), "-J", str(path)]).stdout)["partitiontable"]
    sector = table.get("sectorsize", 512)
    part = table["partitions"][number - 1]
    return Slot(number, part["start"] * sector, part["size"] * sector)


def fs_size_for(tree: Path, minimum: int, factor: float, slack: int) -> int:
    return max(minimum, round_mib(tree_size(tree) * factor + slack))


def mkfs_ext4(tree: Path, image: Path, offset: int, length: int, label: str) -> None:
    """``mke2fs -d TREE`` into ``length`` bytes of ``image`` from ``offset``, 4 KiB blocks as distributions use."""
    options = ["-q", "-F", "-t", "ext4", "-b", "4096", "-L", label, "-d", str(tree), "-E", f"offset={offset}"]
    run([need_tool("mke2fs"), *options, str(image), str(length // 4096)])


def raw_disk(
    path: Path, slot: Slot, table: Table, filesystem: str | None, label: str | None, *,
    root: Root | None = None, files: tuple[str, ...] = (),
) -> Disk:  # fmt: skip
    """The record of a raw image just built."""
    return Disk(path, "raw", path.stat().st_size, table, filesystem, slot.offset, slot.number, label, root, files)


def ext4_disk(root: Root, path: Path, *, table: Table = None, size: int | None = None, label: str = ROOT_LABEL) -> Disk:
    """The root as ext4 (``mke2fs -d``, at the partition's offset with ``-E offset=``)."""
    fs_size = size or fs_size_for(root.path, 32 * MiB, 1.25, 24 * MiB)
    slot = layout(path, fs_size, table, "linux")
    mkfs_ext4(root.path, path, slot.offset, slot.length, label)
    return raw_disk(path, slot, table, "ext4", label, root=root)


def place(path: Path, slot: Slot, make: Callable[[Path], None]) -> None:
    """Make a filesystem in a file of the slot's size, then copy it into the slot (no loop device).

    A tool that grew its file (mkfs.btrfs does when the tree does not fit) would spill
    over the next partition or the backup GPT: that is an error, not a bigger disk.
    """
    target = path if slot.number is None else None
    with scratch_file(path, ".fs") as scratch:
        if target is None:
            new_file(scratch, slot.length)
            target = scratch
        make(target)
        if target.stat().st_size != slot.length:
            raise ImageBuildError(f"{path}: the filesystem needs more than its {slot.length} bytes")
        if target == scratch:
            copy_region(scratch, path, dst_offset=slot.offset)


# mkfs.xfs refuses filesystems under 300 MB unless it believes it runs in xfstests.
_XFS_SMALL = {"TEST_DIR": "1", "TEST_DEV": "1", "QA_CHECK_FS": "1"}


def xfs_protofile(tree: Path) -> tuple[str, list[str]]:
    """mkfs.xfs(8) ``-p`` prototype text for ``tree`` and the guest paths of its sticky
    directories (a prototype has no sticky bit: xfs_disk sets it afterwards with xfs_db).

    Tokens are separated by whitespace and a token starting with ':' is a comment, so
    names with whitespace or a leading ':' cannot be expressed: they raise ValueError.
    """
    lines = ["cpuguard-guest-image", "0 0"]
    sticky: list[str] = []

    def token(value: str, what: str) -> str:
        if not value or value.startswith(":") or re.search(r"\s", value) or value == "$":
            raise ValueError(f"an XFS prototype cannot hold the {what} {value!r}")
        return value

    def mode(info: os.stat_result, kind: str) -> str:
        bits = stat.S_IMODE(info.st_mode)
        suid = "u" if bits & stat.S_ISUID else "-"
        sgid = "g" if bits & stat.S_ISGID else "-"
        return f"{kind}{suid}{sgid}{bits & 0o777:03o} {info.st_uid} {info.st_gid}"

    def walk(directory: Path, guest: str) -> None:
        for entry in sorted(os.scandir(directory), key=lambda e: e.name):
            info = entry.stat(follow_symlinks=False)
            name = token(entry.name, "name")
            guest_path = f"{guest}/{entry.name}"
            if stat.S_ISDIR(info.st_mode):
                lines.append(f"{name} {mode(info, 'd')}")
                if info.st_mode & stat.S_ISVTX:
                    sticky.append(guest_path)
                walk(Path(entry.path), guest_path)
                lines.append("$")
            elif stat.S_ISREG(info.st_mode):
                lines.append(f"{name} {mode(info, '-')} {token(os.path.abspath(entry.path), 'source path')}")
            elif stat.S_ISLNK(info.st_mode):
                lines.append(f"{name} {mode(info, 'l')} {token(os.readlink(entry.path), 'link target')}")
            elif stat.S_ISCHR(info.st_mode) or stat.S_ISBLK(info.st_mode):
                kind = "c" if stat.S_ISCHR(info.st_mode) else "b"
                lines.append(f"{name} {mode(info, kind)} {os.major(info.st_rdev)} {os.minor(info.st_rdev)}")
            elif stat.S_ISFIFO(info.st_mode):
                lines.append(f"{name} {mode(info, 'p')}")
            # sockets have no prototype syntax; a root holds none

    top = tree.stat()
    lines.append(mode(top, "d"))
    walk(tree, "")
    lines.append("$")
    return "\n".join(lines) + "\n", sticky


def _mkfs_xfs(tree: Path, label: str) -> Callable[[Path], None]:
    def make(target: Path) -> None:
        proto_text, sticky = xfs_protofile(tree)
        with scratch_file(target, ".proto") as proto:
            proto.write_text(proto_text)
            run([need_tool("mkfs.xfs"), "-q", "-f", "-L", label, "-p", str(proto), str(target)], env=_XFS_SMALL)
        for guest_path in sticky:
            mode = f"0{stat.S_IFDIR | (resolve_in_root(tree, guest_path, follow_last=False).stat().st_mode & 0o7777):o}"
            run([need_tool("xfs_db"), "-x", "-c", f"path {guest_path}", "-c", f"write core.mode {mode}", str(target)])

    return make


def xfs_disk(root: Root, path: Path, *, table: Table = None, size: int | None = None, label: str = ROOT_LABEL) -> Disk:
    """The root as XFS (``mkfs.xfs -p protofile``); in a partition via a scratch file."""
    fs_size = size or fs_size_for(root.path, 64 * MiB, 1.15, 48 * MiB)
    slot = layout(path, fs_size, table, "linux")
    place(path, slot, _mkfs_xfs(root.path, label))
    return raw_disk(path, slot, table, "xfs", label, root=root)


def btrfs_disk(
    root: Root, path: Path, *, table: Table = None, size: int | None = None, label: str = ROOT_LABEL
) -> Disk:
    """The root as btrfs (``mkfs.btrfs --rootdir``), made in a scratch file and copied in.

    Without ``size`` the filesystem is made with ``--shrink`` and the partition (or the
    whole disk) sized to it: mkfs.btrfs needs about twice the tree (DUP metadata).
    """
    mkfs = need_tool("mkfs.btrfs")
    with scratch_file(path, ".btrfs") as scratch:
        new_file(scratch, size or 16 * MiB)
        shrink = [] if size else ["--shrink"]
        run([mkfs, "-q", "-f", "-L", label, *shrink, "--rootdir", str(root.path), str(scratch)])
        if size and scratch.stat().st_size != size:
            raise ImageBuildError(f"{path}: the tree does not fit in a {size}-byte btrfs")
        slot = layout(path, round_mib(scratch.stat().st_size), table, "linux")
        copy_region(scratch, path, dst_offset=slot.offset)
    return raw_disk(path, slot, table, "btrfs", label, root=root)


def _need_loop_devices() -> None:
    if not Path("/dev/loop-control").exists():
        message = "no loop devices on this machine (/dev/loop-control)"
        if in_ci():
            pytest.fail(message)
        pytest.skip(message)


@contextmanager
def loop_device(image: Path, offset: int, size: int, *, read_only: bool = False) -> Iterator[str]:
    """A loop device over one region of ``image``, detached whatever happens."""
    _need_loop_devices()
    losetup = need_tool("losetup")
    args = [losetup, "--show", "-f", "-o", str(offset), "--sizelimit", str(size), *(["-r"] if read_only else [])]
    device = run([*args, str(image)]).stdout.decode().strip()
    try:
        yield device
    finally:
        subprocess.run([losetup, "-d", device], capture_output=True, check=False)


@contextmanager
def private_lvm(device: str) -> Iterator[Callable[..., subprocess.CompletedProcess[bytes]]]:
    """Run LVM commands that see only ``device`` and leave nothing on this machine.

    A private LVM_SYSTEM_DIR (no metadata backups or archives, no devices file, no
    hints, locks in the temporary directory) and a filter accepting only the device:
    the host's own VGs are not scanned and nothing is cached about ours.
    """
    with tempfile.TemporaryDirectory(prefix="cpuguard-lvm-") as system_dir:
        Path(system_dir, "lvm.conf").write_text(
            f"""devices {{ use_devicesfile = 0 obtain_device_list_from_udev = 0 hints = "none"
  filter = [ "a|^{device}$|", "r|.*|" ] }}
global {{ use_lvmpolld = 0 event_activation = 0 locking_dir = "{system_dir}/lock" }}
backup {{ backup = 0 archive = 0 }}
activation {{ udev_sync = 0 udev_rules = 0 monitoring = 0 }}
"""
        )
        env = {"LVM_SYSTEM_DIR": system_dir, "LVM_SUPPRESS_FD_WARNINGS": "1"}

        def lvm(command: str, *args: str) -> subprocess.CompletedProcess[bytes]:
            return run([need_tool("lvm"), command, *args], env=env)

        yield lvm


def lvm_report(
    lvm: Callable[..., subprocess.CompletedProcess[bytes]], command: str, fields: str
) -> list[dict[str, str]]:
    """``pvs``/``lvs``/``vgs`` as JSON rows, sizes in bytes."""
    out = lvm(command, "--reportformat", "json", "--units", "b", "--nosuffix", "-o", fields).stdout
    report = json.loads(out)["report"][0]
    return list(report[{"pvs": "pv", "lvs": "lv", "vgs": "vg"}[command]])


def lvm_disk(
    root: Root, path: Path, *, table: Literal["mbr", "gpt"] = "gpt", size: int | None = None,
    vg: str = "guestvg", lv: str = "root", swap: int = 16 * MiB, label: str = ROOT_LABEL,
) -> Disk:  # fmt: skip
    """The root as ext4 in LV ``vg/lv`` inside an LVM partition, behind a swap LV.

    The LVs are created with ``--driverloaded n -an -Zn`` (never activated, no
    device-mapper); the filesystem is written into the image at the LV's first extent.
    """
    fs_size = size or fs_size_for(root.path, 32 * MiB, 1.25, 24 * MiB)
    slot = layout(path, fs_size + swap + 8 * MiB, table, "lvm")
    with loop_device(path, slot.offset, slot.length) as device, private_lvm(device) as lvm:
        lvm("pvcreate", "-q", device)
        lvm("vgcreate", "-q", "-s", "4m", vg, device)
        lvm("lvcreate", "-q", "--driverloaded", "n", "-an", "-Zn", "-L", f"{swap}b", "-n", "swap", vg)
        lvm("lvcreate", "-q", "--driverloaded", "n", "-an", "-Zn", "-L", f"{fs_size}b", "-n", lv, vg)
        (pv,) = lvm_report(lvm, "pvs", "pe_start,vg_extent_size")
        lvs = {row["lv_name"]: row for row in lvm_report(lvm, "lvs", "lv_name,lv_size,seg_pe_ranges")}
    extent = int(pv["vg_extent_size"])
    pe_start = int(pv["pe_start"])

    def where(name: str) -> tuple[int, int, int]:
        first = int(lvs[name]["seg_pe_ranges"].rsplit(":", 1)[1].split("-")[0])
        return first, slot.offset + pe_start + first * extent, int(lvs[name]["lv_size"])

    first, offset, lv_size = where(lv)
    mkfs_ext4(root.path, path, offset, lv_size, label)
    _, swap_offset, swap_size = where("swap")
    with scratch_file(path, ".swap") as scratch:
        new_file(scratch, swap_size)
        run([need_tool("mkswap"), "-q", str(scratch)])
        copy_region(scratch, path, dst_offset=swap_offset)
    record = Lvm(vg, lv, slot.offset, slot.length, pe_start, extent, first, lv_size, ("swap",))
    return Disk(path, "raw", path.stat().st_size, table, "ext4", offset, None, label, root=root, lvm=record)


def qemu_info(path: Path, *, chain: bool = False) -> dict[str, object] | list[dict[str, object]]:
    """``qemu-img info --output=json`` (``-U``: never takes the image lock)."""
    args = [need_tool("qemu-img"), "info", "-U", "--output=json", *(["--backing-chain"] if chain else []), str(path)]
    return json.loads(run(args).stdout)  # type: ignore[no-any-return]


def qcow2_of(disk: Disk, path: Path) -> Disk:
    """The same disk converted to qcow2 (``qemu-img convert``, sparse stays sparse)."""
    run([need_tool("qemu-img"), "convert", "-f", disk.format, "-O", "qcow2", str(disk.path), str(path)])
    return replace(disk, path=path, format="qcow2")


def qcow2_chain(base: Disk, directory: Path, *, name: str = "guest", overlays: int = 1) -> Disk:
    """``NAME-base.qcow2`` holding the disk and ``overlays`` pristine overlays on it, each made
    with ``qemu-img create -b ABSOLUTE -F qcow2`` as libvirt does; returns the top."""
    current = qcow2_of(base, (directory / f"{name}-base.qcow2").absolute())
    for level in range(1, overlays + 1):
        top = (directory / (f"{name}.qcow2" if level == overlays else f"{name}-overlay{level}.qcow2")).absolute()
        run([need_tool("qemu-img"), "create", "-q", "-f", "qcow2", "-b", str(current.path), "-F", "qcow2", str(top)])
        current = replace(current, path=top, chain=(current.path, *current.chain), backing_format="qcow2")
    return current


#: Layouts of one root: name -> builder(root, directory) -> Disk.
LAYOUTS: dict[str, Callable[[Root, Path], Disk]] = {
    "ext4": lambda root, d: ext4_disk(root, d / "ext4.img"),
    "ext4-mbr": lambda root, d: ext4_disk(root, d / "ext4-mbr.img", table="mbr"),
    "ext4-gpt": lambda root, d: ext4_disk(root, d / "ext4-gpt.img", table="gpt"),
    "xfs": lambda root, d: xfs_disk(root, d / "xfs.img"),
    "xfs-gpt": lambda root, d: xfs_disk(root, d / "xfs-gpt.img", table="gpt"),
    "btrfs": lambda root, d: btrfs_disk(root, d / "btrfs.img"),
    "btrfs-mbr": lambda root, d: btrfs_disk(root, d / "btrfs-mbr.img", table="mbr"),
    "lvm-gpt": lambda root, d: lvm_disk(root, d / "lvm-gpt.img"),
    "lvm-mbr": lambda root, d: lvm_disk(root, d / "lvm-mbr.img", table="mbr"),
    "qcow2": lambda root, d: qcow2_of(ext4_disk(root, d / "q.raw", table="gpt"), d / "q.qcow2"),
    "qcow2-chain": lambda root, d: qcow2_chain(ext4_disk(root, d / "chain.raw", table="gpt"), d, name="chain"),
}
