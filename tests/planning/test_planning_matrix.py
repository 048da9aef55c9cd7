"""The bitset matrix agrees with the core decision on every cell of random fleets."""

from __future__ import annotations

import json
import random
import xml.etree.ElementTree as ET

import pytest

from cpuguard.knowledge import Knowledge
from cpuguard.planning.matrix import compute_matrix
from cpuguard.records import Move
from cpuguard.requirements import build_requirements
from cpuguard.verdict import accepts, decide
from tests.conftest import EXAMPLE_POLICIES, run_cpuguard
from tests.planning.randomfleet import random_hosts, random_vms


@pytest.mark.parametrize("seed", range(12))
def test_bitset_matrix_agrees_with_decide(seed: int, knowledge: Knowledge) -> None:
    rng = random.Random(seed)
    hosts = random_hosts(rng, knowledge, rng.randint(1, 25))
    vms = random_vms(rng, knowledge, hosts, rng.randint(1, 60))
    matrix = compute_matrix(vms, hosts, knowledge)
    rows = {row.name: row for row in matrix.vms}
    assert list(rows) == sorted(v.name for v in vms)
    checked = 0
    for vm in vms:
        row = rows[vm.name]
        source = hosts.get(vm.host) if vm.host else None
        for move in (Move.LIVE, Move.COLD):
            req = build_requirements(vm.name, vm.domain, vm.policy, move, knowledge, source_host=source)
            accepted = []
            for column, name in enumerate(matrix.hosts):
                verdict = decide(req, hosts[name])
                cell = matrix.cell(row, column, move)
                assert cell.ok == accepts(req, hosts[name]), (vm, name, move)
                assert cell.missing == tuple(m.feature for m in verdict.missing)
                assert cell.forbidden == tuple(m.feature for m in verdict.forbidden_present)
                assert cell.problems == verdict.problems
                if cell.ok and name != vm.host:
                    accepted.append(name)
                checked += 1
            assert matrix.targets(row, move) == tuple(accepted)
            assert row.targets(move) == len(accepted)
            assert row.mode == (vm.policy.mode if vm.policy else "enforce")
    assert checked == 2 * len(vms) * len(hosts)
    assert len(matrix.host_classes) <= len(hosts)


def test_example_matrix_cli() -> None:
    result = run_cpuguard("plan", "matrix", "--policies", str(EXAMPLE_POLICIES))
    assert result.returncode == 1  # pbx01 and app01 have no host to move to live
    lines = result.stdout.splitlines()
    assert lines[:3] == [
        "VM x host matrix: 5 VMs, 3 hosts, 2 with no host to move to live",
        "  stranded by configuration (cpuguard advise gives the <cpu> that frees it):",
        "    app01",
    ]
    assert lines[3] == "  stranded by the workload: pbx01"
    assert lines[5:11] == [
        "       mid-node  new-node  old-node",
        "app01  cold      (here)    cold",
        "ci01   ok        ok        (here)",
        "db01   ok        (here)    no",
        "pbx01  no        (here)    no",
        "web01  (here)    ok        ok",
    ]
    assert "  pbx01 -> mid-node: missing what x86-64-v4 adds, plus 3dnowprefetch, adx," in lines


def test_example_matrix_json_by_classes() -> None:
    result = run_cpuguard("plan", "matrix", "--policies", str(EXAMPLE_POLICIES), "--format", "json")
    data = json.loads(result.stdout)
    assert data["kind"] == "matrix" and data["stranded"] == ["app01", "pbx01"]
    assert data["stranded_by_configuration"] == ["app01"] and data["stranded_by_workload"] == ["pbx01"]
    junit = run_cpuguard("plan", "matrix", "--policies", str(EXAMPLE_POLICIES), "--format", "junit").stdout
    messages = {c.get("name"): c.find("failure") for c in ET.fromstring(junit).iter("testcase")}
    app01, pbx01 = messages["app01"], messages["pbx01"]
    assert app01 is not None and app01.get("message") == (
        "no other host can take app01 live: stranded by configuration; "
        "cpuguard advise app01 gives the <cpu> that frees it"
    )
    assert pbx01 is not None and pbx01.get("message") == "no other host can take pbx01 live: stranded by the workload"
    hosts = {h["name"]: h for h in data["hosts"]}
    classes = {c["id"]: c for c in data["need_classes"]}
    pbx01 = next(v for v in data["vms"] if v["name"] == "pbx01")
    live = classes[pbx01["live_class"]]
    assert live["move"] == "live" and live["level"] == "x86-64-v4"
    assert live["accepting_host_classes"] == [hosts["new-node"]["class"]]
    mid = next(r for r in live["rejected_by"] if r["host_class"] == hosts["mid-node"]["class"])
    assert "avx512f" in mid["missing"]
    assert pbx01["live_targets"] == 0 and pbx01["cold_targets"] == 0
    cold = classes[pbx01["cold_class"]]
    assert cold["move"] == "cold" and cold["accepting_host_classes"] == [hosts["new-node"]["class"]]
    cold_rejections = {r["host_class"]: r["missing"] for r in cold["rejected_by"]}
    assert cold_rejections[hosts["mid-node"]["class"]] == ["avx512bw", "avx512f", "avx512vl"]
    assert cold_rejections[hosts["old-node"]["class"]] == ["avx", "avx2", "avx512bw", "avx512f", "avx512vl", "bmi2"]
