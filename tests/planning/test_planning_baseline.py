"""``cpuguard baseline`` against libvirt's own ``virsh cpu-baseline`` (test driver, offline)."""

from __future__ import annotations

import json
import random
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from cpuguard.cpumap import SYSTEM_CPU_MAP, parse_cpu_map_dir
from cpuguard.domain import parse_domain
from cpuguard.hosts.sources import host_from_file
from cpuguard.hosts.synthetic import model_host
from cpuguard.knowledge import Knowledge
from cpuguard.planning.baseline import cluster_baseline
from cpuguard.records import HostFacts, Move
from cpuguard.render.plan_text import baseline_xml
from cpuguard.requirements import build_requirements
from cpuguard.verdict import accepts
from tests.conftest import EXAMPLE_POLICIES, need_tool, run_cpuguard


def virsh_baseline(tmp_path: Path, text: str, *, expand: bool) -> tuple[str, set[str], set[str]]:
    """(model, required features, disabled features) in libvirt's spelling."""
    virsh = need_tool("virsh")
    source = tmp_path / "cpus.xml"
    source.write_text(text, encoding="utf-8")
    args = [virsh, "-c", "test:///default", "cpu-baseline", str(source)] + (["--features"] if expand else [])
    result = subprocess.run(args, capture_output=True, text=True, timeout=60, check=True)
    cpu = ET.fromstring(result.stdout)
    features = cpu.findall("feature")
    return (
        cpu.findtext("model") or "",
        {f.get("name", "") for f in features if f.get("policy") == "require"},
        {f.get("name", "") for f in features if f.get("policy") == "disable"},
    )


def libvirt_names(features: frozenset[str], knowledge: Knowledge) -> set[str]:
    return {knowledge.vocabulary.libvirt_name(f) or f for f in features}


def non_migratable(knowledge: Knowledge) -> set[str]:
    return libvirt_names(knowledge.vocabulary.non_migratable, knowledge)


def cpu_element(facts: HostFacts, knowledge: Knowledge) -> str:
    """The host's CPU as cpuguard sees it, for virsh: its libvirt model plus and minus features."""
    assert facts.libvirt_model
    model = knowledge.cpu_map.features_of(facts.libvirt_model)
    modelled = facts.flags & frozenset(knowledge.vocabulary.to_libvirt)
    lines = [f"<feature policy='require' name='{n}'/>" for n in sorted(libvirt_names(modelled - model, knowledge))]
    lines += [f"<feature policy='disable' name='{n}'/>" for n in sorted(libvirt_names(model - modelled, knowledge))]
    return (
        f"<cpu><arch>x86_64</arch><model>{facts.libvirt_model}</model><vendor>{facts.vendor}</vendor>"
        + "".join(lines)
        + "</cpu>\n"
    )


def test_example_fleet_matches_virsh(tmp_path: Path, knowledge: Knowledge) -> None:
    files = sorted((EXAMPLE_POLICIES / "hosts").glob("*.xml"))
    hosts = {f.stem: host_from_file(f, knowledge, name=f.stem) for f in files}
    ours = cluster_baseline(hosts, knowledge)
    assert (ours.model, ours.extra_libvirt, ours.disabled_libvirt) == ("Westmere-IBRS", ("pclmuldq",), ())
    assert ours.level == "x86-64-v2" and ours.vendor == "Intel"
    # the host facts include what KVM offers every guest; the <cpu> need not ask for it
    assert ours.hypervisor_provided == ("arat", "tsc_deadline_timer", "x2apic")
    assert {"arat", "tsc_deadline_timer", "x2apic"} <= ours.guest_features
    # the raw capabilities files given to libvirt: the very same <cpu>
    raw = "".join(f.read_text(encoding="utf-8") for f in files)
    model, required, disabled = virsh_baseline(tmp_path, raw, expand=False)
    assert (model, required, disabled) == (ours.model, set(ours.extra_libvirt), set(ours.disabled_libvirt))
    _model, expanded, _disabled = virsh_baseline(tmp_path, raw, expand=True)
    provided = libvirt_names(knowledge.vocabulary.hypervisor_provided, knowledge)
    assert libvirt_names(ours.guest_features, knowledge) - expanded == provided - {"hypervisor"}
    # the CPUs as cpuguard sees them given to libvirt: the same guest features
    text = "".join(cpu_element(h, knowledge) for h in hosts.values())
    model, required, disabled = virsh_baseline(tmp_path, text, expand=False)
    assert len(ours.extra) + len(ours.disabled) <= len(required) + len(disabled)
    _model, expanded, _disabled = virsh_baseline(tmp_path, text, expand=True)
    # the hypervisor bit is set on every guest by KVM itself, never something to ask for
    assert libvirt_names(ours.guest_features, knowledge) == expanded - non_migratable(knowledge) - {"hypervisor"}


