"""The appliance worker: ``python -m cpuguard.guest.worker`` reads one job (JSON) on stdin
and answers with JSON lines on stdout, one per event.

Running libguestfs in its own process lets the caller bound the time of
every guest (it kills the worker and starts another for the guests left),
keeps a misbehaving appliance away from the caller's state, and lets one
appliance carry the disks of many guests: ``launch`` is the expensive step.

Job::

    {"staging": DIR, "all_files": false,
     "guests": [{"vm": "pbx01", "disks": [{"target": "vda", "path": "...", "format": "qcow2"}]}]}

Events: ``{"event": "launched"}``, ``{"event": "start", "vm": ...}``,
``{"event": "done", "vm": ..., "result": {...}}``; when the appliance cannot
start, ``{"event": "failed", "problem": "..."}``; when the guests cannot share
it, ``{"event": "split", "alone": [VM...]}`` (guests with LVM: their volume
group names may clash) or ``{"event": "split", "halves": true}`` (one guest's
file system fails libguestfs' inspection of them all).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
from collections.abc import Callable
from typing import Any

from cpuguard.guest import osfloor, osrelease
from cpuguard.guest.errors import GuestDataError, one_line
from cpuguard.guest.inside import Inside, _error

#: Debian's python3-guestfs installs here; a virtualenv does not see it by itself.
DEBIAN_DIST_PACKAGES = "/usr/lib/python3/dist-packages"
#: The appliance names the disks it was given sda, sdb... (virtio-scsi); partitions sda1...
_APPLIANCE_DISK = re.compile(r"^[sv]d[a-z]+(\d*)$")
_APPLIANCE_WHOLE = re.compile(r"^(/dev/[sv]d[a-z]+)\d*$")


def import_guestfs() -> Any:
    """The libguestfs binding, from the environment or from Debian's python3-guestfs."""
    import importlib

    try:
        return importlib.import_module("guestfs")
    except ImportError:
        if DEBIAN_DIST_PACKAGES not in sys.path:
            sys.path.append(DEBIAN_DIST_PACKAGES)
        try:
            return importlib.import_module("guestfs")
        except ImportError:
            return None


