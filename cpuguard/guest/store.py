"""Guest scan results as files: written by ``inventory scan-guests`` beside the hand-written
policies (``POLICIES/guests/<vm>.json``), read by check, plan, metrics and the hook.

The file is generated and rewritten whole on every scan; nobody edits it, so
a person's YAML (comments included) is never touched. Format (an interface,
docs/guests.md)::

    {"format": "cpuguard-guest-scan/1", "vm": "pbx01", "scanned_at": "2026-12-06T10:00:00Z",
     "cpuguard": "0.1.0", "fingerprint": "…",
     "disks": [{"target": "vda", "kind": "file", "chain_from": "domain XML",
                "layers": [{"path": "/var/lib/libvirt/images/pbx01.qcow2", "format": "qcow2"}]}],
     "os": {"kind": "linux", "distro": "rocky", "name": "Rocky Linux 9.4 (Blue Onyx)", …},
     "os_need": {"level": "x86-64-v2", "family": "RHEL 9 family", "source": "…"},
     "files": [{"path": "/usr/sbin/asterisk", "reason": "owned by no package", "disk": "vda2"}],
     "binaries": [ …entries of a policy's binaries: section, with found_in and reason… ],
     "problems": [], "notes": []}
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cpuguard import __version__
from cpuguard.errors import BadInput
from cpuguard.guest.records import Disk, GuestNeeds, GuestOs, GuestScan, OsNeed
from cpuguard.scan.policy import policy_binaries_from_data, report_to_policy_binaries
from cpuguard.scan.serialize import iso

FORMAT = "cpuguard-guest-scan/1"
GUESTS_DIR = "guests"
#: A result older than this is a warning in every decision that uses it.
STALE_AFTER_DAYS = 7.0
MAX_RESULT_BYTES = 64 * 1024 * 1024


def result_path(policies: Path, vm: str) -> Path:
    return policies / GUESTS_DIR / f"{vm}.json"


def fingerprint(disks: Sequence[Disk], *, all_files: bool) -> str:
    """What an unchanged guest keeps: every image file's identity, size and time, and
    cpuguard's own version and knowledge. Empty (never reused) for block devices."""
    from cpuguard.scan.cache import fingerprint as scanner_fingerprint

    parts: list[Any] = [FORMAT, __version__, scanner_fingerprint(), all_files]
    for disk in disks:
        if disk.kind != "file":
            return ""
        for layer in disk.layers:
            try:
                info = os.stat(layer.path)
            except OSError:
                return ""
            parts.append([disk.target, layer.path, layer.format, info.st_dev, info.st_ino, info.st_size,
                          info.st_mtime_ns, info.st_ctime_ns])  # fmt: skip
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()


def _disk_to_dict(disk: Disk) -> dict[str, Any]:
    return {
        "target": disk.target,
        "kind": disk.kind,
        "chain_from": disk.chain_from,
        "layers": [{"path": layer.path, "format": layer.format} for layer in disk.layers],
    }


def found_in(vm: str, disk: str) -> str:
    return f"{vm}'s disk {disk}"


def scan_to_dict(scan: GuestScan) -> dict[str, Any]:
    """The stored form of a guest scan (also ``scan --guest --format json``)."""
    from cpuguard.scan.serialize import report_to_dict

    where = {f.path: f for f in scan.files}
    binaries = report_to_policy_binaries(scan.report)
    for entry in binaries:
        chosen = where.get(entry["path"])
        if chosen is not None:
            entry["found_in"] = found_in(scan.vm, chosen.disk)
            entry["reason"] = chosen.reason
    guest_os = scan.os
    return {
        "format": FORMAT,
        "vm": scan.vm,
        "scanned_at": iso(scan.scanned_at),
        "cpuguard": __version__,
        "fingerprint": scan.fingerprint,
        "disks": [_disk_to_dict(d) for d in scan.disks],
        "os": None
        if guest_os is None
        else {
            "kind": guest_os.kind,
            "distro": guest_os.distro,
            "name": guest_os.name,
            "version": guest_os.version,
            "os_id": guest_os.os_id,
            "id_like": list(guest_os.id_like),
            "version_id": guest_os.version_id,
            "root": guest_os.root,
        },
        "os_need": None
        if scan.os_need is None
        else {
            "level": scan.os_need.level,
            "family": scan.os_need.family,
            "source": scan.os_need.source,
            "note": scan.os_need.note,
        },
        "files": [
            {"path": f.path, "reason": f.reason, "disk": f.disk, **({"problem": f.problem} if f.problem else {})}
            for f in scan.files
        ],
        "binaries": binaries,
        "problems": list(scan.problems),
        "notes": list(scan.notes),
        "report": report_to_dict(scan.report),
    }


def write_result(path: Path, data: Mapping[str, Any]) -> None:
    """Write atomically: the hook may read the file at any moment."""
    if not path.parent.is_dir():
        try:
            path.parent.mkdir(mode=0o755)
        except OSError as exc:
            raise BadInput(path.parent, f"cannot create: {exc.strerror or exc}") from None
    try:
        fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=1)
            handle.write("\n")
        os.chmod(temp, 0o644)
        os.replace(temp, path)
    except OSError as exc:
        raise BadInput(path, f"cannot write: {exc.strerror or exc}") from None


