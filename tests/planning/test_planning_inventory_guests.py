"""Guest scans beside an inventory kept apart from the policies (``--inventory DIR``):
``DIR/guests/<vm>.json``, as the Ansible playbook fetches them from the hypervisors.

check and plan read them like ``POLICIES/guests/<vm>.json``; where both directories
hold a scan of one VM, the one made last counts.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cpuguard.fleet import Fleet, check_vm
from cpuguard.guest.store import FORMAT
from cpuguard.knowledge import Knowledge
from cpuguard.levels import LEVEL_NAMES, level_features
from cpuguard.planning.load import load_fleet
from cpuguard.records import Move, Outcome
from tests.conftest import run_cpuguard

PBXD_ORIGIN = "needed by /usr/sbin/pbxd in app1's disk vda2, scanned 2026-12-06 (13 instructions in 1 function)"


def guest_scan(vm: str, scanned_at: str, *, avx2: bool) -> dict[str, object]:
    """A stored result as ``inventory scan-guests`` writes it (docs/guests.md), trimmed to what
    decisions read; with ``avx2`` its one binary needs AVX2, else nothing beyond the baseline."""
    required = [{"feature": "avx2", "instructions": 13, "functions": 1, "examples": ["main"]}] if avx2 else []
    binary = {
        "path": "/usr/sbin/pbxd",
        "sha256": "ab" * 32,
        "level": "x86-64-v3" if avx2 else "x86-64-v1",
        "required": required,
        "found_in": f"{vm}'s disk vda2",
        "reason": "owned by no package",
    }
    return {"format": FORMAT, "vm": vm, "scanned_at": scanned_at, "binaries": [binary], "problems": []}


def write_scan(directory: Path, vm: str, scanned_at: str, *, avx2: bool) -> Path:
    path = directory / "guests" / f"{vm}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(guest_scan(vm, scanned_at, avx2=avx2)))
    return path


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    """(policies, inventory): no policies at all; an inventory with an old and a new host."""
    policies = tmp_path / "policies"
    (policies / "vms").mkdir(parents=True)
    inventory = tmp_path / "inventory"
    (inventory / "domains").mkdir(parents=True)
    (inventory / "inventory.yaml").write_text(
        "hosts:\n  old: {source: 'uarch:westmere'}\n  new: {source: 'uarch:haswell'}\n"
        "vms:\n  app1: {host: new, domain: domains/app1.xml}\n"
    )
    (inventory / "domains" / "app1.xml").write_text(
        "<domain type='kvm'><name>app1</name><memory unit='MiB'>64</memory>"
        "<os><type arch='x86_64' machine='pc'>hvm</type></os>"
        "<cpu mode='custom' match='exact'><model fallback='forbid'>Westmere</model></cpu></domain>"
    )
    return policies, inventory


def check_app1(knowledge: Knowledge, policies: Path, inventory: Path) -> list[tuple[str, list[str]]]:
    fleet = Fleet.load(policies, knowledge, inventory=inventory)
    verdict = check_vm(fleet, "app1", "old", Move.COLD)
    assert (verdict.outcome is Outcome.BLOCK) == bool(verdict.missing)
    return [(m.feature, [o.detail for o in m.origins]) for m in verdict.missing]


def planned_app1(knowledge: Knowledge, policies: Path, inventory: Path) -> list[str]:
    fleet = load_fleet(policies, knowledge, inventory=inventory)
    assert fleet.problems == ()
    guest = fleet.vms["app1"].policy.guest if fleet.vms["app1"].policy else None
    baseline = level_features(LEVEL_NAMES[0])  # every x86-64 binary needs it, said or not
    return [b.path for b in guest.binaries if b.features - baseline] if guest else []


def test_without_a_scan_the_move_is_allowed(dirs: tuple[Path, Path], knowledge: Knowledge) -> None:
    policies, inventory = dirs
    assert check_app1(knowledge, policies, inventory) == []
    assert planned_app1(knowledge, policies, inventory) == []


def test_a_scan_beside_the_inventory_is_read_by_check_and_plan(dirs: tuple[Path, Path], knowledge: Knowledge) -> None:
    policies, inventory = dirs
    write_scan(inventory, "app1", "2026-12-06T05:00:00Z", avx2=True)
    assert check_app1(knowledge, policies, inventory) == [("avx2", [PBXD_ORIGIN])]
    assert planned_app1(knowledge, policies, inventory) == ["/usr/sbin/pbxd"]
    # the inventory given as its file, not its directory: the same guests/ beside it
    assert check_app1(knowledge, policies, inventory / "inventory.yaml") == [("avx2", [PBXD_ORIGIN])]


@pytest.mark.parametrize("newer", ["policies", "inventory"])
def test_of_two_scans_of_one_vm_the_later_counts(dirs: tuple[Path, Path], knowledge: Knowledge, newer: str) -> None:
    policies, inventory = dirs
    # the later scan found nothing needing AVX2 (the program was rebuilt, say)
    write_scan(policies, "app1", "2026-12-06T06:00:00Z" if newer == "policies" else "2026-12-06T05:00:00Z", avx2=False)
    write_scan(inventory, "app1", "2026-12-06T06:00:00Z" if newer == "inventory" else "2026-12-06T05:00:00Z", avx2=True)
    expected = [("avx2", [PBXD_ORIGIN])] if newer == "inventory" else []
    assert check_app1(knowledge, policies, inventory) == expected
    assert planned_app1(knowledge, policies, inventory) == (["/usr/sbin/pbxd"] if newer == "inventory" else [])


def test_an_inventory_inside_the_policies_is_not_read_twice(tmp_path: Path, knowledge: Knowledge) -> None:
    """Without --inventory the inventory is POLICIES/inventory.yaml: one guests/ directory."""
    from cpuguard.fleet import guest_scan_dirs

    policies = tmp_path / "p"
    assert guest_scan_dirs(policies, policies / "inventory.yaml") == [policies / "guests"]
    assert guest_scan_dirs(policies, None) == [policies / "guests"]
    apart = tmp_path / "inv"
    assert guest_scan_dirs(policies, apart / "inventory.yaml") == [policies / "guests", apart / "guests"]


def test_command_line_names_the_binary_and_the_file(dirs: tuple[Path, Path]) -> None:
    policies, inventory = dirs
    stored = write_scan(inventory, "app1", "2026-12-06T05:00:00Z", avx2=True)
    check = run_cpuguard("check", "vm", "app1", "host", "old", "--cold", "--policies", str(policies),
                         "--inventory", str(inventory))  # fmt: skip
    assert check.returncode == 1, check.stderr
    assert f"avx2\n        <- {PBXD_ORIGIN}\n" in check.stdout
    assert f"({stored})" in check.stdout  # the note on the scan's age names the file it came from
    plan = run_cpuguard("plan", "evacuate", "new", "--cold", "--policies", str(policies), "--inventory", str(inventory))
    assert plan.returncode == 1, plan.stderr
    assert "STRANDED  app1: no host can take it (cold)" in plan.stdout
    assert f"missing avx2\n          <- {PBXD_ORIGIN}\n" in plan.stdout
