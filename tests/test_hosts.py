"""Host facts from every source, on real captures in tests/data/ (named by origin)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from pathlib import Path

import pytest

from cpuguard.cpumap import SYSTEM_CPU_MAP, parse_cpu_map_dir
from cpuguard.errors import BadInput, UnknownName
from cpuguard.hosts.snapshot import parse_snapshot, snapshot_to_dict, write_snapshot
from cpuguard.hosts.sources import host_from_file, resolve_host
from cpuguard.knowledge import Knowledge
from cpuguard.levels import level_features
from tests.conftest import DATA, EXAMPLE_POLICIES

CPUINFO = sorted(DATA.glob("*-cpuinfo.txt"))
CAPABILITIES = sorted(DATA.glob("*-capabilities.xml"))
DOMCAPABILITIES = sorted(DATA.glob("*-domcapabilities*.xml"))


def test_captures_exist() -> None:
    assert CPUINFO and CAPABILITIES and DOMCAPABILITIES


@pytest.mark.parametrize("path", CPUINFO, ids=lambda p: p.name)
def test_cpuinfo(knowledge: Knowledge, path: Path) -> None:
    facts = host_from_file(path, knowledge)
    first_flags = path.read_text().split("flags\t\t: ", 1)[1].split("\n", 1)[0].split()
    assert facts.kind == "cpuinfo"
    assert facts.arch == "x86_64"
    assert facts.vendor in ("Intel", "AMD", "Hygon")
    listed = {knowledge.vocabulary.try_canonical(f) or f for f in first_flags}
    implied = {b for bits in knowledge.vocabulary.cpuinfo_hidden.get(facts.vendor, {}).values() for b in bits}
    assert facts.flags <= listed | knowledge.vocabulary.hypervisor_provided | implied
    assert knowledge.vocabulary.hypervisor_provided <= facts.flags  # what a KVM guest of this host gets
    assert level_features("x86-64-v1") <= facts.flags


@pytest.mark.parametrize("path", CAPABILITIES, ids=lambda p: p.name)
def test_capabilities_expand_the_model(knowledge: Knowledge, path: Path) -> None:
    cpu = ET.parse(path).getroot().find("host/cpu")
    assert cpu is not None
    model = cpu.findtext("model")
    assert model
    listed = {knowledge.vocabulary.canonical(f.get("name", "")) for f in cpu.findall("feature")}
    facts = host_from_file(path, knowledge)
    assert facts.kind == "capabilities" and facts.libvirt_model == model
    # capabilities list only what is beyond the model: both halves must be there
    assert knowledge.cpu_map.features_of(model) <= facts.flags
    assert listed <= facts.flags
    provided = knowledge.vocabulary.hypervisor_provided
    assert facts.flags == knowledge.cpu_map.features_of(model) | listed | provided


@pytest.mark.parametrize("path", DOMCAPABILITIES, ids=lambda p: p.name)
def test_domcapabilities_host_model(knowledge: Knowledge, path: Path) -> None:
    root = ET.parse(path).getroot()
    mode = next(m for m in root.findall("cpu/mode") if m.get("name") == "host-model")
    model = mode.findtext("model") or ""
    required = {
        knowledge.vocabulary.canonical(f.get("name", ""))
        for f in mode.findall("feature")
        if f.get("policy") == "require"
    }
    disabled = {
        knowledge.vocabulary.canonical(f.get("name", ""))
        for f in mode.findall("feature")
        if f.get("policy") == "disable"
    }
    facts = host_from_file(path, knowledge)
    assert facts.kind == "domcapabilities"
    assert required <= facts.flags
    assert not disabled & facts.flags
    assert knowledge.cpu_map.features_of(model) - disabled <= facts.flags


# Features libvirt reports that Linux never prints in /proc/cpuinfo: MSR-based
# vulnerability bits (arch-capabilities MSR 0x10a), osxsave (Linux hides it),
# bits KVM synthesizes for guests (amd-ssbd, amd-stibp, spec-ctrl), la57 and
# xfd when the kernel does not enable them.
NOT_IN_CPUINFO = {
    "amd_ssbd",
    "amd_stibp",
    "la57",
    "mds_no",
    "osxsave",
    "pschange_mc_no",
    "rdctl_no",
    "skip_l1dfl_vmentry",
    "spec_ctrl",
    "tsx_ctrl",
    "xfd",
    "taa_no",
    "ssb_no",
    "rsba",
    "ibrs_enhanced",
    "split_lock_detect",
    "sbdr_ssdp_no",
    "fbsdp_no",
    "psdp_no",
}


def test_linux_hides_spec_ctrl_behind_ibrs(knowledge: Knowledge, tmp_path: Path) -> None:
    """Linux prints ibrs/ibpb for Intel's SPEC_CTRL bit (libvirt spec-ctrl): -IBRS models need it."""
    copy = tmp_path / "cpuinfo"
    flags = "fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx fxsr sse sse2 "
    flags += "syscall nx lm pni pclmulqdq ssse3 cx16 sse4_1 sse4_2 popcnt aes lahf_lm ibrs ibpb stibp"
    copy.write_text(f"processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: X5650\nflags\t\t: {flags}\n\n")
    facts = host_from_file(copy, knowledge)
    assert "spec_ctrl" in facts.flags
    assert knowledge.cpu_map.features_of("Westmere-IBRS") <= facts.flags
    amd = tmp_path / "cpuinfo-amd"
    amd.write_text(copy.read_text().replace("GenuineIntel", "AuthenticAMD"))
    assert "spec_ctrl" not in host_from_file(amd, knowledge).flags


