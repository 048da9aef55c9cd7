"""Planning reads the inventory item by item; where the file is valid it must agree with the core's reader."""

from __future__ import annotations

from pathlib import Path

import pytest

from cpuguard.errors import BadInput
from cpuguard.inventory import read_inventory
from cpuguard.planning.inventory_file import document_problems, host_entries, read_document, uri_hosts, vm_entries
from cpuguard.planning.records import Problem
from tests.conftest import EXAMPLE_POLICIES
from tests.planning.fleetfiles import copy_example, write_inventory


def _planning_view(policies: Path) -> tuple[dict[str, object], dict[str, object], list[Problem]]:
    """What load_fleet reads of the inventory (VMs of an unreadable host are kept: their host is)."""
    path = policies / "inventory.yaml"
    raw = read_document(path)
    problems = document_problems(raw, path)
    hosts = host_entries(raw, path, problems)
    unreadable = {p.name for p in problems if p.kind == "host"}
    vms, _listed = vm_entries(raw, path, set(hosts) | unreadable, problems)
    return dict(hosts), dict(vms), problems


def test_the_example_inventory_reads_as_the_core_reads_it() -> None:
    core = read_inventory(EXAMPLE_POLICIES)
    hosts, vms, problems = _planning_view(EXAMPLE_POLICIES)
    assert problems == []
    assert hosts == core.hosts and vms == core.vms
    assert sorted(hosts) == ["mid-node", "new-node", "old-node"]


def test_every_kind_of_host_source_reads_as_the_core_reads_it(tmp_path: Path) -> None:
    policies = copy_example(tmp_path)
    write_inventory(
        policies,
        "hosts:\n"
        "  old-node: {facts: hosts/old-node.xml, cluster: legacy, description: Westmere}\n"
        "  node3: {uri: 'qemu+ssh://node3/system'}\n"
        "  spare: {source: 'uarch:icelake'}\n"
        "vms:\n"
        "  ci01: {host: old-node, domain: domains/ci01.xml}\n"
        "  planned: {}\n",
    )
    core = read_inventory(policies)
    hosts, vms, problems = _planning_view(policies)
    assert problems == []
    assert hosts == core.hosts and vms == core.vms
    assert uri_hosts(policies / "inventory.yaml") == [("node3", "qemu+ssh://node3/system")]


def test_a_bad_entry_is_one_problem_where_the_core_refuses_the_file(tmp_path: Path) -> None:
    policies = copy_example(tmp_path)
    write_inventory(
        policies,
        "hosts:\n"
        "  old-node: {facts: hosts/old-node.xml, uri: 'qemu:///system'}\n"
        "  mid-node: {facts: hosts/mid-node.xml}\n"
        "vms:\n"
        "  web01: {host: mid-node, domain: domains/web01.xml}\n"
        "  ci01: {host: old-node}\n"
        "  db01: {host: no-such-node}\n",
    )
    path = policies / "inventory.yaml"
    with pytest.raises(BadInput) as refused:
        read_inventory(policies)
    assert refused.value.line() == f"{path}: hosts.old-node: give exactly one of facts, uri, source"
    hosts, vms, problems = _planning_view(policies)
    assert problems == [
        Problem("host", "old-node", f"{path}: hosts.old-node: give exactly one of facts, uri, source"),
        Problem("vm", "db01", f"{path}: vms.db01: runs on unknown host 'no-such-node'", ("no-such-node",)),
    ]
    assert list(hosts) == ["mid-node"]
    assert sorted(vms) == ["ci01", "web01"]
