"""cpu_map model knowledge, checked against libvirt's own model expansion.

``virsh -c test:///default cpu-baseline --features`` on a one-model <cpu>
makes libvirt expand the model from its cpu_map offline; cpuguard must agree
feature for feature, and its verdicts for named-model guests on named-model
hosts must agree with the subset relation of libvirt's expansions.
"""

from __future__ import annotations

import json
import re
import subprocess
import xml.etree.ElementTree as ET
from functools import cache
from pathlib import Path

import pytest

from cpuguard.cpumap import (
    BUNDLED_SNAPSHOT,
    SYSTEM_CPU_MAP,
    from_snapshot,
    load_cpu_map_data,
    merge_cpu_maps,
    parse_cpu_map_dir,
    read_snapshot,
    to_snapshot,
)
from cpuguard.domain import parse_domain
from cpuguard.errors import BadInput, UnknownName
from cpuguard.hosts.synthetic import model_host
from cpuguard.knowledge import Knowledge
from cpuguard.records import Move, Outcome
from cpuguard.requirements import build_requirements
from cpuguard.verdict import decide
from tests.conftest import need_tool


@cache
def libvirt_expansion(model: str, vendor: str | None) -> frozenset[str]:
    virsh = need_tool("virsh")
    cpu = f"<cpu><arch>x86_64</arch><model>{model}</model>{f'<vendor>{vendor}</vendor>' if vendor else ''}</cpu>"
    out = subprocess.run(
        [virsh, "-c", "test:///default", "cpu-baseline", "--features", "/dev/stdin"],
        input=cpu,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    root = ET.fromstring(out.strip())
    return frozenset(f.get("name", "") for f in root.findall("feature") if f.get("policy") == "require")


def installed_models() -> list[str]:
    """The models the installed libvirt knows: the ones virsh can expand."""
    need_tool("virsh")
    if not (SYSTEM_CPU_MAP / "index.xml").exists():
        pytest.skip("no system cpu_map")
    return sorted(parse_cpu_map_dir(SYSTEM_CPU_MAP).models)


def test_every_model_expands_like_libvirt(knowledge: Knowledge) -> None:
    vocabulary = knowledge.vocabulary
    checked = 0
    for name in installed_models():
        model = knowledge.cpu_map.models[name]
        theirs = {vocabulary.canonical(f) for f in libvirt_expansion(name, model.vendor)}
        assert model.features == theirs - vocabulary.vmx_capabilities, name
        checked += 1
    assert checked >= 40


def test_verdicts_on_named_models_agree_with_libvirt_expansion(knowledge: Knowledge) -> None:
    """A custom-model guest G fits a host that is exactly model H iff libvirt's
    expansion of G is a subset of its expansion of H (same vendor)."""
    models = knowledge.cpu_map.models
    names = installed_models()
    disagreements = []
    pairs = 0
    for guest in names:
        xml = f"<domain type='kvm'><name>g</name><cpu mode='custom'><model>{guest}</model></cpu></domain>"
        domain = parse_domain(xml, "test", knowledge)
        for cold in (Move.COLD, Move.LIVE):
            req = build_requirements("g", domain, None, cold, knowledge)
            for host in names:
                if models[guest].vendor and models[host].vendor and models[guest].vendor != models[host].vendor:
                    continue
                verdict = decide(req, model_host(host, knowledge))
                expected = libvirt_expansion(guest, models[guest].vendor) <= libvirt_expansion(
                    host, models[host].vendor
                )
                pairs += 1
                if (verdict.outcome is Outcome.ALLOW) != expected:
                    disagreements.append((guest, host, verdict.outcome))
    assert pairs > 1000
    assert disagreements == []


def test_bundled_snapshot_covers_installed_cpu_map() -> None:
    """The snapshot is a newer libvirt's cpu_map: every name the installed one defines is in it
    (scripts/update-cpu-map must be rerun when a libvirt newer than the snapshot is installed)."""
    need_tool("virsh")
    if not (SYSTEM_CPU_MAP / "index.xml").exists():
        pytest.skip("no system cpu_map")
    system = parse_cpu_map_dir(SYSTEM_CPU_MAP)
    bundled = from_snapshot(json.loads(BUNDLED_SNAPSHOT.read_text()), BUNDLED_SNAPSHOT)
    assert set(system.models) <= set(bundled.models)
    assert set(system.features) <= set(bundled.features)
    assert set(system.vendors) <= set(bundled.vendors)


def test_bundled_snapshot_cites_its_libvirt_versions() -> None:
    source = read_snapshot().source
    assert re.fullmatch(
        r"libvirt (\d+)\.\d+\.\d+ cpu_map \(Debian \w+ package libvirt-common [^)]+\)(; |\s\+ ).*", source
    )
    newest = int(source.split()[1].split(".")[0])
    assert newest >= 12  # the newest in the Debian archive when it was made; libvirt 9.0 is Debian 12's
    if (SYSTEM_CPU_MAP / "index.xml").exists():
        assert "(installed)" in source


def test_installed_cpu_map_wins_and_the_snapshot_adds_newer_names() -> None:
    if not (SYSTEM_CPU_MAP / "index.xml").exists():
        pytest.skip("no system cpu_map")
    system = parse_cpu_map_dir(SYSTEM_CPU_MAP)
    merged = load_cpu_map_data()
    for name, model in system.models.items():
        assert merged.models[name] == model, name
    for name in ("Haswell-v2", "EPYC-v5", "GraniteRapids", "SierraForest", "EPYC-Genoa", "EPYC-Turin"):
        assert name in merged.models
    for name in ("fdp-excptn-only", "zero-fcs-fds", "sbdr-ssdp-no"):
        assert name in merged.features


def test_merge_keeps_the_first_definition_whole(tmp_path: Path) -> None:
    (tmp_path / "index.xml").write_text(
        "<cpus><arch name='x86'><include filename='f.xml'/><group name='g'><include filename='m.xml'/></group>"
        "</arch></cpus>"
    )
    (tmp_path / "f.xml").write_text(
        "<cpus><feature name='fpu'><cpuid eax_in='0x01' edx='0x00000001'/></feature>"
        "<feature name='vmx-ept'><msr index='0x0000048b' edx='0x00000002' eax='0x00000000'/></feature></cpus>"
    )
    (tmp_path / "m.xml").write_text(
        "<cpus><model name='Old'><feature name='fpu'/><feature name='vmx-ept' added='yes'/></model></cpus>"
    )
    newer = parse_cpu_map_dir(tmp_path)  # libvirt 10+ layout: includes inside <group>
    assert newer.expanded("Old") == {"fpu", "vmx-ept"}
    assert newer.features["vmx-ept"].vmx_capability and not newer.features["fpu"].vmx_capability
    older = type(newer)(
        "older", {"fpu": newer.features["fpu"]}, {"Old": type(newer.models["Old"])("Old", None, frozenset({"fpu"}))}
    )
    merged = merge_cpu_maps(older, newer)
    assert merged.expanded("Old") == {"fpu"}
    assert set(merged.features) == {"fpu", "vmx-ept"}
    assert merged.source == f"older + names only in {tmp_path}"


def test_inheritance_is_expanded(tmp_path: Path) -> None:
    (tmp_path / "index.xml").write_text(
        "<cpus><arch name='x86'><include filename='x86_features.xml'/>"
        "<include filename='x86_models.xml'/></arch></cpus>"
    )
    (tmp_path / "x86_features.xml").write_text(
        "<cpus><feature name='fpu'><cpuid eax_in='0x01' edx='0x00000001'/></feature>"
        "<feature name='sse4.2'><cpuid eax_in='0x01' ecx='0x00100000'/></feature></cpus>"
    )
    (tmp_path / "x86_models.xml").write_text(
        "<cpus><model name='Old'><feature name='fpu'/></model>"
        "<model name='New'><model name='Old'/><feature name='sse4.2'/></model></cpus>"
    )
    data = parse_cpu_map_dir(tmp_path)
    assert data.expanded("New") == {"fpu", "sse4.2"}
    assert data.expanded("Old") == {"fpu"}
    assert from_snapshot(to_snapshot(data, "test"), tmp_path).expanded("New") == {"fpu", "sse4.2"}


def test_unknown_parent_is_bad_input(tmp_path: Path) -> None:
    (tmp_path / "index.xml").write_text("<cpus><arch name='x86'><include filename='m.xml'/></arch></cpus>")
    (tmp_path / "m.xml").write_text("<cpus><feature name='fpu'/><model name='New'><model name='Ghost'/></model></cpus>")
    with pytest.raises(BadInput, match="inherits unknown model Ghost"):
        parse_cpu_map_dir(tmp_path)


def test_unknown_model_suggests(knowledge: Knowledge) -> None:
    with pytest.raises(UnknownName, match="Westmere"):
        knowledge.cpu_map.get("Westmer")
    assert knowledge.cpu_map.get("westmere").name == "Westmere"


def test_model_and_uarch_are_different_things(knowledge: Knowledge) -> None:
    """libvirt's Haswell-noTSX is a conservative guest model; a real Haswell has abm, f16c, rdrand."""
    from cpuguard.cpumodels import microarchitecture

    model = knowledge.cpu_map.features_of("Haswell-noTSX")
    real = microarchitecture("haswell").features
    assert {"abm", "f16c", "rdrand"} <= real - model
