"""Bad input per item: reported one line each, the rest of the plan still produced, exit 2."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cpuguard.knowledge import Knowledge
from cpuguard.planning.load import load_fleet
from cpuguard.planning.plan import evacuate
from cpuguard.planning.records import Problem
from tests.conftest import run_cpuguard
from tests.planning.fleetfiles import EXAMPLE_HOSTS, copy_example, write_inventory


def test_corrupt_host_file_is_one_problem(tmp_path: Path, knowledge: Knowledge) -> None:
    policies = copy_example(tmp_path)
    (policies / "hosts" / "old-node.xml").write_text("<capabilities><host><cpu><arch>x86_64</arch>", "utf-8")
    fleet = load_fleet(policies, knowledge)
    assert [(p.kind, p.name) for p in fleet.problems] == [("host", "old-node")]
    assert "malformed XML" in fleet.problems[0].message
    assert sorted(fleet.hosts) == ["mid-node", "new-node"]
    plan = evacuate("new-node", list(fleet.vms.values()), fleet.hosts, knowledge, problems=fleet.problems)
    assert not plan.complete  # old-node might have been the target pbx01 needed
    # stranded only for want of facts: undecided, not stranded
    assert [v.vm for v in plan.undecided] == ["app01", "pbx01"] and plan.stranded == ()
    assert next(v for v in plan.vms if v.vm == "db01").safe == ("mid-node",)

    result = run_cpuguard("plan", "evacuate", "new-node", "--policies", str(policies))
    assert result.returncode == 2
    assert "UNDECIDED pbx01" in result.stdout and "OK        db01: mid-node (live)" in result.stdout
    head = result.stdout.splitlines()[:2]  # incomplete first
    assert head[0] == "INCOMPLETE: 1 item could not be read; the plan covers the rest:"
    assert head[1].startswith("  host old-node: ") and "malformed XML" in head[1]
    assert result.stderr == ""


def test_unknown_feature_in_a_policy_drops_only_that_vm(tmp_path: Path, knowledge: Knowledge) -> None:
    policies = copy_example(tmp_path)
    (policies / "vms" / "db01.yaml").write_text("vm: db01\nrequires:\n  features: [avx2, avx9000]\n", "utf-8")
    fleet = load_fleet(policies, knowledge)
    assert [(p.kind, p.name, p.hosts) for p in fleet.problems] == [("vm", "db01", ("new-node",))]
    assert "unknown CPU feature 'avx9000'" in fleet.problems[0].message
    assert "db01" not in fleet.vms and "pbx01" in fleet.vms
    result = run_cpuguard("plan", "evacuate", "new-node", "--policies", str(policies), "--format", "json")
    assert result.returncode == 2
    data = json.loads(result.stdout)
    assert data["complete"] is False and [v["vm"] for v in data["vms"]] == ["app01", "pbx01"]
    assert data["problems"][0]["kind"] == "vm" and data["problems"][0]["name"] == "db01"
    # evacuating another host is not affected by db01's problem
    other = run_cpuguard("plan", "evacuate", "old-node", "--policies", str(policies))
    assert other.returncode == 0, other.stdout


def test_duplicates_and_a_vm_on_two_hosts(tmp_path: Path, knowledge: Knowledge) -> None:
    policies = copy_example(tmp_path)
    write_inventory(
        policies,
        EXAMPLE_HOSTS
        + "  mid-node: {facts: hosts/old-node.xml}\n"
        + "vms:\n"
        + "  pbx01: {host: new-node, domain: domains/pbx01.xml}\n"
        + "  db01: {host: new-node, domain: domains/db01.xml}\n"
        + "  web01: {host: mid-node, domain: domains/web01.xml}\n"
        + "  db01: {host: new-node, domain: domains/db01.xml}\n"
        + "  web01: {host: old-node, domain: domains/web01.xml}\n"
        + "  ci01: {host: gone-node, domain: domains/ci01.xml}\n",
    )
    fleet = load_fleet(policies, knowledge)
    by_name = {(p.kind, p.name): p for p in fleet.problems}
    assert sorted(by_name) == [("host", "mid-node"), ("vm", "ci01"), ("vm", "db01"), ("vm", "web01")]
    assert by_name[("host", "mid-node")].message.endswith("(lines 3 and 5); the first is used")
    assert "listed on two hosts" in by_name[("vm", "web01")].message
    assert "mid-node (line 9) and old-node (line 11)" in by_name[("vm", "web01")].message
    assert by_name[("vm", "web01")].hosts == ("mid-node", "old-node")
    assert "listed twice" in by_name[("vm", "db01")].message
    assert "runs on unknown host 'gone-node'" in by_name[("vm", "ci01")].message
    assert sorted(fleet.vms) == ["db01", "pbx01"]  # web01 is left out: nobody knows where it runs
    assert fleet.hosts["mid-node"].source.endswith("mid-node.xml")  # the first entry is used

    result = run_cpuguard("plan", "evacuate", "new-node", "--policies", str(policies), "--format", "junit")
    assert result.returncode == 2
    assert 'name="pbx01"' in result.stdout and 'name="db01"' in result.stdout
    assert '<error message="listed twice' in result.stdout


def test_broken_inventory_entries(tmp_path: Path, knowledge: Knowledge) -> None:
    policies = copy_example(tmp_path)
    write_inventory(
        policies,
        EXAMPLE_HOSTS
        + "  spare: {facts: hosts/spare.json, uri: 'qemu:///system'}\n"
        + "  typo: {fact: hosts/x.json}\n"
        + "vms:\n"
        + "  pbx01: {host: new-node, domain: domains/pbx01.xml, colour: red}\n"
        + "  db01: {host: new-node, domain: domains/missing.xml}\n"
        + "extra: 1\n",
    )
    fleet = load_fleet(policies, knowledge)
    lines = sorted(p.describe() for p in fleet.problems)
    assert len(lines) == 5, lines
    assert any("unknown key 'extra'" in line for line in lines)
    assert any(line.startswith("host spare:") and "exactly one of facts, uri, source" in line for line in lines)
    assert any(line.startswith("host typo:") and "did you mean 'facts'" in line for line in lines)
    assert any(line.startswith("vm pbx01:") and "unknown key 'colour'" in line for line in lines)
    assert any(line.startswith("vm db01:") and "missing.xml: no such file" in line for line in lines)
    assert fleet.vms == {}
    assert sorted(fleet.hosts) == ["mid-node", "new-node", "old-node"]


RELEASE = threading.Event()


class SlowHypervisor:
    uri = "qemu+ssh://slow/system"

    def capabilities(self) -> str:
        RELEASE.wait(10)  # hangs like an unreachable ssh host, until the test lets it go
        return ""

    def domain_capabilities(self, arch: str | None = None) -> str:
        return self.capabilities()

    def domains(self) -> list[tuple[str, str, bool]]:
        return []

    def domain_xml(self, name: str) -> str:
        return ""

    def hostname(self) -> str:
        return "slow"


@contextmanager
def slow_connector(uri: str) -> Iterator[SlowHypervisor]:
    yield SlowHypervisor()


def test_a_host_that_times_out(tmp_path: Path, knowledge: Knowledge) -> None:
    policies = copy_example(tmp_path)
    write_inventory(
        policies,
        EXAMPLE_HOSTS
        + "  slow: {uri: 'qemu+ssh://slow/system'}\nvms:\n  pbx01: {host: new-node, domain: domains/pbx01.xml}\n",
    )
    started = time.monotonic()
    fleet = load_fleet(policies, knowledge, timeout=0.3, connector=slow_connector)
    assert time.monotonic() - started < 3
    assert fleet.problems == (Problem("host", "slow", "qemu+ssh://slow/system: no answer within 0.3 s"),)
    RELEASE.set()
    plan = evacuate("new-node", list(fleet.vms.values()), fleet.hosts, knowledge, problems=fleet.problems)
    assert plan.problems == fleet.problems and [v.vm for v in plan.vms] == ["pbx01"]


def test_a_live_libvirt_host(tmp_path: Path, knowledge: Knowledge) -> None:
    """libvirt's built-in test driver answers like a real hypervisor: its i686
    host takes none of our x86_64 guests, and the report says why."""
    policies = copy_example(tmp_path)
    write_inventory(
        policies,
        EXAMPLE_HOSTS + "  lab: {uri: 'test:///default'}\nvms:\n  web01: {host: mid-node, domain: domains/web01.xml}\n",
    )
    fleet = load_fleet(policies, knowledge)
    assert fleet.problems == ()
    assert fleet.hosts["lab"].source == "libvirt:test:///default (capabilities)"
    plan = evacuate("mid-node", list(fleet.vms.values()), fleet.hosts, knowledge)
    lab = next(c for c in plan.vms[0].candidates if c.host == "lab")
    assert lab.live.problems == ("architecture mismatch: the guest is x86_64, the host i686",)
    assert plan.vms[0].safe == ("new-node", "old-node")


def test_files_parsed_in_workers_equal_those_parsed_here(tmp_path: Path, knowledge: Knowledge) -> None:
    from cpuguard.planning.load import VmFileReader

    policies = copy_example(tmp_path)
    (policies / "domains" / "broken.xml").write_text("<domain><name>broken</name>", encoding="utf-8")
    (policies / "vms" / "ci01.yaml").write_text("vm: ci01\nrequires: {features: [avx9000]}\n", encoding="utf-8")
    files = {
        p.stem: (p, policies / "vms" / f"{p.stem}.yaml" if (policies / "vms" / f"{p.stem}.yaml").exists() else None)
        for p in sorted((policies / "domains").glob("*.xml"))
    }
    deadline = time.monotonic() + 10
    while threading.active_count() > 1 and time.monotonic() < deadline:
        time.sleep(0.05)  # threads of earlier tests finishing: workers are forked only without them
    with VmFileReader(files, knowledge, threshold=10_000) as here:
        expected = here.all()
        assert here.pool is None
    with VmFileReader(files, knowledge, threshold=1) as workers:
        assert workers.pool is not None  # really in worker processes
        assert workers.all() == expected
    by_name = {name: (domain, policy) for name, domain, policy in expected}
    assert isinstance(by_name["broken"][0], str) and "malformed XML" in by_name["broken"][0]
    assert isinstance(by_name["ci01"][1], str) and "avx9000" in by_name["ci01"][1]
    assert by_name["pbx01"][1] is not None and not isinstance(by_name["pbx01"][1], str)


def test_json_syntax_inventory_reports_duplicates(tmp_path: Path, knowledge: Knowledge) -> None:
    policies = copy_example(tmp_path)
    write_inventory(
        policies,
        '{"hosts": {"new-node": {"facts": "hosts/new-node.xml"}, "mid-node": {"facts": "hosts/mid-node.xml"}},\n'
        ' "vms": {"pbx01": {"host": "new-node", "domain": "domains/pbx01.xml"},\n'
        '         "db01": {"host": "new-node", "domain": "domains/db01.xml"},\n'
        '         "db01": {"host": "mid-node", "domain": "domains/db01.xml"}}}\n',
    )
    fleet = load_fleet(policies, knowledge)
    assert [(p.kind, p.name, p.hosts) for p in fleet.problems] == [("vm", "db01", ("mid-node", "new-node"))]
    assert fleet.problems[0].message.endswith("new-node and mid-node; left out of the plan")
    assert sorted(fleet.vms) == ["pbx01"]


def test_duplicate_keys_inside_a_policy_and_at_the_top(tmp_path: Path, knowledge: Knowledge) -> None:
    policies = copy_example(tmp_path)
    (policies / "vms" / "db01.yaml").write_text(
        "vm: db01\nrequires:\n  level: x86-64-v3\n  level: x86-64-v2\n", encoding="utf-8"
    )
    text = (policies / "inventory.yaml").read_text(encoding="utf-8")
    write_inventory(policies, text + "description: twice\n")
    fleet = load_fleet(policies, knowledge)
    messages = sorted(p.describe() for p in fleet.problems)
    assert len(messages) == 2, messages
    assert "key 'description' appears twice" in messages[0]
    assert messages[1].startswith("vm db01: ") and "duplicate key 'level' (line 4)" in messages[1]
    assert "db01" not in fleet.vms and "pbx01" in fleet.vms
