"""The command line end to end, through ``python -m cpuguard`` in a subprocess."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import ROOT, run_cpuguard


def test_pbx01_is_blocked_on_old_node_with_reasons() -> None:
    result = run_cpuguard("check", "vm", "pbx01", "host", "old-node")
    assert result.returncode == 1, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "BLOCK  pbx01 must not move to old-node (live migration or memory-image restore)"
    assert "avx2, bmi2" in result.stdout
    assert "<- policy policies/vms/pbx01.yaml" in result.stdout
    assert "<- the running guest sees it now (host-passthrough on new-node)" in result.stdout
    assert "no other known host would take pbx01 (besides new-node, where it runs now)" in result.stdout
    assert "policy: policies/vms/pbx01.yaml (mode enforce)" in result.stdout
    assert result.stderr == ""


def test_pbx01_is_allowed_on_new_node() -> None:
    result = run_cpuguard("check", "vm", "pbx01", "host", "new-node")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ALLOW  pbx01 can move to new-node")


def test_no_host_but_new_node_takes_pbx01_live() -> None:
    for host in ("old-node", "mid-node"):
        assert run_cpuguard("check", "vm", "pbx01", "host", host).returncode == 1


def test_cold_rule_only_needs_the_workload() -> None:
    """A restart on mid-node needs only what Asterisk itself uses: its AVX-512, from the scan."""
    result = run_cpuguard("check", "vm", "pbx01", "host", "mid-node", "--cold", "--format", "json")
    assert result.returncode == 1, result.stdout
    data = json.loads(result.stdout)
    assert data["move"] == "cold"
    missing = {m["feature"]: m["origins"] for m in data["missing"]}
    assert set(missing) == {"avx512bw", "avx512f", "avx512vl"}
    for origins in missing.values():
        assert [o["kind"] for o in origins] == ["binary"]
        assert origins[0]["detail"].startswith("needed by /usr/sbin/asterisk (")
    assert data["hints"] == []  # new-node is where it runs now
    assert data["policy"] == "policies/vms/pbx01.yaml"


def test_needs_from_a_scanned_binary_show_on_old_node() -> None:
    result = run_cpuguard("check", "vm", "pbx01", "host", "old-node")
    assert result.returncode == 1
    assert "<- needed by /usr/sbin/asterisk (" in result.stdout
    assert "instructions in" in result.stdout


def test_json_output() -> None:
    result = run_cpuguard("check", "vm", "db01", "host", "old-node", "--format", "json")
    assert result.returncode == 1
    data = json.loads(result.stdout)
    assert data["outcome"] == "block" and data["move"] == "live"
    missing = {m["feature"]: m["origins"] for m in data["missing"]}
    assert "avx2" in missing
    assert {o["kind"] for o in missing["avx2"]} == {"guest-cpu", "level"}


def test_any_domain_xml_on_a_named_model(tmp_path: Path) -> None:
    xml = tmp_path / "some-domain.xml"
    xml.write_text(
        "<domain type='kvm'><name>some-domain</name><os><type arch='x86_64'>hvm</type></os>"
        "<cpu mode='custom' match='exact'><model>Haswell-noTSX</model></cpu></domain>"
    )
    blocked = run_cpuguard("check", "vm", str(xml), "host", "model:Westmere", cwd=tmp_path)
    assert blocked.returncode == 1
    assert "guest CPU model Haswell-noTSX" in blocked.stdout
    allowed = run_cpuguard("check", "vm", str(xml), "host", "model:Skylake-Server-IBRS", cwd=tmp_path)
    assert allowed.returncode == 0, allowed.stdout


def test_host_show_and_snapshot(tmp_path: Path) -> None:
    shown = run_cpuguard("host", "show", "old-node")
    assert shown.returncode == 0 and "x86-64-v2" in shown.stdout
    out = tmp_path / "snap.json"
    made = run_cpuguard("host", "snapshot", "--from", "model:Westmere", "--name", "spare", "--output", str(out))
    assert made.returncode == 0, made.stderr
    data = json.loads(out.read_text())
    assert data["host"] == "spare" and "sse4_2" in data["flags"]
    checked = run_cpuguard("check", "vm", "db01", "host", str(out), "--cold")
    assert checked.returncode == 1


def test_every_unknown_feature_is_named_and_sse4_is_ambiguous() -> None:
    result = run_cpuguard("feature", "avx2", "nosuch", "avx512f", "sse4")
    assert result.returncode == 2
    assert result.stdout.splitlines() == [
        "avx2: canonical avx2, libvirt avx2",
        "avx512f: canonical avx512f, libvirt avx512f",
    ]
    assert result.stderr == (
        "cpuguard: error: unknown CPU feature 'nosuch'; "
        "ambiguous CPU feature 'sse4': say which of sse4_1, sse4_2, sse4a\n"
    )


@pytest.mark.parametrize("text", ["{}\n", "", "hosts: {}\nvms: {}\n"])
def test_an_empty_inventory_given_by_name_is_refused_at_once(tmp_path: Path, text: str) -> None:
    empty = tmp_path / "empty.json"
    empty.write_text(text)
    result = run_cpuguard("check", "vm", "pbx01", "host", "old-node", "--inventory", str(empty))
    assert result.returncode == 2
    assert (result.stdout, result.stderr) == (
        "",
        f"cpuguard: error: {empty}: the inventory lists no hosts and no VMs\n",
    )


def test_help_lists_exit_codes_and_describes_every_option() -> None:
    check = run_cpuguard("check", "vm", "--help").stdout
    assert "Exit codes: 0 allowed (possibly with warnings), 1 blocked," in check
    assert "3 internal error, 130 interrupted." in check
    metrics = run_cpuguard("metrics", "--help").stdout
    options = metrics.split("Options:\n", 1)[1].splitlines()
    bare = [line.strip() for line in options if line.startswith("  -") and len(line.split("  ")) < 3]
    assert bare == [], metrics  # an option line with no description beside it


def test_the_readmes_try_also_names_only_files_that_exist() -> None:
    readme = (ROOT / "README.md").read_text()
    block = readme.split("Try also:", 1)[1].split("```sh\n", 1)[1].split("```", 1)[0]
    named = [w for line in block.splitlines() for w in line.split("#")[0].split() if "/" in w and w.endswith(".xml")]
    assert named == ["policies/domains/db01.xml"]
    assert all((ROOT / w).is_file() for w in named)


def test_feature_translation() -> None:
    result = run_cpuguard("feature", "HW_CPU_X86_SSE42", "LZCNT")
    assert result.stdout.splitlines() == [
        "HW_CPU_X86_SSE42: canonical sse4_2, libvirt sse4.2",
        "LZCNT: canonical abm, libvirt abm",
    ]


BAD_XML = {
    "entities.xml": "<?xml version='1.0'?><!DOCTYPE d [<!ENTITY a 'aaaa'><!ENTITY b '&a;&a;&a;'>]><domain>&b;</domain>",
    "external.xml": "<?xml version='1.0'?><!DOCTYPE d [<!ENTITY x SYSTEM 'file:///etc/passwd'>]><domain>&x;</domain>",
    "truncated.xml": "<domain type='kvm'><name>x</name><cpu mode='custom'><model>Westm",
    "wrong-root.xml": "<capabilities/>",
    "bad-mode.xml": "<domain><name>x</name><cpu mode='host-copy'/></domain>",
}


@pytest.mark.parametrize("name", sorted(BAD_XML))
def test_bad_domain_xml_is_one_line_exit_2(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_text(BAD_XML[name])
    result = run_cpuguard("check", "vm", str(path), "host", "model:Westmere", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stdout == ""
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert result.stderr.startswith(f"cpuguard: error: {path}: ")
    assert "Traceback" not in result.stderr


BAD_POLICIES = {
    "invalid YAML": ("vm: pbx01\nrequires: [unclosed\n", "invalid YAML"),
    "unknown key": ("vm: pbx01\nrequirs: {}\n", "unknown key 'requirs'; did you mean 'requires'?"),
    "wrong type": ("vm: pbx01\nrequires: {features: avx2}\n", "requires.features: expected array, got string"),
    "bad mode": ("vm: pbx01\nmode: maybe\n", "mode: 'maybe' is not one of enforce, warn, off"),
    "unknown feature": ("vm: pbx01\nrequires: {features: [avx3]}\n", "unknown CPU feature 'avx3'"),
    "python tag": ("vm: !!python/object/apply:os.system ['true']\n", "invalid YAML"),
    "duplicate key": ("vm: pbx01\nvm: pbx02\n", "duplicate key 'vm'"),
    "empty": ("", "empty policy file"),
    "name mismatch": ("vm: other\n", "policy is for VM 'other', expected 'pbx01'"),
}


@pytest.mark.parametrize("case", sorted(BAD_POLICIES))
def test_bad_policy_is_one_line_exit_2(tmp_path: Path, case: str) -> None:
    text, problem = BAD_POLICIES[case]
    policies = tmp_path / "policies"
    (policies / "vms").mkdir(parents=True)
    (policies / "vms" / "pbx01.yaml").write_text(text)
    result = run_cpuguard("check", "vm", "pbx01", "host", "model:Westmere", "--policies", str(policies))
    assert result.returncode == 2, result.stdout
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert f"{policies / 'vms' / 'pbx01.yaml'}: " in result.stderr
    assert problem in result.stderr


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (("check", "vm", "pbx02", "host", "old-node"), "unknown VM 'pbx02' (did you mean pbx01?)"),
        (("check", "vm", "pbx01", "host", "old-nod"), "unknown host 'old-nod' (did you mean old-node"),
        (("check", "vm", "pbx01", "host", "model:Westmire"), "unknown libvirt CPU model 'Westmire'"),
        (("check", "vm", "pbx01", "host", "/nonexistent/host.json"), "/nonexistent/host.json: no such file\n"),
        (("check", "vm", "pbx01", "host", "nosuch.xml"), "cpuguard: error: nosuch.xml: no such file\n"),
        (("check", "vm", "pbx01", "old-node"), "expected: cpuguard check vm VM host HOST"),
        (("check", "vm", "/etc/shadow-nonexistent.xml", "host", "old-node"), "no such file"),
    ],
)
def test_usage_and_unknown_names(args: tuple[str, ...], problem: str) -> None:
    result = run_cpuguard(*args)
    assert result.returncode == 2, result.stdout
    assert problem in result.stderr
    assert "Traceback" not in result.stderr


def test_unreadable_file(tmp_path: Path) -> None:
    import os

    if os.geteuid() == 0:
        path = tmp_path / "dir.xml"
        path.mkdir()
        result = run_cpuguard("check", "vm", str(path), "host", "model:Westmere")
        assert result.returncode == 2 and "is a directory" in result.stderr
    else:  # pragma: no cover - CI runs as root
        path = tmp_path / "secret.xml"
        path.write_text("<domain/>")
        path.chmod(0)
        result = run_cpuguard("check", "vm", str(path), "host", "model:Westmere")
        assert result.returncode == 2 and "permission denied" in result.stderr


def test_version_and_module_entry() -> None:
    result = run_cpuguard("--version")
    assert result.returncode == 0 and result.stdout.startswith("cpuguard, version ")


def test_example_fleet_is_found_from_any_directory(tmp_path: Path) -> None:
    result = run_cpuguard("check", "vm", "pbx01", "host", "old-node", cwd=tmp_path)
    assert result.returncode == 1
    assert str(ROOT / "policies" / "vms" / "pbx01.yaml") in result.stdout


def test_a_write_the_system_refuses_is_one_line_exit_2() -> None:
    result = run_cpuguard("host", "snapshot", "--from", "model:Westmere", "--output", "/proc/cpuguard-snapshot.json")
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.splitlines()) == 1
    assert result.stderr.startswith("cpuguard: error: /proc/")


def test_check_binary_blocks_a_haswell_build_on_westmere(tmp_path: Path) -> None:
    from tests.conftest import need_tool

    gcc = need_tool("gcc")
    source = tmp_path / "sum.c"
    source.write_text(
        "#include <stdio.h>\n#include <stdlib.h>\n"
        "float v[4096];\n"
        "__attribute__((noinline)) float dot(int n) { float s = 0; for (int i = 0; i < n; i++) s += v[i] * v[i];"
        " return s; }\n"
        'int main(int c, char **a) { for (int i = 0; i < 4096; i++) v[i] = i % 7; printf("%f\\n", dot(c * 4096));'
        " return 0; }\n"
    )
    binary = tmp_path / "sum"
    import subprocess

    subprocess.run([gcc, "-O3", "-march=haswell", "-o", str(binary), str(source)], check=True)
    blocked = run_cpuguard("check", "binary", str(binary), "host", "model:Westmere", "--no-cache")
    assert blocked.returncode == 1, blocked.stderr
    assert blocked.stdout.startswith(f"BLOCK  {binary} cannot run on model:Westmere")
    assert f"<- needed by {binary} (" in blocked.stdout
    assert "avx" in blocked.stdout
    allowed = run_cpuguard("check", "binary", str(binary), "host", "uarch:haswell", "--no-cache")
    assert allowed.returncode == 0, allowed.stdout
    nothing = run_cpuguard("check", "binary", str(source), "host", "old-node")
    assert nothing.returncode == 2 and "nothing could be scanned" in nothing.stderr


def test_a_foreign_domain_xml_does_not_borrow_the_example_fleets_policy(tmp_path: Path) -> None:
    """web01 in the example fleet is mode: warn; an unrelated domain of that name must not inherit it."""
    xml = tmp_path / "web01.xml"
    xml.write_text("<domain><name>web01</name><cpu mode='custom'><model>Skylake-Server</model></cpu></domain>")
    result = run_cpuguard("check", "vm", str(xml), "host", "model:Westmere", "--cold", cwd=tmp_path)
    assert result.returncode == 1, result.stdout
    assert "policy:" not in result.stdout


def test_a_policy_file_as_the_vm(tmp_path: Path) -> None:
    result = run_cpuguard("check", "vm", str(ROOT / "policies" / "vms" / "db01.yaml"), "host", "old-node", "--cold")
    assert result.returncode == 1, result.stderr
    assert "level x86-64-v3 required by policy" in result.stdout


@pytest.mark.parametrize(
    "args",
    [("check", "vm", "pbx01", "host", ""), ("check", "vm", "pbx01"), ("check", "--bogus"), ("nonsense",)],
)
def test_usage_errors_are_one_line(args: tuple[str, ...]) -> None:
    result = run_cpuguard(*args)
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert result.stderr.startswith("cpuguard: ")


def test_a_uri_without_libvirt_python_says_how_to_install_it() -> None:
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['libvirt'] = None\n"  # as if libvirt-python were not installed
        "from cpuguard.cli import main\n"
        "sys.exit(main(['host', 'show', 'qemu+ssh://node3/system']))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1
    assert "pip install 'cpuguard[libvirt]'" in result.stderr


def test_snapshot_prefers_domcapabilities_when_both_are_given(tmp_path: Path) -> None:
    data = ROOT / "tests" / "data"
    caps = data / "linux-debian12-sapphirerapids-capabilities.xml"
    domcaps = data / "linux-debian12-sapphirerapids-domcapabilities-kvm.xml"
    out = tmp_path / "snap.json"
    for order in ((caps, domcaps), (domcaps, caps)):
        made = run_cpuguard("host", "snapshot", "--from", str(order[0]), "--from", str(order[1]), "-o", str(out))
        assert made.returncode == 0, made.stderr
        snapshot = json.loads(out.read_text())
        assert snapshot["source"] == f"domcapabilities:{domcaps}"
        assert snapshot["notes"] == [f"preferred over capabilities:{caps}"]


def test_review_findings_on_host_inputs(tmp_path: Path) -> None:
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "inventory.yaml").write_text("hosts:\n  gone: {facts: hosts/gone.json}\n")
    missing = run_cpuguard("host", "show", "gone", "--policies", str(policies))
    assert missing.returncode == 2
    assert "facts file of host 'gone' does not exist" in missing.stderr
    future = tmp_path / "future.json"
    future.write_text('{"cpuguard_snapshot": 99, "somethingnew": true}')
    assert "unsupported snapshot format 99" in run_cpuguard("host", "show", str(future)).stderr
    snap = tmp_path / "wsm.json"
    run_cpuguard("host", "snapshot", "--from", "model:Westmere", "--name", "oldbox", "-o", str(snap))
    assert run_cpuguard("host", "show", str(snap)).stdout.startswith("oldbox: ")
    mixed = run_cpuguard("host", "snapshot", "--from", "model:EPYC", "--from", "model:Westmere")
    assert mixed.returncode == 2 and "not the same host" in mixed.stderr


def test_level_and_uarch_hosts_are_kvm_hosts(tmp_path: Path) -> None:
    """x2apic and tsc-deadline come from KVM on any real host; a Haswell guest fits a v3 host."""
    xml = tmp_path / "hsw.xml"
    xml.write_text("<domain><name>hsw</name><cpu mode='custom'><model>Haswell-noTSX</model></cpu></domain>")
    result = run_cpuguard("check", "vm", str(xml), "host", "level:x86-64-v3", "--cold", "--format", "json")
    missing = {m["feature"] for m in json.loads(result.stdout)["missing"]}
    assert not missing & {"x2apic", "tsc_deadline_timer"}


def test_check_reads_another_inventory(tmp_path: Path) -> None:
    """`--inventory DIR` (what `cpuguard inventory collect` writes), policies still from POLICIES."""
    inventory = (ROOT / "policies" / "inventory.yaml").read_text()
    inventory = inventory.replace("hosts/", f"{ROOT}/policies/hosts/").replace("domains/", f"{ROOT}/policies/domains/")
    inventory = inventory.replace("host: new-node", "host: mid-node", 1)  # pbx01 moved to mid-node meanwhile
    (tmp_path / "inventory.yaml").write_text(inventory)
    result = run_cpuguard("check", "vm", "pbx01", "host", "old-node", "--inventory", str(tmp_path))
    assert result.returncode == 1
    assert "host-passthrough on mid-node" in result.stdout
    assert "policy: policies/vms/pbx01.yaml" in result.stdout
    missing = run_cpuguard("check", "vm", "pbx01", "host", "old-node", "--inventory", str(tmp_path / "none"))
    assert missing.returncode == 2 and "no such inventory file" in missing.stderr
