"""Real guest disk images for the guest-inspection tests, built without mounting anything.

Roots (``roots``) are directories holding a guest's ``/``: a real Debian 12 from
debootstrap, a small Debian assembled from this machine's own packages, a Rocky
Linux 9-like root whose RPM database rpm itself wrote. ``add_custom_program``
(``programs``) compiles the workload a guest scan must find: a ``-march=haswell``
daemon run by an enabled systemd unit.

Disks (``disks``) are written from a root by the filesystems' own tools, LVM on a
loop device that is never activated (no device-mapper needed), and ``qemu-img`` for
qcow2 and backing chains. ``HOSTILE`` (``hostile``) is the bad-input catalog. Every
builder returns a frozen record (``records``) saying what is where, so tests assert
on the record instead of on knowledge of the builder.

A tool that is missing skips the calling test locally and fails it under CI=true.
"""

from __future__ import annotations

from tests.guest.images.disks import (
    LAYOUTS,
    btrfs_disk,
    ext4_disk,
    loop_device,
    lvm_disk,
    lvm_report,
    private_lvm,
    qcow2_chain,
    qcow2_of,
    qemu_info,
    xfs_disk,
    xfs_protofile,
)
from tests.guest.images.domains import custom_cpu, domain_xml
from tests.guest.images.hostile import (
    CONTROL_NAMES,
    HOSTILE,
    NO_OS_FILES,
    WINDOWS_FILES,
    add_control_char_names,
    add_hostile_links,
    backing_loop,
    corrupt_qcow2,
    host_backing_qcow2,
    huge_sparse_disk,
    luks_disk,
    no_backing_format_qcow2,
    no_os_disk,
    truncated_qcow2,
    unknown_fs_disk,
    windows_disk,
)
from tests.guest.images.programs import UNIT_TEMPLATE, add_custom_program, compile_c
from tests.guest.images.records import FSTAB, ROOT_LABEL, Disk, Lvm, Planted, Program, Root, Table
from tests.guest.images.roots import (
    ASSEMBLED_SEEDS,
    ROCKY94_OS_RELEASE,
    ROCKY94_RELEASE,
    assembled_debian_root,
    copy_root,
    debian_root,
    rocky9_root,
)
from tests.guest.images.tools import (
    ImageBuildError,
    MiB,
    TiB,
    copy_region,
    extract_region,
    read_os_release,
    resolve_in_root,
    run,
    tree_size,
)

__all__ = [
    "ASSEMBLED_SEEDS",
    "CONTROL_NAMES",
    "FSTAB",
    "HOSTILE",
    "LAYOUTS",
    "NO_OS_FILES",
    "ROCKY94_OS_RELEASE",
    "ROCKY94_RELEASE",
    "ROOT_LABEL",
    "UNIT_TEMPLATE",
    "WINDOWS_FILES",
    "Disk",
    "ImageBuildError",
    "Lvm",
    "MiB",
    "Planted",
    "Program",
    "Root",
    "Table",
    "TiB",
    "add_control_char_names",
    "add_custom_program",
    "add_hostile_links",
    "assembled_debian_root",
    "backing_loop",
    "btrfs_disk",
    "compile_c",
    "copy_region",
    "copy_root",
    "corrupt_qcow2",
    "custom_cpu",
    "debian_root",
    "domain_xml",
    "ext4_disk",
    "extract_region",
    "host_backing_qcow2",
    "huge_sparse_disk",
    "loop_device",
    "luks_disk",
    "lvm_disk",
    "lvm_report",
    "no_backing_format_qcow2",
    "no_os_disk",
    "private_lvm",
    "qcow2_chain",
    "qcow2_of",
    "qemu_info",
    "read_os_release",
    "resolve_in_root",
    "rocky9_root",
    "run",
    "tree_size",
    "truncated_qcow2",
    "unknown_fs_disk",
    "windows_disk",
    "xfs_disk",
    "xfs_protofile",
]  # fmt: skip