def test_capabilities_and_cpuinfo_of_one_machine_agree(knowledge: Knowledge) -> None:
    """Same machine, two sources: every CPUID feature libvirt sees, Linux prints too,
    which checks the vocabulary's libvirt -> Linux translation on real data."""
    for caps in CAPABILITIES:
        prefix = caps.name.removesuffix("-capabilities.xml")
        cpuinfo = DATA / f"{prefix}-cpuinfo.txt"
        if not cpuinfo.exists():
            continue
        from_libvirt = host_from_file(caps, knowledge).flags
        from_linux = host_from_file(cpuinfo, knowledge).flags
        assert from_libvirt - from_linux - NOT_IN_CPUINFO == set()
        assert knowledge.vocabulary.hypervisor_provided <= from_libvirt & from_linux
        # what the libvirt that wrote the capture models (Debian 12's, the installed one here);
        # newer cpu_maps model more of Linux's flags (cet-ibt, flush-l1d)
        if not (SYSTEM_CPU_MAP / "index.xml").is_file():
            continue
        known = parse_cpu_map_dir(SYSTEM_CPU_MAP).features
        modelled = {c for c, name in knowledge.vocabulary.to_libvirt.items() if name in known}
        assert (from_linux & modelled) - from_libvirt == set()


def test_snapshot_round_trip(knowledge: Knowledge, tmp_path: Path) -> None:
    facts = host_from_file(EXAMPLE_POLICIES / "hosts" / "old-node.xml", knowledge, name="old-node")
    facts = type(facts)(**{**facts.__dict__, "captured_at": datetime(2026, 1, 2, tzinfo=UTC)})
    path = tmp_path / "snap.json"
    write_snapshot(facts, path)
    back = parse_snapshot(path.read_bytes(), path, knowledge.vocabulary)
    assert back.flags == facts.flags and back.name == "old-node" and back.vendor == "Intel"
    assert back.captured_at == facts.captured_at
    assert snapshot_to_dict(back)["flags"] == sorted(facts.flags)
    assert [p.name for p in tmp_path.iterdir()] == ["snap.json"]  # no temporary file left