@pytest.mark.parametrize(
    "names",
    [("mid-node",), ("new-node",), ("old-node",), ("mid-node", "new-node"), ("mid-node", "old-node"),
     ("new-node", "old-node")],
)  # fmt: skip
def test_example_host_subsets_match_virsh(names: tuple[str, ...], tmp_path: Path, knowledge: Knowledge) -> None:
    """Every cluster of the example hosts: the <cpu> libvirt proposes for the same capabilities files."""
    files = [EXAMPLE_POLICIES / "hosts" / f"{name}.xml" for name in names]
    ours = cluster_baseline({f.stem: host_from_file(f, knowledge, name=f.stem) for f in files}, knowledge)
    raw = "".join(f.read_text(encoding="utf-8") for f in files)
    model, required, disabled = virsh_baseline(tmp_path, raw, expand=False)
    assert (model, required, disabled) == (ours.model, set(ours.extra_libvirt), set(ours.disabled_libvirt))
    assert not set(ours.extra) & knowledge.vocabulary.hypervisor_provided


@pytest.mark.parametrize("seed", range(6))
def test_random_model_sets_match_virsh(seed: int, tmp_path: Path, knowledge: Knowledge) -> None:
    """The same features as libvirt's baseline; the model may differ where libvirt
    also weighs CPU signatures, but never with a longer list of <feature>s."""
    rng = random.Random(seed)
    need_tool("virsh")
    installed = parse_cpu_map_dir(SYSTEM_CPU_MAP).models  # the models the installed virsh knows
    for vendor in ("Intel", "AMD"):
        models = sorted(m for m in installed if knowledge.cpu_map.models[m].vendor == vendor)
        chosen = rng.sample(models, rng.randint(1, 4))
        text = "".join(f"<cpu><arch>x86_64</arch><model>{m}</model><vendor>{vendor}</vendor></cpu>\n" for m in chosen)
        ours = cluster_baseline({m: model_host(m, knowledge) for m in chosen}, knowledge)
        _model, expanded, _disabled = virsh_baseline(tmp_path, text, expand=True)
        assert libvirt_names(ours.guest_features, knowledge) == expanded - non_migratable(knowledge), chosen
        _model, required, disabled = virsh_baseline(tmp_path, text, expand=False)
        assert len(ours.extra) + len(ours.disabled) <= len(required - non_migratable(knowledge)) + len(disabled)
        assert ours.model is not None
        rebuilt = (knowledge.cpu_map.features_of(ours.model) | set(ours.extra)) - set(ours.disabled)
        assert rebuilt | set(ours.hypervisor_provided) == ours.guest_features


def test_the_cpu_snippet_runs_on_every_host(knowledge: Knowledge) -> None:
    chosen = ["Skylake-Server-IBRS", "Cascadelake-Server", "Icelake-Server", "Haswell-IBRS"]
    hosts = {m: model_host(m, knowledge) for m in chosen}
    ours = cluster_baseline(hosts, knowledge)
    domain_xml = f"<domain type='kvm'><name>guest</name>{baseline_xml(ours)}</domain>"
    domain = parse_domain(domain_xml, "baseline.xml", knowledge)
    for name, host in hosts.items():
        for move in (Move.COLD, Move.LIVE):
            req = build_requirements("guest", domain, None, move, knowledge, source_host=hosts[chosen[0]])
            assert accepts(req, host), (name, move)


def test_mixed_vendors_have_no_vendor(knowledge: Knowledge) -> None:
    ours = cluster_baseline({m: model_host(m, knowledge) for m in ("EPYC", "Skylake-Client")}, knowledge)
    assert ours.vendor is None and ours.vendors == ("AMD", "Intel")
    assert "<vendor>" not in baseline_xml(ours)
    assert any("different vendors" in note for note in ours.notes)


def test_cli_baseline(tmp_path: Path) -> None:
    result = run_cpuguard("baseline", "--policies", str(EXAMPLE_POLICIES))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[:4] == [
        "Baseline of 3 hosts: mid-node, new-node, old-node",
        "  level: x86-64-v2",
        "  libvirt model: Westmere-IBRS + pclmulqdq (libvirt: pclmuldq)",
        "  vendor: Intel",
    ]
    assert (
        "    old-node: what x86-64-v3 adds, plus erms, fsgsbase, invpcid, pcid, rdrand,\n      rdtscp, smep\n"
        in result.stdout
    )
    assert [line for line in lines if "<feature" in line] == ["  <feature policy='require' name='pclmuldq'/>"]
    assert (
        "  note: not required in the <cpu>: arat, tsc_deadline_timer, x2apic -- KVM\n"
        "    offers them to guests on every host, so no move can fail for lack of them\n"
    ) in result.stdout
    cluster = run_cpuguard("baseline", "--cluster", "main", "--policies", str(EXAMPLE_POLICIES), "--format", "json")
    data = json.loads(cluster.stdout)
    assert data["hosts"] == ["mid-node", "new-node"] and data["level"] == "x86-64-v3"
    assert (data["model"], data["extra"], data["disabled"]) == ("Haswell-noTSX-IBRS", ["abm", "f16c", "rdrand"], [])
    assert data["hypervisor_provided"] == ["arat"]  # Haswell-noTSX-IBRS has x2apic and tsc-deadline already
    only_models = run_cpuguard("baseline", "model:Haswell-noTSX", "model:Broadwell-noTSX", cwd=tmp_path)
    assert only_models.returncode == 0, only_models.stderr  # no inventory needed
    assert "libvirt model: Haswell-noTSX" in only_models.stdout
    unknown = run_cpuguard("baseline", "--cluster", "mian", "--policies", str(EXAMPLE_POLICIES))
    assert unknown.returncode == 2 and "unknown cluster 'mian' (did you mean main?)" in unknown.stderr
