"""Guest inspection end to end: real disk images, the real libguestfs appliance, the real CLI.

One ``cpuguard inventory scan-guests`` reads a whole test fleet -- every disk
layout, a Rocky Linux 9 guest and the hostile catalog -- so that appliances are
shared the way an operator's run shares them; the tests then look at what it
stored and at what check, plan and metrics make of it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import need_libguestfs
from tests.guest import images

CPUGUARD = [sys.executable, "-m", "cpuguard"]
#: KVM inside a nested machine can crash the appliance: TCG is slower but always works.
APPLIANCE_ENV = {"LIBGUESTFS_BACKEND": "direct", "LIBGUESTFS_BACKEND_SETTINGS": "force_tcg"}
PROGRAM = "/usr/sbin/pbxd"
#: The ExecStart= line of the unit images.add_custom_program writes.
UNIT_EXEC_LINE = next(n for n, line in enumerate(images.UNIT_TEMPLATE.splitlines(), 1) if line.startswith("ExecStart="))

#: The hostile disks the appliance must meet (the others are refused before it starts,
#: see test_refused_before_the_appliance), with what the one line must say.
APPLIANCE_HOSTILE = {
    "encrypted": "encrypted disk (LUKS",
    "unknown-filesystem": "no file system cpuguard can read",
    "no-os": "no operating system found",
    "windows": "Windows guest",
    "corrupt-qcow2-l1": "",  # refused by qemu-img or by the appliance: either is one line
    "truncated-qcow2": "",
}
#: Hostile disks whose guest is still read; what it says is checked by its own test.
READABLE_HOSTILE = ("symlinks-to-host", "control-characters", "huge-sparse")


def run(
    *args: str | Path, env: dict[str, str] | None = None, timeout: float = 1800
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CPUGUARD, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **APPLIANCE_ENV, **(env or {})},
        check=False,
    )


@dataclass(frozen=True)
class Fleet:
    policies: Path
    disks: dict[str, images.Disk]
    roots: dict[str, images.Root]
    result: subprocess.CompletedProcess[str]

    def stored(self, vm: str) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.policies / "guests" / f"{vm}.json").read_text())
        return data

    def domain(self, vm: str) -> Path:
        return self.policies / "domains" / f"{vm}.xml"


@pytest.fixture(scope="session")
def workload_root(tmp_path_factory: pytest.TempPathFactory) -> images.Root:
    """A small Debian with a -march=haswell daemon (own library by RUNPATH, one plugin) run by an
    enabled unit, and a baseline build in /usr/local that needs nothing beyond x86-64."""
    base = tmp_path_factory.mktemp("roots")
    root = images.assembled_debian_root(base / "debian")
    root = images.add_custom_program(root, PROGRAM, march="haswell", library="runpath", plugins=1)
    return images.add_custom_program(root, "/usr/local/bin/plain", march="x86-64", unit=False)


@pytest.fixture(scope="session")
def fleet(tmp_path_factory: pytest.TempPathFactory, workload_root: images.Root) -> Fleet:
    need_libguestfs()
    work = tmp_path_factory.mktemp("guest-fleet")
    disks: dict[str, images.Disk] = {}
    roots: dict[str, images.Root] = {}
    for layout, build in images.LAYOUTS.items():
        directory = work / layout
        directory.mkdir()
        disks[f"g-{layout}"] = build(workload_root, directory)
        roots[f"g-{layout}"] = workload_root
    rocky = images.rocky9_root(work / "rocky-root")
    disks["rocky9"] = images.ext4_disk(rocky, work / "rocky9.img", table="gpt")
    roots["rocky9"] = rocky
    for name in (*APPLIANCE_HOSTILE, *READABLE_HOSTILE):
        directory = work / f"hostile-{name}"
        directory.mkdir()
        disks[f"h-{name}"] = images.HOSTILE[name](directory, images.copy_root(workload_root, directory / "root"))
    policies = work / "policies"
    (policies / "domains").mkdir(parents=True)
    (policies / "vms").mkdir()
    lines = [
        "hosts:",
        "  old: {source: 'uarch:westmere'}",
        "  new: {source: 'uarch:haswell'}",
        "  older: {source: 'uarch:core2'}",
        "vms:",
    ]
    for vm, disk in disks.items():
        (policies / "domains" / f"{vm}.xml").write_text(images.domain_xml(vm, disk.path, disk.format))
        lines.append(f"  {vm}: {{host: new, domain: domains/{vm}.xml}}")
    (policies / "inventory.yaml").write_text("\n".join(lines) + "\n")
    # a hand-written policy with a comment: a guest scan must never rewrite it
    (policies / "vms" / "g-ext4.yaml").write_text("# kept as written\nvm: g-ext4\nmode: enforce\n")
    result = run("inventory", "scan-guests", "--policies", policies, "--workers", "2")
    return Fleet(policies, disks, roots, result)


def test_scan_guests_reports_every_failure_and_completes_the_rest(fleet: Fleet) -> None:
    assert fleet.result.returncode == 2, fleet.result.stderr  # incomplete: the hostile disks
    assert "Traceback" not in fleet.result.stderr
    summary = fleet.result.stderr.strip().splitlines()[-1]
    readable = len(images.LAYOUTS) + 1 + len(READABLE_HOSTILE) - 1  # control-characters: incomplete
    assert summary.startswith(f"read {readable} of {len(fleet.disks)} guests"), fleet.result.stderr
    for vm in fleet.disks:
        if vm.startswith("g-") or vm == "rocky9" or vm in (f"h-{n}" for n in READABLE_HOSTILE):
            assert (fleet.policies / "guests" / f"{vm}.json").is_file(), fleet.result.stderr


@pytest.mark.parametrize("layout", sorted(images.LAYOUTS))
def test_every_layout_finds_the_custom_daemon_and_its_closure(fleet: Fleet, layout: str) -> None:
    vm = f"g-{layout}"
    stored = fleet.stored(vm)
    assert stored["os"]["distro"] == "debian"
    chosen = {f["path"]: f["reason"] for f in stored["files"]}
    program = fleet.roots[vm].programs[0]
    assert chosen[PROGRAM] == f"owned by no package; run by enabled unit pbxd.service (line {UNIT_EXEC_LINE})"
    assert chosen[program.library] == f"owned by no package; library of {PROGRAM} (DT_NEEDED libpbxd.so.1)"  # type: ignore[index]
    assert chosen[program.plugins[0]] == "owned by no package"  # dlopen()ed: found only as an unowned file
    assert chosen["/usr/local/bin/plain"] == "owned by no package"
    assert any(reason.startswith("library of") for reason in chosen.values())  # libc, through the closure
    needs = {b["path"]: {r["feature"] for r in b["required"]} for b in stored["binaries"]}
    assert "avx2" in needs[PROGRAM]
    assert "avx2" in needs[program.plugins[0]]
    assert not needs["/usr/local/bin/plain"] & {"avx", "avx2", "fma", "bmi2"}
    by_path = {b["path"]: b for b in stored["binaries"]}
    assert by_path[PROGRAM]["found_in"].startswith(f"{vm}'s disk vda")
    # package-owned files are built for the distribution's floor: never a need beyond it
    for binary in stored["binaries"]:
        if chosen.get(binary["path"], "").startswith("library of"):
            assert not needs[binary["path"]] & {"avx2", "avx512f", "avx512bw", "avx512vl"}, binary["path"]
    if layout == "qcow2-chain":
        assert stored["disks"][0]["chain_from"] == "image headers"
        assert len(stored["disks"][0]["layers"]) == 2
        assert any("came from the image headers" in note for note in stored["notes"])


def test_check_blocks_on_westmere_naming_the_program_in_the_guest_disk(fleet: Fleet) -> None:
    blocked = run("check", "vm", "g-ext4-gpt", "host", "old", "--cold", "--policies", fleet.policies)
    assert blocked.returncode == 1, blocked.stdout + blocked.stderr
    assert "BLOCK" in blocked.stdout
    assert f"needed by {PROGRAM} in g-ext4-gpt's disk vda" in blocked.stdout
    assert "guest scan of g-ext4-gpt's disks:" in blocked.stdout
    allowed = run("check", "vm", "g-ext4-gpt", "host", "new", "--cold", "--policies", fleet.policies)
    assert allowed.returncode == 0, allowed.stdout + allowed.stderr


def test_a_hand_written_policy_is_never_rewritten(fleet: Fleet) -> None:
    assert (fleet.policies / "vms" / "g-ext4.yaml").read_text() == "# kept as written\nvm: g-ext4\nmode: enforce\n"
    blocked = run("check", "vm", "g-ext4", "host", "old", "--cold", "--policies", fleet.policies)
    assert blocked.returncode == 1
    assert "policy: " in blocked.stdout and "g-ext4.yaml" in blocked.stdout


def test_rocky9_is_blocked_on_core2_naming_its_os_and_allowed_on_nehalem(fleet: Fleet) -> None:
    stored = fleet.stored("rocky9")
    assert stored["os"]["distro"] == "rocky"
    assert stored["os_need"]["level"] == "x86-64-v2"
    blocked = run("check", "vm", "rocky9", "host", "uarch:core2", "--cold", "--policies", fleet.policies)
    assert blocked.returncode == 1, blocked.stdout + blocked.stderr
    assert "guest OS Rocky Linux 9.4" in blocked.stdout and "needs x86-64-v2" in blocked.stdout
    allowed = run("check", "vm", "rocky9", "host", "uarch:nehalem", "--cold", "--policies", fleet.policies)
    assert allowed.returncode == 0, allowed.stdout + allowed.stderr


def test_plan_and_metrics_use_the_stored_scans(fleet: Fleet) -> None:
    plan = run("plan", "evacuate", "new", "--format", "json", "--policies", fleet.policies)
    assert plan.returncode in (1, 2), plan.stderr
    report = json.loads(plan.stdout)
    text = json.dumps(report)
    assert f"needed by {PROGRAM} in g-ext4's disk vda" in text
    metrics = run("metrics", "--policies", fleet.policies)
    assert metrics.returncode in (0, 1, 2), metrics.stderr
    assert 'vm="g-ext4"' in metrics.stdout
    assert 'cpuguard_guest_scan_age_seconds{vm="g-ext4"}' in metrics.stdout


@pytest.mark.parametrize("name", sorted(APPLIANCE_HOSTILE))
def test_hostile_disk_is_one_line_naming_the_guest(fleet: Fleet, name: str) -> None:
    vm = f"h-{name}"
    lines = [line for line in fleet.result.stderr.splitlines() if line.startswith(f"cpuguard: guest {vm}:")]
    assert len(lines) == 1, fleet.result.stderr
    assert APPLIANCE_HOSTILE[name] in lines[0]
    assert not (fleet.policies / "guests" / f"{vm}.json").exists()


def test_hostile_symlinks_resolve_inside_the_guest(fleet: Fleet) -> None:
    stored = fleet.stored("h-symlinks-to-host")
    shadow = Path("/etc/shadow").read_bytes() if Path("/etc/shadow").exists() else b""
    text = json.dumps(stored)
    for line in shadow.decode(errors="replace").splitlines()[:3]:
        assert line not in text  # nothing of the host's file
    for found in stored["files"]:
        assert not found["path"].startswith("/proc")


def test_control_characters_are_never_printed_raw(fleet: Fleet) -> None:
    out = run("scan", "--guest", fleet.domain("h-control-characters"), "--policies", fleet.policies)
    # a name that is not UTF-8 cannot pass libguestfs' binding: that file is not scanned, the result incomplete
    assert out.returncode == 2, out.stderr
    assert "unchanged since" in out.stdout  # the result scan-guests stored is reused: no second appliance
    assert "\x1b" not in out.stdout and "\x1b" not in out.stderr
    assert "/usr/local/bin/esc\\x1b[31mred (" in out.stdout  # scanned, shown escaped
    assert "/usr/local/bin/new\\nline (" in out.stdout
    assert "latin1-\\udce9: a file name that is not UTF-8" in out.stdout
    assert len(out.stderr.splitlines()) == 1 and "incomplete" in out.stderr


def test_huge_sparse_image_is_read(fleet: Fleet) -> None:
    assert fleet.stored("h-huge-sparse")["os"]["distro"] == "debian"


#: Refused by cpuguard before any appliance opens the image: (extra options, what the line says).
REFUSED_EARLY = {
    "backing-loop": (("--follow-backing",), "backing-file loop"),
    "backing-host-file": ((), "nothing vouches for"),
    "backing-no-format": (("--follow-backing",), "without a backing format"),
    "corrupt-qcow2-header": ((), "not a readable disk image"),
}


@pytest.mark.parametrize("name", sorted(REFUSED_EARLY))
def test_refused_before_the_appliance(tmp_path: Path, workload_root: images.Root, name: str) -> None:
    disk = images.HOSTILE[name](tmp_path, workload_root)
    options, says = REFUSED_EARLY[name]
    out = run("scan", "--disk", disk.path, *options)
    assert out.returncode == 2, out.stdout + out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cpuguard: error: disk disk1 ("), out.stderr
    assert says in lines[0]
    assert out.stdout == ""


def test_backing_file_of_a_bare_image_is_followed_only_on_request(tmp_path: Path, workload_root: images.Root) -> None:
    disk = images.qcow2_chain(images.ext4_disk(workload_root, tmp_path / "b.raw", table="gpt"), tmp_path)
    refused = run("scan", "--disk", disk.path)
    assert refused.returncode == 2
    assert "--follow-backing" in refused.stderr
    need_libguestfs()
    followed = run("scan", "--disk", disk.path, "--follow-backing", "--format", "json", "--no-cache")
    assert followed.returncode == 0, followed.stderr
    data = json.loads(followed.stdout)
    assert data["disks"][0]["chain_from"] == "image headers, followed on request"
    assert PROGRAM in {b["path"] for b in data["binaries"]}


def test_scan_guest_merge_into_a_policy_then_check_cold(tmp_path: Path, workload_root: images.Root) -> None:
    """The issue's own acceptance: a freshly built guest, scan --guest --merge-into, check --cold."""
    need_libguestfs()
    disk = images.qcow2_of(images.ext4_disk(workload_root, tmp_path / "pbx.raw", table="mbr"), tmp_path / "pbx.qcow2")
    domain = tmp_path / "pbx77.xml"
    domain.write_text(images.domain_xml("pbx77", disk.path, disk.format))
    policies = tmp_path / "P"
    (policies / "vms").mkdir(parents=True)
    cache = {"XDG_CACHE_HOME": str(tmp_path / "cache")}
    first = run("scan", "--guest", domain, "--merge-into", policies / "vms" / "pbx77.yaml", env=cache)
    assert first.returncode == 0, first.stderr
    assert f"{PROGRAM} (" in first.stdout and "run by enabled unit pbxd.service" in first.stdout
    assert "merged" in first.stderr
    blocked = run("check", "vm", domain, "host", "uarch:westmere", "--cold", "--policies", policies)
    assert blocked.returncode == 1, blocked.stdout + blocked.stderr
    assert f"needed by {PROGRAM} in pbx77's disk vda" in blocked.stdout
    allowed = run("check", "vm", domain, "host", "uarch:haswell", "--cold", "--policies", policies)
    assert allowed.returncode == 0, allowed.stdout + allowed.stderr
    again = run("scan", "--guest", domain, env=cache)
    assert again.returncode == 0
    assert "unchanged since" in again.stdout


def test_no_package_owned_file_of_a_real_debian_needs_avx2(debootstrap_root: images.Root, tmp_path: Path) -> None:
    """debootstrap's Debian 12, every package-owned file scanned (--all-files)."""
    need_libguestfs()
    disk = images.ext4_disk(debootstrap_root, tmp_path / "minbase.img")
    out = run("scan", "--disk", disk.path, "--all-files", "--format", "json", "--no-cache")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    owned = [f["path"] for f in data["files"] if f["reason"] == "package-owned file (--all-files)"]
    assert len(owned) > 100
    offenders = {
        b["path"]: sorted({r["feature"] for r in b["required"]} & {"avx", "avx2", "avx512f", "avx512bw", "avx512vl"})
        for b in data["binaries"]
    }
    assert {path: bad for path, bad in offenders.items() if bad} == {}
