"""``cpuguard advise`` on the example fleet: the configuration-pinned VM is freed, pbx01 is not."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from cpuguard.advice.advise import advise
from cpuguard.advice.records import Standing
from cpuguard.knowledge import Knowledge
from cpuguard.planning.load import PlanFleet, load_fleet
from tests.conftest import EXAMPLE_POLICIES, run_cpuguard
from tests.planning.fleetfiles import copy_example

ALL = ["mid-node", "new-node", "old-node"]


@pytest.fixture(scope="module")
def fleet(knowledge: Knowledge) -> PlanFleet:
    return load_fleet(EXAMPLE_POLICIES, knowledge)


def test_app01_is_pinned_by_configuration_alone(fleet: PlanFleet, knowledge: Knowledge) -> None:
    advice = advise(fleet.vms["app01"], fleet.hosts, knowledge)
    assert advice.standing is Standing.CONFIGURATION
    assert (advice.mode, advice.model) == ("host-passthrough", None)
    # host-passthrough: a restart could go anywhere its workload runs, a live move only to new-node
    assert advice.live_now == ("new-node",) and list(advice.cold_now) == ALL
    assert list(advice.workload_hosts) == ALL
    assert advice.advised is not None and advice.advised.model == "Westmere-IBRS"
    assert advice.advised.required == advice.advised.disabled == () and advice.advised.level == "x86-64-v2"
    assert list(advice.live_after) == list(advice.cold_after) == ALL
    assert advice.opened == ("mid-node", "old-node")
    assert {o.kind for m in advice.needs for o in m.origins} == {"level"}
    assert advice.not_given == ()


def test_pbx01_stays_stranded_by_its_workload(fleet: PlanFleet, knowledge: Knowledge) -> None:
    advice = advise(fleet.vms["pbx01"], fleet.hosts, knowledge)
    assert advice.standing is Standing.WORKLOAD
    assert advice.workload_hosts == advice.cold_after == advice.live_after == ("new-node",)
    mid = next(s for s in advice.shortfalls if s.host == "mid-node")
    assert [(m.feature, [o.detail for o in m.origins]) for m in mid.missing] == [
        ("avx512bw", ["needed by /usr/sbin/asterisk (6 instructions in 2 functions)"]),
        ("avx512f", ["needed by /usr/sbin/asterisk (2 instructions in 1 function)"]),
        ("avx512vl", ["needed by /usr/sbin/asterisk (8 instructions in 2 functions)"]),
    ]


def test_cli_text_for_app01() -> None:
    result = run_cpuguard("advise", "app01", "--policies", str(EXAMPLE_POLICIES))
    assert result.returncode == 0, result.stderr
    policy = EXAMPLE_POLICIES / "vms" / "app01.yaml"
    assert result.stdout.splitlines() == [
        "Advice for 1 VM: 1 pinned by configuration",
        "",
        "app01 on new-node: pinned by configuration:",  # wrapped at 80 columns (issue 14 item 5)
        "    the advised <cpu> opens mid-node, old-node",
        "  current CPU: host-passthrough",
        "  reachable now: live new-node; cold mid-node, new-node, old-node",
        "  workload needs (x86-64-v2):",
        "    all of x86-64-v2",  # grouped by level (issue 14 item 5); --format json lists them
        f"        <- level x86-64-v2 required by policy {policy}",
        "  advised CPU: Westmere-IBRS (x86-64-v2):",
        "    <cpu mode='custom' match='exact' check='partial'>",
        "      <model fallback='forbid'>Westmere-IBRS</model>",
        "    </cpu>",
        "  after the change: live mid-node, new-node, old-node; cold mid-node, new-node,",
        "    old-node",
        "  takes effect at the next cold boot: a running guest keeps the CPU it booted",
        "    with, and the live rule applies until then",
    ]
    assert result.stderr == ""


def test_cli_text_names_pbx01s_binary() -> None:
    result = run_cpuguard("advise", "pbx01", "--policies", str(EXAMPLE_POLICIES))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[2:4] == [
        "pbx01 on new-node: stranded by the workload:",
        "    no other host offers what its software needs",
    ]
    assert lines[4:6] == ["  current CPU: host-passthrough", "  reachable now: live new-node; cold new-node"]
    assert "  hosts its workload cannot run on:" in lines
    start = lines.index("    mid-node: lacks avx512bw (needed by /usr/sbin/asterisk (6 instructions in 2")
    assert lines[start + 1 : start + 4] == [  # wrapped at 80 columns
        "      functions)); lacks avx512f (needed by /usr/sbin/asterisk (2 instructions",
        "      in 1 function)); lacks avx512vl (needed by /usr/sbin/asterisk (8",
        "      instructions in 2 functions))",
    ]


def test_cli_json_all() -> None:
    result = run_cpuguard("advise", "--all", "--policies", str(EXAMPLE_POLICIES), "--format", "json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    vms = {v["vm"]: v for v in data["vms"]}
    assert sorted(vms) == ["app01", "ci01", "db01", "pbx01", "web01"] and data["problems"] == []
    app01 = vms["app01"]
    assert app01["current"] == {"mode": "host-passthrough", "model": None}
    assert app01["standing"] == "pinned by configuration"
    assert (app01["live_now"], app01["cold_now"]) == (["new-node"], ALL)
    assert app01["live_after"] == app01["cold_after"] == ALL
    assert app01["needs"]["sse4_2"] == [f"level x86-64-v2 required by policy {EXAMPLE_POLICIES}/vms/app01.yaml"]
    assert app01["advised_cpu_xml"] == (
        "<cpu mode='custom' match='exact' check='partial'>\n  <model fallback='forbid'>Westmere-IBRS</model>\n</cpu>\n"
    )
    assert app01["takes_effect"].startswith("takes effect at the next cold boot")
    pbx01 = vms["pbx01"]
    assert pbx01["standing"] == "stranded by the workload"
    assert pbx01["cold_after"] == pbx01["live_after"] == ["new-node"]
    assert "needed by /usr/sbin/asterisk (2 instructions in 1 function)" in pbx01["needs"]["avx512f"]
    # db01's custom model already asks for no more than its workload's level: nothing to gain
    assert vms["db01"]["standing"] == "free" and vms["db01"]["cold_after"] == ["mid-node", "new-node"]


def test_pasting_the_advised_cpu_frees_app01(tmp_path: Path) -> None:
    policies = copy_example(tmp_path)
    before = run_cpuguard("check", "vm", "app01", "host", "old-node", "--policies", str(policies))
    assert before.returncode == 1  # live: the running guest sees new-node's CPU
    advice = run_cpuguard("advise", "app01", "--policies", str(policies), "--format", "json")
    cpu = json.loads(advice.stdout)["vms"][0]["advised_cpu_xml"]
    domain = policies / "domains" / "app01.xml"
    text, count = re.subn(r"<cpu mode='host-passthrough'[^>]*/>", cpu.strip(), domain.read_text(encoding="utf-8"))
    assert count == 1
    domain.write_text(text, encoding="utf-8")
    for host in ALL:
        cold = run_cpuguard("check", "vm", "app01", "host", host, "--cold", "--policies", str(policies))
        assert cold.returncode == 0 and cold.stdout.startswith("ALLOW"), cold.stdout
        # once it has booted with it, a live move is free too
        live = run_cpuguard("check", "vm", "app01", "host", host, "--policies", str(policies))
        assert live.returncode == 0, live.stdout
    after = run_cpuguard("advise", "app01", "--policies", str(policies))
    assert "app01 on new-node: free: it already reaches every host its workload runs on" in after.stdout


AVX2_BINARY = """\
binaries:
- path: /usr/lib/x86_64-linux-gnu/libcodec.so.1
  sha256: 6c2ad1b54e5e8a1c9f4bb1f5e8c6ab0d3e5f0e4c1a2b3c4d5e6f708192a3b4c5
  scanned_at: '2026-11-22T00:18:46Z'
  level: x86-64-v3
  required:
  - feature: avx2
    instructions: 40
    functions: 3
    examples: [decode_block]
  dispatched: []
