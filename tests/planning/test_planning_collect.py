"""``cpuguard inventory collect`` against libvirt's built-in test driver (no daemon,
no network: ``test:///path/node.xml`` is a hypervisor described by a file)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.conftest import EXAMPLE_POLICIES, run_cpuguard

DOMAIN = """
  <domain type='test'>
    <name>{name}</name>
    <memory>1048576</memory>
    <os><type arch='x86_64'>hvm</type></os>
    <cpu mode='custom'><model>Westmere</model></cpu>{state}
  </domain>"""
SHUT_OFF = "\n    <test:runstate>5</test:runstate>"


def node(tmp_path: Path, name: str, domains: dict[str, bool]) -> str:
    """A test-driver hypervisor file with these domains (name -> running)."""
    body = "".join(DOMAIN.format(name=d, state="" if up else SHUT_OFF) for d, up in domains.items())
    path = tmp_path / f"{name}.xml"
    path.write_text(f"<node xmlns:test='http://libvirt.org/schemas/domain/test/1.0'>{body}\n</node>\n", "utf-8")
    return f"{name}=test://{path}"


def test_collect_writes_files_ci_can_plan_with(tmp_path: Path) -> None:
    out = tmp_path / "inventory"
    n1 = node(tmp_path, "n1", {"app01": True, "moved01": True, "both01": True})
    n2 = node(tmp_path, "n2", {"web02": True, "moved01": False, "both01": True})
    missing = f"n3=test://{tmp_path / 'no-such-node.xml'}"
    result = run_cpuguard("inventory", "collect", "--output", str(out), n1, n2, missing, "--timeout", "20")
    assert result.returncode == 2, result.stderr
    assert "[3/3]" in result.stderr
    assert "cpuguard: vm both01: running on two hosts at once: n1, n2" in result.stderr
    assert "collected 2 of 3 hosts into" in result.stderr

    inventory = yaml.safe_load((out / "inventory.yaml").read_text())
    assert inventory["hosts"] == {"n1": {"facts": "hosts/n1.json"}, "n2": {"facts": "hosts/n2.json"}}
    assert inventory["vms"] == {
        "app01": {"host": "n1", "domain": "domains/n1/app01.xml"},
        "moved01": {"host": "n1", "domain": "domains/n1/moved01.xml"},  # runs on n1, a stale definition on n2
        "web02": {"host": "n2", "domain": "domains/n2/web02.xml"},
    }
    report = json.loads((out / "collect-report.json").read_text())
    assert report["hosts"]["n3"]["status"] == "unreachable"
    assert report["hosts"]["n2"]["domains"] == {"both01": "running", "moved01": "shut off", "web02": "running"}
    assert json.loads((out / "hosts" / "n1.json").read_text())["cpuguard_snapshot"] == 1
    assert "<name>app01</name>" in (out / "domains" / "n1" / "app01.xml").read_text()

    # CI plans from the files alone; the collect problems make the plan incomplete
    plan = run_cpuguard(
        "plan", "evacuate", "n1", "--inventory", str(out), "--policies", str(EXAMPLE_POLICIES), "--format", "json"
    )
    assert plan.returncode == 2, plan.stderr
    data = json.loads(plan.stdout)
    assert sorted(v["vm"] for v in data["vms"]) == ["app01", "moved01"]
    assert {(p["kind"], p["name"]) for p in data["problems"]} == {("host", "n3"), ("vm", "both01")}


def test_collect_again_forgets_what_is_gone(tmp_path: Path) -> None:
    out = tmp_path / "inventory"
    first = node(tmp_path, "n1", {"app01": True, "old01": True})
    assert run_cpuguard("inventory", "collect", "-o", str(out), first).returncode == 0
    second = node(tmp_path, "n1", {"app01": True})
    result = run_cpuguard("inventory", "collect", "-o", str(out), second)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (out / "domains" / "n1").iterdir()) == ["app01.xml"]
    assert list(yaml.safe_load((out / "inventory.yaml").read_text())["vms"]) == ["app01"]


def test_index_files_gathered_by_ansible(tmp_path: Path) -> None:
    out = tmp_path / "inventory"
    (out / "hosts").mkdir(parents=True)
    (out / "domains" / "old-node").mkdir(parents=True)
    (out / "hosts" / "old-node.xml").write_bytes((EXAMPLE_POLICIES / "hosts" / "old-node.xml").read_bytes())
    (out / "hosts" / "new-node.xml").write_bytes((EXAMPLE_POLICIES / "hosts" / "new-node.xml").read_bytes())
    (out / "domains" / "old-node" / "ci01.xml").write_bytes((EXAMPLE_POLICIES / "domains" / "ci01.xml").read_bytes())
    ghost = out / "domains" / "ghost-node"
    ghost.mkdir()
    (ghost / "web01.xml").write_bytes((EXAMPLE_POLICIES / "domains" / "web01.xml").read_bytes())
    result = run_cpuguard("inventory", "index", str(out))
    assert result.returncode == 2
    assert "host ghost-node: domains/ghost-node/ has domain XML but no hosts/ghost-node facts" in result.stderr
    (ghost / "web01.xml").unlink()
    ghost.rmdir()
    assert run_cpuguard("inventory", "index", str(out)).returncode == 0
    plan = run_cpuguard("plan", "evacuate", "old-node", "--inventory", str(out), "--policies", str(EXAMPLE_POLICIES))
    assert plan.returncode == 0, plan.stdout + plan.stderr
    assert "OK        ci01: new-node (live)" in plan.stdout


def test_collect_usage_errors(tmp_path: Path) -> None:
    no_hosts = run_cpuguard("inventory", "collect", "-o", str(tmp_path / "x"))
    assert no_hosts.returncode == 2 and "no hosts to collect" in no_hosts.stderr
    bad = run_cpuguard("inventory", "collect", "-o", str(tmp_path / "x"), "node3")
    assert bad.returncode == 2 and "not a libvirt URI" in bad.stderr
    named = run_cpuguard("inventory", "collect", "-o", str(tmp_path / "x"), "a=test:///default", "a=test:///default")
    assert named.returncode == 2 and "host name 'a' given twice" in named.stderr


def test_collect_the_uri_hosts_of_an_inventory(tmp_path: Path) -> None:
    n1 = node(tmp_path, "n1", {"app01": True}).partition("=")[2]
    source = tmp_path / "fleet.yaml"
    source.write_text(
        f"hosts:\n  n1: {{uri: '{n1}', cluster: main}}\n  old-node: {{facts: old-node.xml}}\n"
        "vms:\n  app01: {host: n1}\n",
        encoding="utf-8",
    )
    out = tmp_path / "inventory"
    result = run_cpuguard("inventory", "collect", "-o", str(out), "--from-inventory", str(source))
    assert result.returncode == 0, result.stderr
    assert "collected 1 of 1 hosts into" in result.stderr  # facts: hosts are not libvirt hosts
    assert yaml.safe_load((out / "inventory.yaml").read_text())["hosts"] == {"n1": {"facts": "hosts/n1.json"}}


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("hosts:\n  n1: {uri: 5}\n", "hosts.n1.uri: expected string, got integer"),
        ("hosts:\n  n1: {url: 'test:///default'}\n", "hosts.n1: unknown key 'url'; did you mean 'uri'?"),
        ("host:\n  n1: {uri: 'test:///default'}\n", "top level: unknown key 'host'; did you mean 'hosts'?"),
        ("hosts: [n1]\n", "hosts: expected object, got array"),
        ("- n1\n", "top level: expected object, got array"),
        ("vms:\n  app01: {host: [n1]}\n", "vms.app01.host: expected string, got array"),
        (
            "hosts:\n  n1: {uri: 'test:///default', facts: n1.json}\n",
            "hosts.n1: give exactly one of facts, uri, source",
        ),
        (
            "hosts:\n  n1: {uri: 'test:///default'}\n  n1: {uri: 'test:///default'}\n",
            "invalid YAML: duplicate key 'n1' (line 3)",
        ),
        ("hosts:\n  n1: {uri: node1}\n", "hosts.n1.uri: 'node1' is not a libvirt URI (e.g. qemu+ssh://node3/system)"),
        ("hosts:\n  ../n1: {uri: 'test:///default'}\n", "hosts.../n1: host name not usable as a file name"),
    ],
)
def test_collect_refuses_an_invalid_inventory_in_one_line(tmp_path: Path, text: str, problem: str) -> None:
    source = tmp_path / "fleet.yaml"
    source.write_text(text, encoding="utf-8")
    out = tmp_path / "inventory"
    result = run_cpuguard("inventory", "collect", "-o", str(out), "--from-inventory", str(source))
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr == f"cpuguard: error: {source}: {problem}\n"
    assert not out.exists()  # refused before anything is written
