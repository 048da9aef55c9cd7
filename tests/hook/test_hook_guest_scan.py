"""Guest scans in the hook, end to end on the two libvirt daemons (scripts/testbed).

A real guest image holds a ``-march=haswell`` program (/usr/sbin/pbxd) that an
enabled systemd unit runs. ``cpuguard inventory scan-guests`` reads it through the
libguestfs appliance, once, into the policies directory both nodes' hooks use.
node-a's snapshot says ``uarch:westmere``, node-b's ``uarch:haswell``; the VM's CPU
definition (Westmere) fits both, so only the workload read from its disk can stop
a start. The guests are TCG and have no kernel to boot: starting the QEMU process
is what the hook guards.

Also: the disk of a running VM is read without disturbing it, though QEMU holds
its image lock.

Without the daemons, libguestfs or qemu-img these tests skip with the reason, or
fail under CI=true.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hook_helpers import Node

from cpuguard.hook.install import hook_path, install
from cpuguard.hosts.snapshot import write_snapshot
from cpuguard.hosts.sources import resolve_host
from cpuguard.knowledge import load_knowledge
from tests.conftest import need_libguestfs, need_tool
from tests.guest import images

pytest_plugins = ["libvirt_testbed"]
pytestmark = pytest.mark.libvirt

#: KVM inside a nested machine can crash the appliance: TCG is slower but always works.
APPLIANCE_ENV = {"LIBGUESTFS_BACKEND": "direct", "LIBGUESTFS_BACKEND_SETTINGS": "force_tcg"}
PROGRAM = "/usr/sbin/pbxd"
VM = "e2e-pbx"
LIVE_VM = "e2e-pbx-live"
FACTS = {"a": "uarch:westmere", "b": "uarch:haswell"}


def cpuguard(*args: str | Path, cache: Path, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    """The virtualenv's ``cpuguard`` command, as an operator runs it on the hypervisor."""
    command = Path(sys.executable).with_name("cpuguard")
    prefix = [str(command)] if command.exists() else [sys.executable, "-m", "cpuguard"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("CPUGUARD_")}
    env.update(APPLIANCE_ENV, XDG_CACHE_HOME=str(cache))
    return subprocess.run(
        [*prefix, *map(str, args)], capture_output=True, text=True, env=env, timeout=timeout, check=False
    )


def define(testbed: Any, node: str, name: str, disk: Path, directory: Path) -> None:
    path = directory / f"{name}-{node}.xml"
    path.write_text(images.domain_xml(name, disk, cpu=images.custom_cpu(), testbed=True))
    testbed.virsh(node, "define", str(path))


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class Fleet:
    nodes: dict[str, Node]
    policies: Path  # shared by both nodes' hooks
    work: Path
    cache: Path
    image: images.Disk  # the guest's ext4 disk (raw), to make more qcow2 disks from