"""


def test_a_workload_its_cpu_definition_does_not_give_is_said_loudly(tmp_path: Path) -> None:
    policies = copy_example(tmp_path)
    web01 = policies / "vms" / "web01.yaml"
    web01.write_text(web01.read_text(encoding="utf-8") + AVX2_BINARY, encoding="utf-8")
    result = run_cpuguard("advise", "web01", "--policies", str(policies))
    assert result.returncode == 1, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "Advice for 1 VM: 1 workload not given"
    assert lines[2:4] == [
        "web01 on mid-node: ITS CPU DEFINITION DOES NOT GIVE ITS WORKLOAD WHAT IT NEEDS:",
        "    avx2 -- its software runs a fallback or is already broken",
    ]
    start = lines.index("  NOT GIVEN by its CPU definition (custom Westmere-IBRS):")
    assert lines[start + 1 : start + 3] == [
        "    avx2",
        "        <- needed by /usr/lib/x86_64-linux-gnu/libcodec.so.1 (40 instructions in 3 functions)",
    ]
    # the advice gives it: a Haswell-class definition, for the hosts that have AVX2
    data = json.loads(run_cpuguard("advise", "web01", "--policies", str(policies), "--format", "json").stdout)
    entry = data["vms"][0]
    assert entry["not_given"] == {
        "avx2": ["needed by /usr/lib/x86_64-linux-gnu/libcodec.so.1 (40 instructions in 3 functions)"]
    }
    assert entry["cold_after"] == ["mid-node", "new-node"]


def test_usage_and_unknown_vm() -> None:
    neither = run_cpuguard("advise", "--policies", str(EXAMPLE_POLICIES))
    assert neither.returncode == 2 and "give VM names or --all" in neither.stderr
    unknown = run_cpuguard("advise", "app02", "--policies", str(EXAMPLE_POLICIES))
    assert unknown.returncode == 2 and "unknown VM 'app02' (did you mean app01?)" in unknown.stderr


def test_readme_shows_what_advise_prints() -> None:
    readme = (EXAMPLE_POLICIES.parent / "README.md").read_text(encoding="utf-8")
    block = readme.split("$ cpuguard advise app01\n", 1)[1].split("```", 1)[0]
    result = run_cpuguard("advise", "app01", cwd=EXAMPLE_POLICIES.parent)  # ./policies, as a user at the top
    assert result.stdout == block


def test_markdown_and_html() -> None:
    markdown = run_cpuguard("advise", "--all", "--policies", str(EXAMPLE_POLICIES), "--format", "markdown")
    assert markdown.returncode == 0, markdown.stderr
    lines = markdown.stdout.splitlines()
    assert lines[0] == "## Advice for 5 VMs: 1 stranded by the workload, 1 pinned by configuration, 3 free"
    assert (
        "| `app01` | new-node | host-passthrough | **pinned by configuration** | new-node "
        "| mid-node, new-node, old-node | mid-node, new-node, old-node | mid-node, new-node, old-node |"
    ) in lines
    start = lines.index("### `app01`: pinned by configuration")
    xml = lines.index("```xml", start)
    assert lines[xml + 1 : xml + 4] == [
        "<cpu mode='custom' match='exact' check='partial'>",
        "  <model fallback='forbid'>Westmere-IBRS</model>",
        "</cpu>",
    ]
    assert "- mid-node cannot run it: avx512bw, avx512f, avx512vl" in lines
    page = run_cpuguard("advise", "app01", "pbx01", "--policies", str(EXAMPLE_POLICIES), "--format", "html")
    assert page.returncode == 0 and page.stdout.startswith("<!DOCTYPE html>")
    assert '<h2 id="vm-app01" data-vm="app01" data-standing="pinned by configuration">' in page.stdout
    assert '<h2 id="vm-pbx01" data-vm="pbx01" data-standing="stranded by the workload">' in page.stdout
    assert "&lt;model fallback=&#x27;forbid&#x27;&gt;Westmere-IBRS&lt;/model&gt;" in page.stdout
    assert "<script" not in page.stdout
