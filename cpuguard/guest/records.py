"""Plain records of guest inspection: which disks were read, what was found inside,
and what the core needs of it (:class:`GuestNeeds`).

Flow: :mod:`cpuguard.guest.disks` turns a domain XML or image names into
:class:`Disk` records; the appliance worker reads them and returns
:class:`Found` files and the :class:`GuestOs`; :mod:`cpuguard.guest.inspect`
scans the files and makes a :class:`GuestScan`; :mod:`cpuguard.guest.store`
keeps it as a file beside the policies and hands the decision a
:class:`GuestNeeds`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from cpuguard.scan.records import BinaryNeeds, ScanReport

#: Where a disk's backing chain came from (said in every output).
CHAIN_NONE = "none"  # a raw image, a block device, or a qcow2 without a backing file
CHAIN_XML = "domain XML"  # <backingStore> elements, as libvirt writes them for a running VM
CHAIN_HEADERS = "image headers"  # followed like QEMU does, each link with an explicit format
CHAIN_OPTION = "image headers, followed on request"  # --follow-backing of `scan --disk`


@dataclass(frozen=True)
class Layer:
    """One image of a disk's chain (the top image first)."""

    path: str
    format: str  # raw | qcow2 | ...


@dataclass(frozen=True)
class Disk:
    """A disk of the guest as cpuguard reads it (read-only)."""

    target: str  # the guest's name for it: "vda", or "disk1" for a bare image
    kind: str  # file | block
    layers: tuple[Layer, ...]  # top image first, then its backing files
    chain_from: str = CHAIN_NONE

    @property
    def path(self) -> str:
        return self.layers[0].path

    @property
    def format(self) -> str:
        return self.layers[0].format


@dataclass(frozen=True)
class GuestOs:
    """The operating system found on the guest's disks."""

    kind: str  # linux | windows | ...
    distro: str  # libguestfs' distro name: debian, rocky, rhel, ...
    name: str  # product name: "Rocky Linux 9.4 (Blue Onyx)"
    version: str  # "9.4"
    os_id: str = ""  # os-release ID
    id_like: tuple[str, ...] = ()
    version_id: str = ""  # os-release VERSION_ID
    root: str = ""  # device holding the root file system, e.g. "vda2" or "vg0/root"


@dataclass(frozen=True)
class OsNeed:
    """The distribution's own CPU floor (data/os_floors.yaml)."""

    level: str  # x86-64-v2
    family: str  # "RHEL 9 family"
    source: str  # where the floor is documented
    note: str = ""


@dataclass(frozen=True)
class Found:
    """A file chosen inside the guest, and why."""

    path: str  # the guest path, symlinks resolved inside the guest
    reason: str  # "owned by no package", "ExecStart of enabled unit pbxd.service", ...
    disk: str  # target of the disk holding it
    staged: str = ""  # where the worker copied it on the host (private temporary directory)
    problem: str = ""  # why it could not be read (then it is not scanned)


@dataclass(frozen=True)
class GuestScan:
    """Everything one inspection of one guest found."""

    vm: str
    disks: tuple[Disk, ...]
    scanned_at: datetime
    os: GuestOs | None
    os_need: OsNeed | None
    files: tuple[Found, ...]
    report: ScanReport  # the scanner's report, paths as in the guest
    problems: tuple[str, ...] = ()  # what could not be read: the result is incomplete
    notes: tuple[str, ...] = ()  # e.g. "backing chain of vda from the image headers"
    fingerprint: str = ""  # of the disks' files (rescan of an unchanged guest)
    reused_from: datetime | None = None  # unchanged disks: the result of that earlier scan


@dataclass(frozen=True)
class GuestNeeds:
    """What the decision takes from a stored guest scan (``policies/guests/<vm>.json``)."""

    vm: str
    source: str  # the result file
    scanned_at: datetime
    os_name: str | None
    os_need: OsNeed | None
    binaries: tuple[BinaryNeeds, ...]  # provenance says which disk and when
    problems: tuple[str, ...] = ()  # what that scan could not read
    age_days: float = 0.0  # at the time it was loaded
    stale: bool = False  # older than the configured bound: a warning, never silence