def _moment(value: Any, where: Path) -> datetime:
    try:
        moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise BadInput(where, f"scanned_at: not an ISO 8601 time: {value!r}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def parse_result(data: bytes, where: Path) -> dict[str, Any]:
    from cpuguard.jsonsafe import parse_json

    raw = parse_json(data, where)
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise BadInput(where, f"not a guest scan result (expected \"format\": \"{FORMAT}\")")
    for key, kind in (("vm", str), ("scanned_at", str), ("binaries", list), ("problems", list)):
        if not isinstance(raw.get(key), kind):
            raise BadInput(where, f"{key}: missing or of the wrong type")
    return raw


def needs_from_result(
    raw: Mapping[str, Any],
    where: Path,
    *,
    vm: str | None = None,
    now: datetime | None = None,
    stale_after_days: float = STALE_AFTER_DAYS,
) -> GuestNeeds:
    """The decision's view of a stored result; its age is taken at ``now``."""
    from cpuguard.levels import normalize_level

    if vm is not None and raw["vm"] != vm:
        raise BadInput(where, f"result is for VM {raw['vm']!r}, expected {vm!r} (file name and 'vm' must agree)")
    scanned_at = _moment(raw["scanned_at"], where)
    os_need = None
    need = raw.get("os_need")
    if need is not None:
        if not isinstance(need, dict) or not isinstance(need.get("level"), str):
            raise BadInput(where, "os_need: expected a mapping with a level")
        os_need = OsNeed(
            normalize_level(need["level"], where),
            str(need.get("family", "")),
            str(need.get("source", "")),
            str(need.get("note", "")),
        )
    binaries = tuple(policy_binaries_from_data(raw["binaries"], where))
    guest_os = raw.get("os")
    os_name = str(guest_os.get("name") or "") if isinstance(guest_os, dict) else None
    age = (now - scanned_at).total_seconds() / 86400 if now is not None else 0.0
    return GuestNeeds(
        vm=str(raw["vm"]),
        source=str(where),
        scanned_at=scanned_at,
        os_name=os_name or None,
        os_need=os_need,
        binaries=tuple(replace(b, scanned_at=b.scanned_at or scanned_at) for b in binaries),
        problems=tuple(str(p) for p in raw["problems"]),
        age_days=max(age, 0.0),
        stale=age > stale_after_days,
    )


def read_needs(
    path: Path, *, vm: str | None = None, now: datetime | None = None, stale_after_days: float = STALE_AFTER_DAYS
) -> GuestNeeds:
    from cpuguard.xmlsafe import read_bytes

    raw = parse_result(read_bytes(path, MAX_RESULT_BYTES), path)
    return needs_from_result(raw, path, vm=vm, now=now, stale_after_days=stale_after_days)


def find_needs(policies: Path, vm: str, *, now: datetime | None = None) -> GuestNeeds | None:
    """The stored guest scan of ``vm`` in a policies directory, or None."""
    path = result_path(policies, vm)
    if not path.exists():
        return None
    return read_needs(path, vm=vm, now=now)


def _os_from_dict(raw: Mapping[str, Any]) -> GuestOs:
    return GuestOs(
        kind=str(raw["kind"]),
        distro=str(raw["distro"]),
        name=str(raw["name"]),
        version=str(raw["version"]),
        os_id=str(raw.get("os_id", "")),
        id_like=tuple(str(x) for x in raw.get("id_like", ())),
        version_id=str(raw.get("version_id", "")),
        root=str(raw.get("root", "")),
    )


def scan_from_dict(raw: Mapping[str, Any], where: Path) -> GuestScan:
    """Inverse of :func:`scan_to_dict` (a reused result of an unchanged guest)."""
    from cpuguard.guest.records import CHAIN_NONE, Found, Layer
    from cpuguard.scan.records import ScanReport
    from cpuguard.scan.serialize import file_from_dict
    from cpuguard.scan.summary import totals

    try:
        files = tuple(file_from_dict(f) for f in raw["report"]["files"])
        disks = tuple(
            Disk(
                str(d["target"]),
                str(d["kind"]),
                tuple(Layer(str(x["path"]), str(x["format"])) for x in d["layers"]),
                str(d.get("chain_from", CHAIN_NONE)),
            )
            for d in raw["disks"]
        )
        found = tuple(
            Found(str(f["path"]), str(f["reason"]), str(f["disk"]), problem=str(f.get("problem", "")))
            for f in raw["files"]
        )
        guest_os = raw.get("os")
        need = raw.get("os_need")
        scanned_at = _moment(raw["scanned_at"], where)
        return GuestScan(
            vm=str(raw["vm"]),
            disks=disks,
            scanned_at=scanned_at,
            os=_os_from_dict(guest_os) if isinstance(guest_os, dict) else None,
            os_need=OsNeed(str(need["level"]), str(need["family"]), str(need["source"]), str(need.get("note", "")))
            if isinstance(need, dict)
            else None,
            files=found,
            report=ScanReport(files, totals(files), scanned_at),
            problems=tuple(str(p) for p in raw["problems"]),
            notes=tuple(str(n) for n in raw.get("notes", ())),
            fingerprint=str(raw.get("fingerprint", "")),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise BadInput(where, f"not a usable guest scan result ({type(exc).__name__}: {exc})") from None