@pytest.fixture(scope="module")
def fleet(testbed: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    """Both nodes run the hook on one policies directory (as if it were shared storage)."""
    need_tool("qemu-img")
    need_libguestfs()
    work = tmp_path_factory.mktemp("guest-hook")
    root = images.assembled_debian_root(work / "root")
    root = images.add_custom_program(root, PROGRAM, march="haswell", unit=True, enabled=True)
    image = images.ext4_disk(root, work / "guest.raw", table="gpt")
    policies = work / "policies"
    (policies / "vms").mkdir(parents=True)
    (policies / "inventory.yaml").write_text(
        f"hosts:\n  node-a: {{uri: '{testbed.uri_a}'}}\n  node-b: {{uri: '{testbed.uri_b}'}}\n"
        f"vms:\n  {VM}: {{host: node-a}}\n"
    )
    knowledge = load_knowledge()
    hook_cache = work / "hook-cache"
    nodes = {}
    for name in ("a", "b"):
        node = Node(name, testbed.etc_cpuguard(name))
        write_snapshot(resolve_host(FACTS[name], knowledge, name=f"node-{name}"), node.etc / "host.json")
        settings = {
            "policies": str(policies),
            "host_facts": "host.json",
            "audit_log": "audit.jsonl",
            "host_name": f"node-{name}",
            "check_permissions": False,  # pytest's directories are below /tmp, which every user can write
        }
        node.config.write_text(json.dumps(settings, indent=2) + "\n")
        install(testbed.hooks_dir(name), node.config, hook_cache / name)
        testbed.reload(name)  # libvirt looks for hook scripts only when it starts or reloads
        nodes[name] = node
    yield Fleet(nodes, policies, work, work / "cache", image)
    for name in ("a", "b"):
        hook_path(testbed.hooks_dir(name)).unlink(missing_ok=True)
        testbed.reload(name)


@pytest.fixture(scope="module")
def scanned(testbed: Any, fleet: Fleet) -> dict[str, Any]:
    """VM defined on both nodes (one disk), its disks read by ``inventory scan-guests``; the stored result."""
    disk = images.qcow2_of(fleet.image, fleet.work / f"{VM}.qcow2").path
    for node in ("a", "b"):
        define(testbed, node, VM, disk, fleet.work)
    done = cpuguard("inventory", "scan-guests", VM, "--policies", fleet.policies, cache=fleet.cache)
    assert done.returncode == 0, done.stderr
    assert f"read 1 of 1 guests (1 written to {fleet.policies / 'guests'}" in done.stderr
    stored = fleet.policies / "guests" / f"{VM}.json"
    result: dict[str, Any] = json.loads(stored.read_text())
    # the domain XML came from node-a's libvirt, as the inventory places the VM there
    assert [layer["path"] for d in result["disks"] for layer in d["layers"]] == [str(disk)]
    return result


def pbxd_origin(result: dict[str, Any], feature: str) -> str:
    """What a decision says about ``feature`` needed by the scanned program (docs/guests.md)."""
    (entry,) = [b for b in result["binaries"] if b["path"] == PROGRAM]
    (need,) = [r for r in entry["required"] if r["feature"] == feature]
    functions = f"{need['functions']} function{'s' if need['functions'] != 1 else ''}"
    return (
        f"needed by {PROGRAM} in {entry['found_in']}, scanned {result['scanned_at'][:10]} "
        f"({need['instructions']} instructions in {functions})"
    )


def test_the_scan_found_the_program_its_unit_runs(scanned: dict[str, Any]) -> None:
    (entry,) = [b for b in scanned["binaries"] if b["path"] == PROGRAM]
    assert {r["feature"] for r in entry["required"]} >= {"avx", "avx2"}
    assert entry["found_in"] == f"{VM}'s disk vda2"  # partition 2 of the GPT disk
    assert scanned["problems"] == []
    assert scanned["os"]["os_id"] == "debian"


def test_start_on_a_westmere_node_is_refused_naming_the_program_and_the_disk(
    testbed: Any, fleet: Fleet, scanned: dict[str, Any]
) -> None:
    node = fleet.nodes["a"]
    done = testbed.virsh("a", "start", VM, check=False)
    assert done.returncode != 0
    error = " ".join(done.stderr.split())
    assert "Hook script execution failed" in error
    stored = fleet.policies / "guests" / f"{VM}.json"
    when = f"{scanned['scanned_at'][:10]} {scanned['scanned_at'][11:16]} UTC"
    assert (
        f"/etc/libvirt/hooks/qemu.d/cpuguard {VM} prepare begin -) unexpected exit status 1: "
        f"cpuguard: BLOCK {VM} on node-a (cold): missing avx ({pbxd_origin(scanned, 'avx')}); "
        f"avx2 ({pbxd_origin(scanned, 'avx2')}); "
        f"note: guest scan of {VM}'s disks: {when}, less than an hour old ({stored})"
    ) in error
    assert testbed.domain_state("a", VM) == "shut off"
    (record,) = node.records(VM)
    assert (record["event"], record["verdict"], record["decision"]) == ("prepare begin", "block", "block")
    assert record["caller"] == "libvirtd"
    # every missing feature comes from the program found on the disk, nothing from the CPU definition
    missing = {m["feature"]: m["needed_by"] for m in record["missing"]}
    assert missing == {f: [pbxd_origin(scanned, f)] for f in missing}
    assert {"avx", "avx2"} <= set(missing)
    # decided from the stored result, never from the disk: the record names the result file and its content
    assert record["guest_scan"] == {"path": str(stored), "sha256": sha256(stored)[:16]}


def test_start_on_a_haswell_node_is_allowed(testbed: Any, fleet: Fleet, scanned: dict[str, Any]) -> None:
    node = fleet.nodes["b"]
    done = testbed.virsh("b", "start", VM, check=False)
    try:
        assert done.returncode == 0, done.stderr
        assert testbed.domain_state("b", VM) == "running"
        (record,) = node.records(VM)
        assert (record["event"], record["verdict"]) == ("prepare begin", "allow")
        stored = fleet.policies / "guests" / f"{VM}.json"
        assert record["guest_scan"] == {"path": str(stored), "sha256": sha256(stored)[:16]}
    finally:
        testbed.virsh("b", "destroy", VM, check=False)


def test_a_running_vms_disk_is_read_without_disturbing_it(testbed: Any, fleet: Fleet) -> None:
    """QEMU holds a write lock on a running VM's image; the scan must neither fail on it nor break it."""
    top = images.qcow2_chain(fleet.image, fleet.work, name="live")  # live.qcow2 on live-base.qcow2
    base = top.chain[0]
    base_before = sha256(base)
    define(testbed, "b", LIVE_VM, top.path, fleet.work)
    testbed.start_guest("b", LIVE_VM)
    try:
        domid = testbed.virsh("b", "domid", LIVE_VM).stdout.strip()
        locked = subprocess.run(["qemu-img", "info", str(top.path)], capture_output=True, text=True, check=False)
        assert locked.returncode != 0 and 'Failed to get shared "write" lock' in locked.stderr  # QEMU holds it
        live_xml = fleet.work / f"{LIVE_VM}-running.xml"
        live_xml.write_text(testbed.virsh("b", "dumpxml", LIVE_VM).stdout)
        assert "<backingStore type='file'" in live_xml.read_text()  # libvirt names the chain of a running VM

        done = cpuguard("scan", "--guest", live_xml, "--format", "json", "--no-cache", cache=fleet.cache)

        assert done.returncode == 0, done.stderr
        result = json.loads(done.stdout)
        (disk,) = result["disks"]
        assert disk["chain_from"] == "domain XML"
        assert [layer["path"] for layer in disk["layers"]] == [str(top.path), str(base)]
        assert result["problems"] == []
        (entry,) = [b for b in result["binaries"] if b["path"] == PROGRAM]
        assert "avx2" in {r["feature"] for r in entry["required"]}
        # the VM runs on, in the same QEMU process, and its disks were not written
        assert testbed.domain_state("b", LIVE_VM) == "running"
        assert testbed.virsh("b", "domid", LIVE_VM).stdout.strip() == domid
        assert sha256(base) == base_before
    finally:
        testbed.virsh("b", "destroy", LIVE_VM, check=False)
