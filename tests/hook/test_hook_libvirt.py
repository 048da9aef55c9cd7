"""The hook in two real libvirt daemons (scripts/testbed): real starts and real live migrations.

node-a is the "old" host: its snapshot says libvirt model Westmere. node-b is
"new": its snapshot is what its own libvirtd reports for this machine. Both
daemons run on this machine, so the guests (TCG, no disk) could run on
either; only cpuguard tells them apart, from the snapshots.

Without the daemons these tests skip with the reason, or fail under CI=true
(tests/libvirt_testbed.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from hook_helpers import DOMAINS, Node

from cpuguard.hook import shim
from cpuguard.hook.cache import RACY_SECONDS
from cpuguard.hook.install import hook_path, install
from cpuguard.hook.status import status
from cpuguard.hosts.snapshot import write_snapshot
from cpuguard.hosts.sources import resolve_host
from cpuguard.knowledge import load_knowledge

pytest_plugins = ["libvirt_testbed"]
pytestmark = pytest.mark.libvirt

POLICY_DB = (DOMAINS.parent / "vms" / "db01.yaml").read_text()


@pytest.fixture(scope="module")
def nodes(testbed: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Node]]:
    knowledge = load_knowledge()
    cache = tmp_path_factory.mktemp("hook-cache")
    result = {}
    for name in ("a", "b"):
        node = Node(name, testbed.etc_cpuguard(name))
        (node.etc / "policies" / "vms").mkdir(parents=True, exist_ok=True)
        (node.etc / "policies" / "vms" / "e2e-db.yaml").write_text(POLICY_DB.replace("db01", "e2e-db"))
        source = "model:Westmere" if name == "a" else testbed.uri_b
        write_snapshot(resolve_host(source, knowledge, name=f"node-{name}"), node.etc / "host.json")
        node.configure()
        install(testbed.hooks_dir(name), node.config, cache / name)
        # libvirt looks for hook scripts only when it starts or reloads (qemu.d was empty at start)
        testbed.reload(name)
        result[name] = node
    yield result
    for name in ("a", "b"):
        hook_path(testbed.hooks_dir(name)).unlink(missing_ok=True)
        testbed.reload(name)


def running_guest(testbed: Any, node: str, name: str, model: str = "Westmere", passthrough: bool = False) -> str:
    testbed.define_guest(node, name, model, passthrough)
    testbed.start_guest(node, name)
    return str(testbed.virsh(node, "domid", name).stdout.strip())


def test_incompatible_live_migration_is_refused_and_the_vm_keeps_running(testbed: Any, nodes: dict[str, Node]) -> None:
    domid = running_guest(testbed, "b", "e2e-hsw", "Haswell-noTSX")
    before = testbed.virsh("b", "dumpxml", "e2e-hsw").stdout
    done = testbed.migrate("b", "a", "e2e-hsw")
    assert done.returncode != 0
    error = " ".join(done.stderr.split())
    assert "Hook script execution failed" in error
    assert (
        "unexpected exit status 1: cpuguard: BLOCK e2e-hsw on node-a (live): missing avx, avx2, bmi1, bmi2, erms, "
        "fma, fsgsbase, invpcid, movbe, pcid, pclmulqdq, rdtscp, smep, xsave "
        "(guest CPU model Haswell-noTSX (domain XML libvirt:e2e-hsw))"
    ) in error
    assert testbed.domain_state("b", "e2e-hsw") == "running"
    assert testbed.virsh("b", "domid", "e2e-hsw").stdout.strip() == domid  # the same QEMU process
    assert testbed.virsh("b", "dumpxml", "e2e-hsw").stdout == before
    assert testbed.domain_state("a", "e2e-hsw") is None
    (record,) = nodes["a"].records("e2e-hsw")
    assert (record["operation"], record["verdict"], record["decision"]) == ("migrate", "block", "block")
    assert record["caller"] == "libvirtd"
    assert record["host"] == "node-a"


def test_compatible_live_migration_succeeds(testbed: Any, nodes: dict[str, Node]) -> None:
    """Old to new: node-b offers everything a Westmere guest sees."""
    running_guest(testbed, "a", "e2e-wsm", "Westmere")
    done = testbed.migrate("a", "b", "e2e-wsm")
    assert done.returncode == 0, done.stderr
    assert testbed.domain_state("b", "e2e-wsm") == "running"
    assert testbed.domain_state("a", "e2e-wsm") != "running"
    # the destination checks the live move, then the QEMU start it implies
    decisions = [(r["event"], r["verdict"]) for r in nodes["b"].records("e2e-wsm")]
    assert decisions == [("migrate begin", "allow"), ("prepare begin", "allow")]


def test_incoming_migration_is_checked_again_with_the_cpu_the_guest_runs_with(
    testbed: Any, nodes: dict[str, Node]
) -> None:
    """On the destination libvirt calls "prepare begin" after "migrate begin", with the guest CPU as
    QEMU runs it on the source (check='full', plus the features QEMU's Westmere has beyond libvirt's,
    like pclmulqdq). node-a's snapshot is libvirt's Westmere model, which lacks them."""
    running_guest(testbed, "b", "e2e-back", "Westmere")
    done = testbed.migrate("b", "a", "e2e-back")
    assert done.returncode != 0
    error = " ".join(done.stderr.split())
    assert "/etc/libvirt/hooks/qemu.d/cpuguard e2e-back prepare begin -) unexpected exit status 1" in error
    assert "cpuguard: BLOCK e2e-back on node-a (cold): missing " in error
    assert "pclmulqdq" in error
    assert testbed.domain_state("b", "e2e-back") == "running"
    decisions = [(r["event"], r["verdict"]) for r in nodes["a"].records("e2e-back")]
    assert decisions == [("migrate begin", "allow"), ("prepare begin", "block")]


def test_start_of_an_incompatible_vm_is_refused(testbed: Any, nodes: dict[str, Node]) -> None:
    testbed.define_guest("a", "e2e-db", "Haswell-noTSX")
    done = testbed.virsh("a", "start", "e2e-db", check=False)
    assert done.returncode != 0
    error = " ".join(done.stderr.split())
    policy = nodes["a"].etc / "policies" / "vms" / "e2e-db.yaml"
    assert (
        "cpuguard: BLOCK e2e-db on node-a (cold): missing abm, avx, avx2, bmi1, bmi2, f16c, fma, movbe, xsave "
        f"(level x86-64-v3 required by policy {policy}); avx, avx2, bmi1, bmi2"
    ) in error
    assert testbed.domain_state("a", "e2e-db") == "shut off"
    assert nodes["a"].records("e2e-db")[-1]["verdict"] == "block"


def test_warn_mode_lets_it_through_and_logs(testbed: Any, nodes: dict[str, Node]) -> None:
    node = nodes["a"]
    testbed.define_guest("a", "e2e-warn", "Haswell-noTSX")
    node.configure(mode="warn")
    try:
        done = testbed.virsh("a", "start", "e2e-warn", check=False)
    finally:
        node.configure()
    assert done.returncode == 0, done.stderr
    assert testbed.domain_state("a", "e2e-warn") == "running"
    (record,) = node.records("e2e-warn")
    assert (record["verdict"], record["decision"], record["mode"]) == ("warn", "allow", "warn")
    assert "avx2" in [m["feature"] for m in record["missing"]]
    assert record["message"].startswith("cpuguard: WARN e2e-warn on node-a (cold): missing avx, avx2")


def test_broken_config_follows_on_error(testbed: Any, nodes: dict[str, Node]) -> None:
    node = nodes["a"]
    running_guest(testbed, "b", "e2e-err", "Westmere")
    testbed.define_guest("a", "e2e-err-start", "Westmere")
    node.config.write_text("mode: [\n")
    try:
        migrated = testbed.migrate("b", "a", "e2e-err")
        started = testbed.virsh("a", "start", "e2e-err-start", check=False)
    finally:
        node.configure()
    error = " ".join(migrated.stderr.split())
    assert migrated.returncode != 0
    assert f"cpuguard: ERROR e2e-err on {os.uname().nodename} (live): could not decide: {node.config}" in error
    assert "on_error for migrate is block: refusing the live migration here" in error
    assert testbed.domain_state("b", "e2e-err") == "running"
    assert started.returncode == 0, started.stderr
    assert testbed.domain_state("a", "e2e-err-start") == "running"
    decisions = [(r["vm"], r["verdict"], r["decision"]) for r in node.records() if r["vm"].startswith("e2e-err")]
    assert decisions == [("e2e-err", "error", "block"), ("e2e-err-start", "error", "allow")]


def test_twenty_parallel_starts_leave_twenty_intact_audit_lines(testbed: Any, nodes: dict[str, Node]) -> None:
    """libvirt runs the hooks of parallel operations in parallel."""
    names = [f"e2e-par{i:02d}" for i in range(20)]
    for name in names:
        testbed.define_guest("a", name, "Haswell-noTSX")
    before = len(nodes["a"].audit_log.read_text().splitlines())
    with ThreadPoolExecutor(max_workers=20) as pool:
        results = list(pool.map(lambda n: testbed.virsh("a", "start", n, check=False), names))
    assert [r.returncode != 0 and "cpuguard: BLOCK" in r.stderr for r in results] == [True] * 20
    lines = nodes["a"].audit_log.read_text().splitlines()[before:]
    assert len(lines) == 20
    records = [json.loads(line) for line in lines]
    assert sorted(r["vm"] for r in records) == names
    assert {(r["verdict"], r["caller"]) for r in records} == {("block", "libvirtd")}


def test_status_proves_the_hook_is_live(testbed: Any, nodes: dict[str, Node]) -> None:
    running_guest(testbed, "a", "e2e-live", "Westmere")
    checks = {c.name: c for c in status(testbed.hooks_dir("a"))}
    # The interpreter and cpuguard's code are trusted only where root alone can change them; a
    # checkout below /tmp (world-writable) is not, and status must say so rather than pass.
    import cpuguard

    code = [Path(sys.executable), Path(os.path.realpath(sys.executable)), Path(cpuguard.__file__).parents[1]]
    trusted = not any(others_can_write(p) for p in code)
    code_checks = [checks.pop("interpreter").ok, checks.pop("python_path").ok]
    assert all(code_checks) if trusted else not all(code_checks)
    assert all(c.ok for c in checks.values()), checks
    assert "e2e-live start -> allow" in checks["live"].detail


def others_can_write(path: Path) -> bool:
    """Whether a user other than root could change ``path`` or any directory above it."""
    for item in [path, *path.parents]:
        info = item.lstat()
        if info.st_uid != 0 or (info.st_mode & 0o022 and not item.is_symlink()):  # a link's mode means nothing
            return True
    return False


@pytest.mark.skipif(not os.access("/dev/kvm", os.R_OK | os.W_OK), reason="host-passthrough guests need KVM")
def test_passthrough_guest_is_checked_against_the_host_the_inventory_names(
    testbed: Any, nodes: dict[str, Node]
) -> None:
    inventory = nodes["a"].etc / "policies" / "inventory.yaml"
    running_guest(testbed, "b", "e2e-pt", passthrough=True)
    running_guest(testbed, "b", "e2e-pt2", passthrough=True)
    inventory.write_text(
        f"hosts:\n  node-b: {{facts: {nodes['b'].etc / 'host.json'}}}\nvms:\n  e2e-pt: {{host: node-b}}\n"
    )
    try:
        placed = testbed.migrate("b", "a", "e2e-pt")
        unplaced = testbed.migrate("b", "a", "e2e-pt2")
    finally:
        inventory.unlink()
    assert placed.returncode != 0
    assert "(the running guest sees it now (host-passthrough on node-b))" in " ".join(placed.stderr.split())
    assert testbed.domain_state("b", "e2e-pt") == "running"
    # not in the inventory: the live rule cannot be applied in full, and the audit log says so
    assert unplaced.returncode == 0, unplaced.stderr
    notes = nodes["a"].records("e2e-pt2")[0]["notes"]
    assert notes[-1] == "the inventory does not say where e2e-pt2 runs"


def test_virsh_shows_the_hook_in_the_daemons_namespace(testbed: Any, nodes: dict[str, Node]) -> None:
    """The installed file is the one the daemon runs: same content seen from inside its mount namespace."""
    pid = int(testbed.nodes["node-a"].pidfile.read_text())
    inside = subprocess.run(
        ["nsenter", "-t", str(pid), "-m", "cat", "/etc/libvirt/hooks/qemu.d/cpuguard"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert inside == hook_path(testbed.hooks_dir("a")).read_text()


def test_starts_are_decided_from_the_precompiled_context(testbed: Any, nodes: dict[str, Node]) -> None:
    """The first start writes the plain context; the next ones read it (nothing rebuilt) and decide
    the same, though libvirt hands the hook a new domain id at every start."""
    node = nodes["a"]
    node.configure()
    time.sleep(RACY_SECONDS + 0.2)  # inputs this young are never cached
    testbed.define_guest("a", "e2e-quick", "Westmere")
    testbed.virsh("a", "start", "e2e-quick")
    testbed.virsh("a", "destroy", "e2e-quick")
    cache_dir = Path(shim.read_settings(hook_path(testbed.hooks_dir("a")).read_text())["cache_dir"])
    (cached,) = cache_dir.glob("hook-*.json")
    written = cached.stat().st_mtime_ns
    for _ in range(2):
        testbed.virsh("a", "start", "e2e-quick")
        testbed.virsh("a", "destroy", "e2e-quick")
    assert cached.stat().st_mtime_ns == written
    first, *others = node.records("e2e-quick")
    assert len(others) == 2
    assert all((r["verdict"], r["message"]) == (first["verdict"], first["message"]) for r in others)
    assert {r["caller"] for r in others} == {"libvirtd"}