@pytest.mark.parametrize(
    ("source", "kind", "must_have", "must_lack"),
    [
        ("model:Westmere", "model", {"sse4_2", "aes"}, {"pclmulqdq", "avx"}),
        ("model:Haswell-noTSX", "model", {"avx2", "bmi2"}, {"abm", "f16c", "rdrand"}),
        ("uarch:haswell", "uarch", {"avx2", "abm", "f16c", "rdrand", "apic"}, {"avx512f"}),
        ("uarch:skylake_avx512", "uarch", {"avx512f", "avx512bw"}, {"avx512_vnni"}),
        ("level:x86-64-v3", "level", {"avx2", "fma", "movbe"}, {"aes", "avx512f"}),
    ],
)
def test_hypothetical_hosts(
    knowledge: Knowledge, source: str, kind: str, must_have: set[str], must_lack: set[str]
) -> None:
    facts = resolve_host(source, knowledge)
    assert facts.kind == kind
    assert must_have <= facts.flags
    assert not must_lack & facts.flags


@pytest.mark.parametrize("source", ["model:Westmer", "uarch:haswel", "level:x86-64-v7"])
def test_unknown_hypothetical_hosts(knowledge: Knowledge, source: str) -> None:
    with pytest.raises(UnknownName):
        resolve_host(source, knowledge)


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"", "empty"),
        (b'{"cpuguard_snapshot": 1}', "missing key"),
        (b"{not json", "not valid JSON"),
        (b"<capabilities><host/></capabilities>", "no <host><cpu>"),
        (b"<domain/>", "root element"),
        (b"processor : 0\nvendor_id : GenuineIntel\n", "neither 'flags' nor 'Features'"),
        (b"\xff\xfe\x00garbage", "not UTF-8"),
        (b'{"cpuguard_snapshot": 1, "arch": "x86_64", "flags": "avx"}', "list of strings"),
        (b'{"cpuguard_snapshot": 1, "arch": "x86_64", "flags": [], "colour": 1}', "unknown key"),
    ],
)
def test_bad_host_files(knowledge: Knowledge, tmp_path: Path, content: bytes, problem: str) -> None:
    path = tmp_path / "host.dat"
    path.write_bytes(content)
    with pytest.raises(BadInput) as info:
        host_from_file(path, knowledge)
    assert str(info.value).startswith(f"{path}: ")
    assert problem in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(("uarch", "model"), [("haswell", "Haswell-noTSX"), ("icelake", "Icelake-Server-noTSX"),
                                              ("zen3", "EPYC-Milan"), ("skylake_avx512", "Skylake-Server-noTSX-IBRS")])
def test_uarch_hosts_run_their_generations_libvirt_model(knowledge: Knowledge, uarch: str, model: str) -> None:
    """archspec has the ISA extensions, the libvirt model of the same generation the system features
    (pcid, erms, smep, x2apic...): a real CPU of that generation runs its libvirt model."""
    facts = resolve_host(f"uarch:{uarch}", knowledge)
    assert knowledge.cpu_map.features_of(model) - facts.flags in (set(), {"spec_ctrl"})
    assert {"pcid", "erms", "smep"} <= facts.flags


def test_py_cpuinfo_source_agrees_with_proc_cpuinfo(knowledge: Knowledge, tmp_path: Path) -> None:
    """Off Linux, `local` falls back to py-cpuinfo; here both can be read and must agree."""
    from cpuguard.hosts.sources import PROC_CPUINFO, local_host

    with_proc = host_from_file(PROC_CPUINFO, knowledge)
    without = local_host(knowledge, cpuinfo=tmp_path / "no-such-cpuinfo")
    if without.source.startswith("libvirt:"):
        pytest.skip("a local libvirt answered; the py-cpuinfo fallback is not used")
    assert without.source == "py-cpuinfo" and without.vendor == with_proc.vendor
    modelled = frozenset(knowledge.vocabulary.to_libvirt)
    assert (with_proc.flags & modelled) - {"spec_ctrl"} <= without.flags
