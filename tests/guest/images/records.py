"""What the builders return: frozen records saying what is where in a root or on a disk."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from tests.guest.images.tools import resolve_in_root

ROOT_LABEL = "guestroot"  # every root filesystem carries it; each root's /etc/fstab mounts / by it
FSTAB = f"LABEL={ROOT_LABEL} / auto defaults 0 1\n"

Table = Literal["mbr", "gpt"] | None


@dataclass(frozen=True)
class Program:
    """A custom build installed by hand: in no package's database."""

    guest_path: str
    march: str
    needs_avx2: bool  # gcc's -march enables AVX2: the program cannot start on a CPU without it
    unit: str | None  # guest path of its systemd unit file
    wants: str | None  # guest path of the link that enables the unit; None: not enabled
    library: str | None  # guest path of its own shared library (a DT_NEEDED of the program)
    library_via: Literal["runpath", "ld.so.conf"] | None
    plugins: tuple[str, ...]  # guest paths of dlopen()ed modules, same -march

    @property
    def elf_files(self) -> tuple[str, ...]:
        return (self.guest_path, *([self.library] if self.library else []), *self.plugins)


@dataclass(frozen=True)
class Planted:
    """Something a hostile builder put into a root."""

    guest_path: str  # may hold control characters; undecodable bytes as surrogates (os.fsdecode)
    kind: str  # "symlink-to-host", "symlink-loop", "control-characters", "unit"...
    target: str | None = None  # a symlink's target


@dataclass(frozen=True)
class Root:
    """A directory holding a guest's ``/`` and what was put into it."""

    path: Path
    os_id: str  # os-release ID
    version_id: str
    pretty_name: str
    package_format: Literal["deb", "rpm"]
    packages: tuple[str, ...]
    programs: tuple[Program, ...] = ()
    planted: tuple[Planted, ...] = ()

    def guest(self, guest_path: str) -> Path:
        """The host path of ``guest_path``, symlinks resolved inside the root."""
        return resolve_in_root(self.path, guest_path)


@dataclass(frozen=True)
class Disk:
    """A disk image and where its filesystem is."""

    path: Path
    format: Literal["raw", "qcow2"]
    size: int  # virtual size in bytes
    table: Table
    filesystem: str | None  # blkid's TYPE: "ext4", "xfs", "btrfs", "crypto_LUKS", "ntfs"; None: unknown
    offset: int  # where that filesystem starts in the guest's view of the disk
    partition: int | None  # its partition number; None for a whole-disk filesystem or an LV
    label: str | None = None
    root: Root | None = None  # the guest tree inside
    files: tuple[str, ...] = ()  # notable guest paths of a disk without a Root (no OS, Windows)
    lvm: Lvm | None = None
    chain: tuple[Path, ...] = ()  # backing files named by the headers, nearest first
    backing_format: str | None = None  # of chain[0], as the header says


@dataclass(frozen=True)
class Lvm:
    """Where the root LV lives: its PV's place in the image and the LV's extents in the PV."""

    vg: str
    lv: str
    pv_offset: int  # the PV's first byte in the image
    pv_size: int
    pe_start: int
    extent_size: int
    first_extent: int
    lv_size: int
    other_lvs: tuple[str, ...]