def _emit(event: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


def elf_links(staged: str) -> tuple[list[str], list[str]] | None:
    """(DT_NEEDED, RUNPATH/RPATH) of a copied-out file, or None when it is not a usable ELF file."""
    from cpuguard.scan import elf

    try:
        fd = os.open(staged, os.O_RDONLY)
    except OSError:
        return None
    try:
        size = os.fstat(fd).st_size
        return elf.ElfFile(elf.FileSource(fd, size)).dynamic_strings()
    except (elf.ElfError, ValueError, IndexError, OSError):
        return None
    finally:
        os.close(fd)


class UnusableName(RuntimeError):
    """A guest name libguestfs' Python binding cannot carry (not UTF-8, or holding NUL)."""


def _check_arg(value: Any) -> None:
    if isinstance(value, str):
        if "\0" in value:
            raise UnusableName(f"name holds a NUL byte: {one_line(value)}")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            # passing such a string to the binding crashes the process (seen with libguestfs 1.48)
            raise UnusableName(f"name is not valid UTF-8: {one_line(value)}") from None
    elif isinstance(value, list | tuple):
        for item in value:
            _check_arg(item)


class SafeHandle:
    """A libguestfs handle whose calls fail with RuntimeError, never worse: arguments the
    binding cannot encode are refused before the call, results it cannot decode (a guest
    file name that is not UTF-8) become a RuntimeError."""

    def __init__(self, handle: Any) -> None:
        self._handle = handle

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._handle, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            for value in (*args, *kwargs.values()):
                _check_arg(value)
            try:
                return method(*args, **kwargs)
            except UnicodeError as exc:
                raise RuntimeError(f"{name}: a name in the guest is not valid UTF-8 ({one_line(str(exc))})") from None

        return call


class Appliance:
    """One libguestfs appliance carrying the disks of several guests."""

    def __init__(self, guestfs: Any, guests: list[dict[str, Any]]) -> None:
        self.g = SafeHandle(guestfs.GuestFS(python_return_dict=True))
        self.g.set_trace(False)
        self.g.set_verbose(False)
        self.device_owner: list[tuple[str, str]] = []  # appliance device index -> (vm, target)
        for guest in guests:
            for disk in guest["disks"]:
                self.g.add_drive_opts(disk["path"], format=disk["format"], readonly=True)
                self.device_owner.append((guest["vm"], disk["target"]))
        self.g.launch()
        self.roots: dict[str, list[str]] = {}

    def owner(self, device: str) -> tuple[str, str] | None:
        """(vm, disk target) of an appliance disk or partition, e.g. /dev/sdb2."""
        match = _APPLIANCE_WHOLE.match(device)
        if match is None:
            return None
        try:
            index = self.g.device_index(match.group(1))
        except RuntimeError:
            return None
        if isinstance(index, int) and 0 <= index < len(self.device_owner):
            return self.device_owner[index]
        return None

    def guest_name(self, device: str) -> str:
        """A device in the guest's terms: /dev/sdb2 -> vda2, btrfsvol:/dev/sda2/@ -> vda2, /dev/vg0/root -> vg0/root."""
        btrfs = device.startswith("btrfsvol:")
        parts = device.removeprefix("btrfsvol:").split("/")
        if len(parts) < 3 or parts[1] != "dev":
            return one_line(device)
        name = "/".join(parts[:3])
        if not _APPLIANCE_DISK.match(parts[2]):
            return one_line(self._lv_name("/".join(parts[2:4])) if not btrfs else name)
        owner = self.owner(name)
        if owner is None:
            return one_line(name)
        number = _APPLIANCE_DISK.match(parts[2]).group(1)  # type: ignore[union-attr]
        return f"{owner[1]}{number}"

    def _lv_name(self, lv: str) -> str:
        """An LV in the guest's terms: the disks holding its volume group's PVs, then the LV."""
        try:
            pvs = sorted(self.g.pvs())
        except RuntimeError:
            return f"LV {lv}"
        holders = []
        for pv in pvs:
            match = _APPLIANCE_DISK.match(pv.rsplit("/", 1)[-1])
            owner = self.owner(pv)
            if match is not None and owner is not None:
                holders.append(f"{owner[1]}{match.group(1)}")
        return f"{'+'.join(holders)} LV {lv}" if holders else f"LV {lv}"

    def lvm_guests(self) -> set[str]:
        """The guests whose disks hold LVM physical volumes."""
        try:
            pvs = self.g.pvs()
        except RuntimeError:
            return set()
        return {owner[0] for owner in map(self.owner, pvs) if owner is not None}

    def assign_roots(self) -> None:
        """Which inspected OS root belongs to which guest (an LV's root: the only LVM guest)."""
        lvm = self.lvm_guests()
        for root in self.g.inspect_os():
            parts = root.removeprefix("btrfsvol:").split("/")
            owner: tuple[str, str] | None = None
            if len(parts) >= 3 and _APPLIANCE_DISK.match(parts[2]):
                owner = self.owner("/".join(parts[:3]))
            elif len(lvm) == 1:
                owner = (next(iter(lvm)), "")
            if owner is not None:
                self.roots.setdefault(owner[0], []).append(root)

    def filesystems_of(self, vm: str) -> list[tuple[str, str]]:
        """(device, file system type) of the guest's disks, partitions and volumes; LUKS shows as
        ``crypto_LUKS`` (libguestfs' list_filesystems leaves encrypted partitions out)."""
        found: dict[str, str] = {}
        try:
            devices = [*self.g.list_devices(), *self.g.list_partitions()]
            listed = self.g.list_filesystems()
        except RuntimeError:
            return []
        for device in devices:
            owner = self.owner(device)
            if owner is None or owner[0] != vm:
                continue
            try:
                kind = self.g.vfs_type(device)
            except RuntimeError:
                kind = ""
            if kind:
                found[device] = kind
        for device, kind in listed.items():
            owner = self.owner(device)
            if owner is not None and owner[0] == vm:
                found.setdefault(device, kind)
        return [(self.guest_name(device), kind) for device, kind in sorted(found.items())]


def _os_of(g: Any, root: str, inside: Inside, name: str) -> dict[str, Any]:
    text = inside.read_small("/etc/os-release") or inside.read_small("/usr/lib/os-release") or b""
    try:
        fields = osrelease.parse_os_release(text.decode("utf-8", "replace"))
    except GuestDataError:
        fields = {}
    info = osrelease.OsInfo.from_release(fields)
    result: dict[str, Any] = {
        "kind": g.inspect_get_type(root),
        "distro": g.inspect_get_distro(root),
        "name": one_line(g.inspect_get_product_name(root)),
        "version": f"{g.inspect_get_major_version(root)}.{g.inspect_get_minor_version(root)}",
        "os_id": info.id,
        "id_like": list(info.id_like),
        "version_id": info.version_id,
        "root": name,
    }
    if fields.get("PRETTY_NAME"):
        result["name"] = one_line(info.pretty_name)
    floor = osfloor.floor_for(info, arches=inside.package_arches)
    if floor is not None:
        result["floor"] = {"level": floor.level, "family": floor.family, "source": floor.source, "note": floor.note}
    return result


def _mount(appliance: Appliance, vm: str, root: str) -> list[str]:
    """Mount the root's file systems read-only, shortest mount point first; what failed.

    ``/`` is always the root libguestfs found, and another mount point only a file system of
    the same guest: the guest's fstab names devices by ``UUID=``/``LABEL=``, which VMs cloned
    from one template share, and libguestfs resolves them across every disk of the appliance."""
    g = appliance.g
    failed = []
    mounts = dict(g.inspect_get_mountpoints(root))
    mounts["/"] = root
    for point in sorted(mounts, key=len):
        device = mounts[point]
        parts = device.removeprefix("btrfsvol:").split("/")
        disk = "/".join(parts[:3])
        owner = appliance.owner(disk) if _APPLIANCE_WHOLE.match(disk) else None
        if point != "/" and _APPLIANCE_WHOLE.match(disk) and (owner is None or owner[0] != vm):
            failed.append(f"{point} not mounted: the guest's fstab names a file system found on another guest's disk")
            continue
        try:
            g.mount_ro(device, point)
        except RuntimeError as exc:
            if point == "/":
                raise
            failed.append(f"{point} not mounted: {_error(exc)}")
    return failed


def _no_os(appliance: Appliance, vm: str) -> str:
    filesystems = appliance.filesystems_of(vm)
    encrypted = [device for device, kind in filesystems if kind == "crypto_LUKS"]
    if encrypted:
        return f"encrypted disk (LUKS on {', '.join(encrypted)}): cannot inspect without the key"
    readable = [f"{kind} on {device}" for device, kind in filesystems if kind not in ("unknown", "swap", "")]
    if not readable:
        return "no file system cpuguard can read on the guest's disks"
    return f"no operating system found (file systems: {', '.join(readable)})"


def inspect_guest(
    appliance: Appliance,
    vm: str,
    staging: str,
    *,
    all_files: bool = False,
    links: Callable[[str], tuple[list[str], list[str]] | None] = elf_links,
) -> dict[str, Any]:
    """Everything the worker learns about one guest of the appliance."""
    g = appliance.g
    roots = appliance.roots.get(vm, [])
    if not roots:
        return {"status": "error", "problem": _no_os(appliance, vm)}
    result: dict[str, Any] = {"status": "ok", "files": [], "notes": [], "problems": []}
    linux = [r for r in roots if g.inspect_get_type(r) == "linux"]
    if not linux:
        kind = g.inspect_get_type(roots[0])
        product = one_line(g.inspect_get_product_name(roots[0]))
        if kind == "windows":
            kind = "Windows"
        return {"status": "error", "problem": f"{kind} guest ({product}): not inspected (cpuguard reads Linux guests)"}
    if len(linux) > 1:
        result["notes"].append(f"{len(linux)} Linux installations found; each was read")
    for number, root in enumerate(linux):
        directory = os.path.join(staging, vm, str(number))
        os.makedirs(directory, mode=0o700, exist_ok=True)
        try:
            g.umount_all()
            result["problems"].extend(_mount(appliance, vm, root))
        except RuntimeError as exc:
            result["problems"].append(f"root file system {appliance.guest_name(root)} not mounted: {_error(exc)}")
            continue
        inside = Inside(g, directory, all_files=all_files)
        disk = appliance.guest_name(root)
        owned = inside.owned()
        if "os" not in result:
            result["os"] = _os_of(g, root, inside, disk)
        inside.choose_unowned(owned)
        inside.choose_units()
        inside.close_over_needed(links)
        for chosen in inside.selection.chosen.values():
            if chosen.path:
                result["files"].append(
                    {
                        "path": chosen.path,
                        "reason": chosen.reason,
                        "disk": disk,
                        "staged": chosen.staged,
                        "problem": chosen.problem,
                    }
                )
        result["notes"].extend(inside.selection.notes)
        result["problems"].extend(inside.selection.problems)
    with contextlib.suppress(RuntimeError):
        g.umount_all()
    return result


def _launch_problem(exc: BaseException) -> str:
    text = _error(exc)
    return f"the inspection appliance could not open the disks: {text}"


def run(job: dict[str, Any], emit: Callable[[dict[str, Any]], None] = _emit) -> int:
    guestfs = import_guestfs()
    if guestfs is None:
        emit({"event": "failed", "problem": "libguestfs is not installed (Debian package python3-guestfs)"})
        return 0
    several = len(job["guests"]) > 1
    try:
        appliance = Appliance(guestfs, job["guests"])
        emit({"event": "launched"})
    except RuntimeError as exc:
        # QEMU refuses to start on one broken image: find it by halves
        emit({"event": "split", "halves": True} if several else {"event": "failed", "problem": _launch_problem(exc)})
        return 0
    lvm = appliance.lvm_guests()
    if several and len(lvm) > 1:
        # LVM volume group names are often the same in every guest ("debian-vg", "rl"): guests
        # with LVM cannot share an appliance, each is read in one of its own
        emit({"event": "split", "alone": sorted(lvm)})
        return 0
    try:
        appliance.assign_roots()
    except RuntimeError as exc:
        if several:  # one guest's broken file system fails the inspection of all: find it by halves
            emit({"event": "split", "halves": True})
            return 0
        emit({"event": "failed", "problem": f"the inspection appliance failed: {_error(exc)}"})
        return 0
    for guest in job["guests"]:
        vm = guest["vm"]
        emit({"event": "start", "vm": vm})
        try:
            result = inspect_guest(appliance, vm, job["staging"], all_files=bool(job.get("all_files")))
        except (RuntimeError, GuestDataError, OSError) as exc:
            result = {"status": "error", "problem": f"inspection failed: {_error(exc)}"}
        emit({"event": "done", "vm": vm, "result": result})
    try:
        appliance.g.shutdown()
        appliance.g.close()
    except RuntimeError:
        pass
    return 0


def main() -> int:
    job = json.loads(sys.stdin.read())
    return run(job)


if __name__ == "__main__":
    raise SystemExit(main())
