"""``cpuguard plan evacuate`` on the example fleet: pure API and command line."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from cpuguard.knowledge import Knowledge
from cpuguard.planning.load import PlanFleet, load_fleet
from cpuguard.planning.plan import EXIT_INCOMPLETE, evacuate, exit_code
from cpuguard.records import Move
from tests.conftest import EXAMPLE_POLICIES, run_cpuguard


@pytest.fixture(scope="module")
def fleet(knowledge: Knowledge) -> PlanFleet:
    return load_fleet(EXAMPLE_POLICIES, knowledge)


def test_example_fleet_loads_without_problems(fleet: PlanFleet) -> None:
    assert fleet.problems == ()
    assert sorted(fleet.hosts) == ["mid-node", "new-node", "old-node"]
    assert [v.name for v in fleet.vms_on("new-node")] == ["app01", "db01", "pbx01"]


def test_pbx01_is_stranded_with_missing_features_per_candidate(fleet: PlanFleet, knowledge: Knowledge) -> None:
    plan = evacuate("new-node", list(fleet.vms.values()), fleet.hosts, knowledge)
    assert plan.targets == ("mid-node", "old-node")
    # app01 is pinned by its host-passthrough CPU alone: a restart elsewhere would work
    assert [v.vm for v in plan.stranded] == ["app01", "pbx01"]
    assert plan.stranded[0].cold_only == ("mid-node", "old-node")
    pbx01 = plan.vms[1]
    assert pbx01.vm == "pbx01" and pbx01.stranded
    # its Asterisk build uses AVX-512: not even a restart on another host would work
    assert pbx01.cold_only == ()
    missing = {c.host: {m.feature for m in c.live.missing} for c in pbx01.candidates}
    # Skylake-SP's AVX-512 is what the running guest has seen since boot
    assert {"avx512f", "avx512bw", "avx512vl", "clwb"} <= missing["mid-node"]
    assert "avx2" not in missing["mid-node"]
    assert {"avx", "avx2", "bmi2", "avx512f"} <= missing["old-node"]
    origins = {o.kind for c in pbx01.candidates for m in c.live.missing for o in m.origins}
    assert origins == {"policy", "live", "binary"}
    # after a shutdown only the workload counts: on mid-node, exactly what the binary needs
    cold = {c.host: c.cold for c in pbx01.candidates}
    assert [(m.feature, [(o.kind, o.detail) for o in m.origins]) for m in cold["mid-node"].missing] == [
        ("avx512bw", [("binary", "needed by /usr/sbin/asterisk (6 instructions in 2 functions)")]),
        ("avx512f", [("binary", "needed by /usr/sbin/asterisk (2 instructions in 1 function)")]),
        ("avx512vl", [("binary", "needed by /usr/sbin/asterisk (8 instructions in 2 functions)")]),
    ]
    assert [m.feature for m in cold["old-node"].missing] == ["avx", "avx2", "avx512bw", "avx512f", "avx512vl", "bmi2"]
    assert {o.kind for m in cold["old-node"].missing for o in m.origins} == {"binary", "policy"}


def test_other_vms_get_targets(fleet: PlanFleet, knowledge: Knowledge) -> None:
    plan = evacuate("new-node", list(fleet.vms.values()), fleet.hosts, knowledge)
    db01 = next(v for v in plan.vms if v.vm == "db01")
    assert db01.safe == ("mid-node",)
    assert not db01.stranded
    old = evacuate("old-node", list(fleet.vms.values()), fleet.hosts, knowledge)
    assert [(v.vm, v.safe) for v in old.vms] == [("ci01", ("mid-node", "new-node"))]
    assert exit_code(bool(old.stranded), old.complete) == 0


def test_cold_rule_strands_pbx01_too(fleet: PlanFleet, knowledge: Knowledge) -> None:
    plan = evacuate("new-node", list(fleet.vms.values()), fleet.hosts, knowledge, move=Move.COLD)
    assert [v.vm for v in plan.stranded] == ["pbx01"]
    assert next(v for v in plan.vms if v.vm == "app01").safe == ("mid-node", "old-node")
    pbx01 = plan.vms[0]
    assert pbx01.safe == () and pbx01.cold_only == ()
    assert next(v for v in plan.vms if v.vm == "db01").safe == ("mid-node",)
    assert exit_code(bool(plan.stranded), plan.complete) == 1


def test_cold_rule_with_a_skylake_server_target(fleet: PlanFleet, knowledge: Knowledge) -> None:
    # libvirt's Skylake-Server-IBRS model has AVX-512 but not clflushopt, which the running
    # guest sees on new-node: a restart there would work, a live migration would not
    from cpuguard.hosts.synthetic import model_host

    hosts = {**fleet.hosts, "spare": model_host("Skylake-Server-IBRS", knowledge, "spare")}
    live = evacuate("new-node", list(fleet.vms.values()), hosts, knowledge, targets=["spare"])
    pbx01 = next(v for v in live.vms if v.vm == "pbx01")
    assert pbx01.vm == "pbx01" and pbx01.stranded and pbx01.cold_only == ("spare",)
    assert [m.feature for m in pbx01.candidates[0].live.missing] == ["clflushopt"]
    cold = evacuate("new-node", list(fleet.vms.values()), hosts, knowledge, targets=["spare"], move=Move.COLD)
    assert cold.stranded == ()


def test_a_host_held_only_by_configuration_can_be_emptied(fleet: PlanFleet, knowledge: Knowledge) -> None:
    from cpuguard.render.plan_json import evacuation_data
    from cpuguard.render.plan_text import render_evacuation_text

    app01 = [fleet.vms["app01"]]
    plan = evacuate("new-node", app01, fleet.hosts, knowledge)
    assert [v.vm for v in plan.stranded_by("configuration")] == ["app01"] and plan.evacuable_after_reconfiguration
    assert render_evacuation_text(plan).splitlines()[:4] == [
        "Evacuating new-node (live moves) to mid-node, old-node: 1 VM, 1 stranded",
        "  no safe target: app01",
        "  stranded by configuration (a new <cpu> frees it): app01",
        "  new-node can be emptied once these VMs have booted with the advised <cpu>",
    ]
    assert evacuation_data(plan)["evacuable_after_reconfiguration"] is True
    both = evacuate("new-node", [*app01, fleet.vms["pbx01"]], fleet.hosts, knowledge)
    assert not both.evacuable_after_reconfiguration  # pbx01's binary keeps new-node in service
    assert evacuation_data(both)["evacuable_after_reconfiguration"] is False


def test_exit_codes() -> None:
    assert exit_code(stranded=False, complete=True) == 0
    assert exit_code(stranded=True, complete=True) == 1
    assert exit_code(stranded=True, complete=False) == EXIT_INCOMPLETE == 2


def test_cli_text_report() -> None:
    result = run_cpuguard("plan", "evacuate", "new-node", "--policies", str(EXAMPLE_POLICIES))
    assert result.returncode == 1, result.stderr
    lines = result.stdout.splitlines()
    # long lists are wrapped at 80 columns and grouped by x86-64 level (issue 14 item 5)
    assert lines[:19] == [
        "Evacuating new-node (live moves) to mid-node, old-node: 3 VMs, 2 stranded",
        "  no safe target: app01, pbx01",
        "  stranded by configuration (a new <cpu> frees it): app01",
        "  stranded by the workload: pbx01",
        "",
        "STRANDED  app01: no host can take it (live)",
        "  after a shutdown (cold move) it could start on: mid-node, old-node",
        "  stranded by configuration: with the advised <cpu> it could go to mid-node,",
        "    old-node (from its next cold boot on):",
        "      <cpu mode='custom' match='exact' check='partial'>",
        "        <model fallback='forbid'>Westmere-IBRS</model>",
        "      </cpu>",
        "  mid-node: lacks 19 features",
        "      missing what x86-64-v4 adds, plus 3dnowprefetch, adx, clflushopt, clwb,",
        "        hle, mpx, pdpe1gb, rdseed, rtm, smap, vme, xgetbv1, xsavec, xsaveopt",
        "          <- the running guest sees it now (host-passthrough on new-node)",
        "  old-node: lacks 35 features",
        "      missing what x86-64-v3 and x86-64-v4 add, plus 3dnowprefetch, adx,",
        "        clflushopt, clwb, erms, fsgsbase, hle, invpcid, mpx, pcid, pdpe1gb,",
    ]
    assert max(len(line) for line in lines if not line.lstrip().startswith("<- ")) <= 80  # origins stay whole
    start = lines.index("STRANDED  pbx01: no host can take it (live)")
    # an overview: one group per binary, its instructions added up (check vm gives each feature's)
    assert lines[start : start + 8] == [
        "STRANDED  pbx01: no host can take it (live)",
        "  after a shutdown (cold move) no target could start it either",
        "  stranded by the workload: no target offers what its software needs",
        "      needs avx512bw, avx512f, avx512vl",
        "          <- needed by /usr/sbin/asterisk (16 instructions)",
        "  mid-node: lacks 19 features",
        "      missing avx512bw, avx512f, avx512vl",
        "          <- needed by /usr/sbin/asterisk (16 instructions)",
    ]
    assert "      missing avx, avx2, avx512bw, avx512f, avx512vl" in lines
    assert "          <- needed by /usr/sbin/asterisk (45 instructions)" in lines
    assert len(lines) <= 55  # the example fleet's longest plan fits a screen
    assert "  old-node: lacks 35 features" in lines
    assert "      missing avx2, bmi2" in lines
    assert f"          <- policy {EXAMPLE_POLICIES / 'vms' / 'pbx01.yaml'}" in lines
    assert "          <- the running guest sees it now (host-passthrough on new-node)" in lines
    assert "OK        db01: mid-node (live)" in lines
    assert result.stderr == ""


def test_cli_json_report() -> None:
    result = run_cpuguard("plan", "evacuate", "new-node", "--policies", str(EXAMPLE_POLICIES), "--format", "json")
    assert result.returncode == 1
    data = json.loads(result.stdout)
    assert data["kind"] == "evacuation" and data["complete"] is True
    assert data["stranded"] == ["app01", "pbx01"]
    assert data["stranded_by_configuration"] == ["app01"] and data["stranded_by_workload"] == ["pbx01"]
    app01 = data["vms"][0]
    assert app01["stranded_by"] == "configuration" and app01["advised_targets"] == ["mid-node", "old-node"]
    assert "<model fallback='forbid'>Westmere-IBRS</model>" in app01["advised_cpu_xml"]
    pbx01 = data["vms"][1]
    assert pbx01["stranded_by"] == "workload" and pbx01["advised_cpu_xml"] is None
    assert pbx01["workload_missing"]["avx512f"] == ["needed by /usr/sbin/asterisk (2 instructions in 1 function)"]
    assert pbx01["vm"] == "pbx01" and pbx01["safe_targets"] == [] and pbx01["cold_only_targets"] == []
    mid = next(c for c in pbx01["candidates"] if c["host"] == "mid-node")
    assert mid["live"]["outcome"] == "block" and mid["cold"]["outcome"] == "block"
    assert "avx512f" in [m["feature"] for m in mid["live"]["missing"]]
    assert mid["cold"]["missing"] == [
        {"feature": feature, "origins": [{"kind": "binary", "detail": f"needed by /usr/sbin/asterisk ({detail})"}]}
        for feature, detail in [
            ("avx512bw", "6 instructions in 2 functions"),
            ("avx512f", "2 instructions in 1 function"),
            ("avx512vl", "8 instructions in 2 functions"),
        ]
    ]


def test_cli_junit_report_one_case_per_vm(tmp_path: Path) -> None:
    report = tmp_path / "evacuate.xml"
    result = run_cpuguard("plan", "evacuate", "new-node", "--policies", str(EXAMPLE_POLICIES), "--report", str(report))
    assert result.returncode == 1
    root = ET.fromstring(report.read_text(encoding="utf-8"))
    assert root.tag == "testsuites" and root.get("tests") == "3" and root.get("failures") == "2"
    cases = {c.get("name"): c for c in root.iter("testcase")}
    assert sorted(cases) == ["app01", "db01", "pbx01"]
    failure = cases["pbx01"].find("failure")
    assert failure is not None
    assert failure.get("message") == "no safe target for pbx01 (live move): stranded by the workload"
    text = (failure.text or "").splitlines()
    assert text[:2] == [
        "pbx01 has no safe target among mid-node, old-node.",
        "After a shutdown (cold move) no target could start it either.",
    ]
    assert "mid-node:" in text and "    missing avx512bw, avx512f, avx512vl" in text
    assert "        <- needed by /usr/sbin/asterisk (16 instructions)" in text
    assert cases["db01"].find("failure") is None
    app01 = cases["app01"].find("failure")
    assert app01 is not None and app01.get("message") == (
        "no safe target for app01 (live move): stranded by configuration; a <cpu> of model Westmere-IBRS "
        "(cpuguard advise app01) opens mid-node, old-node from its next cold boot"
    )
    assert "      <model fallback='forbid'>Westmere-IBRS</model>" in (app01.text or "").splitlines()


def test_cli_reports_by_suffix(tmp_path: Path) -> None:
    json_report, text_report = tmp_path / "plan.json", tmp_path / "plan.txt"
    result = run_cpuguard(
        "plan", "evacuate", "new-node", "--policies", str(EXAMPLE_POLICIES),
        "--report", str(json_report), "--report", str(text_report), "--format", "junit",
    )  # fmt: skip
    assert result.returncode == 1
    assert json.loads(json_report.read_text())["kind"] == "evacuation"
    assert text_report.read_text().startswith("Evacuating new-node")
    assert result.stdout.startswith("<?xml")
    bad = run_cpuguard("plan", "evacuate", "new-node", "--policies", str(EXAMPLE_POLICIES), "--report", "x.pdf")
    assert bad.returncode == 2 and "cannot tell the report format" in bad.stderr


def test_cli_hypothetical_target_and_cold() -> None:
    # "what if we bought Ice Lake servers" (libvirt model): pbx01 would have somewhere to go
    result = run_cpuguard(
        "plan",
        "evacuate",
        "new-node",
        "--policies",
        str(EXAMPLE_POLICIES),
        "--targets",
        "mid-node,model:Icelake-Server",
    )
    assert result.returncode == 0, result.stdout
    assert "OK        pbx01: model:Icelake-Server (live)" in result.stdout
    cold = run_cpuguard("plan", "evacuate", "new-node", "--policies", str(EXAMPLE_POLICIES), "--cold")
    assert cold.returncode == 1
    lines = cold.stdout.splitlines()
    assert lines[:9] == [
        "Evacuating new-node (cold moves) to mid-node, old-node: 3 VMs, 1 stranded",
        "  no safe target: pbx01",
        "  stranded by the workload: pbx01",
        "",
        "STRANDED  pbx01: no host can take it (cold)",
        "  stranded by the workload: no target offers what its software needs",
        "      needs avx512bw, avx512f, avx512vl",
        "          <- needed by /usr/sbin/asterisk (16 instructions)",
        "  mid-node: lacks 3 features",
    ]
    assert "the running guest sees it now" not in cold.stdout  # a restart does not carry the running CPU
    assert "OK        db01: mid-node (cold)" in lines


def test_cli_unknown_host_is_one_line() -> None:
    result = run_cpuguard("plan", "evacuate", "new-nod", "--policies", str(EXAMPLE_POLICIES))
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.strip().endswith("unknown host 'new-nod' (did you mean new-node?)")
    assert len(result.stderr.strip().splitlines()) == 1
