"""libvirt's own CPU tests as an oracle (tests/data/libvirt-cputest/, see its PROVENANCE).

* The compare cases of libvirt's ``tests/cputest.c``: a host CPU and a guest
  CPU from ``tests/cputestdata/`` and libvirt's result. IDENTICAL and SUPERSET
  mean the host can run the guest (cpuguard: allow), INCOMPATIBLE that it
  cannot (block), ERROR that the input is refused (exit 2). cpuguard must
  agree on every case except the deliberate differences the README documents
  (``DIFFERENCES``), which are asserted as they are.
* The real CPUs of ``DO_TEST_CPUID``: the guest CPU libvirt derives from a
  host for host-model must be allowed on that host, cold and live.
* Every real CPU is also a host fixture: it parses, has a level, and can run
  the libvirt model it is described with.

The files are bare ``<cpu>`` elements; they are put into a capabilities
document (host) or a domain (guest) and read by cpuguard's own parsers.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from cpuguard.cpumap import read_snapshot
from cpuguard.cpumodels import build_cpu_map
from cpuguard.domain import parse_domain
from cpuguard.errors import BadInput
from cpuguard.hosts.sources import host_from_file
from cpuguard.knowledge import Knowledge
from cpuguard.levels import highest_level, level_features
from cpuguard.records import Domain, HostFacts, Move, Outcome, Verdict
from cpuguard.requirements import build_requirements
from cpuguard.verdict import decide
from cpuguard.vocabulary import NAMES_FILE, build_vocabulary
from cpuguard.yamlsafe import read_yaml
from tests.conftest import DATA, run_cpuguard

CPUTEST = DATA / "libvirt-cputest"
ALLOW_RESULTS = {"IDENTICAL", "SUPERSET"}


def _cases(name: str) -> list[list[str]]:
    lines = (CPUTEST / name).read_text(encoding="utf-8").splitlines()
    return [line.split() for line in lines if line.strip() and not line.startswith("#")]


COMPARE = [tuple(case) for case in _cases("compare-cases.txt")]
CPUIDS = [case[0] for case in _cases("cpuid-cases.txt")]

#: Where cpuguard deliberately decides otherwise (README "How it decides"): (host, guest) -> outcome.
DIFFERENCES: dict[tuple[str, str], str] = {
    # policy='force' is a need: the guest believes it has the feature and uses it
    ("host", "exact-force"): "block",  # 3dnowext
    ("host", "strict-force-extra"): "block",  # 3dnow
    ("host", "guest"): "block",  # 3dnowext, svm
    ("host", "host+guest"): "block",  # 3dnowext, svm
    ("host-worse", "penryn-force"): "block",  # popcnt, sse4.2
    ("host-SandyBridge", "exact-force-Haswell"): "block",  # bmi1, bmi2, erms, fsgsbase, invpcid, pcid, rtm
    # match='strict' (the host must have no feature beyond the guest's) is not modelled
    ("host", "strict"): "allow",
    # an unknown name in libvirt-written XML is a narrow need, not an error (a newer libvirt may have written it)
    ("host", "bogus-model"): "block",
    ("host", "bogus-feature"): "allow",  # an optional feature: never a need of a fresh boot
}


def cpu_file(name: str) -> Path:
    return CPUTEST / f"x86_64-{name}.xml"


def as_host(name: str, knowledge: Knowledge, tmp_path: Path) -> HostFacts:
    """A host <cpu> read as the <host><cpu> of `virsh capabilities`."""
    path = tmp_path / f"{name}-capabilities.xml"
    path.write_text(f"<capabilities><host>{cpu_file(name).read_text()}</host></capabilities>", encoding="utf-8")
    return host_from_file(path, knowledge, name=name)


def as_domain(name: str, knowledge: Knowledge) -> Domain:
    """A guest <cpu> (or a host <cpu> compared as a guest) in a domain of its architecture."""
    text = cpu_file(name).read_text()
    arch = (ET.fromstring(text).findtext("arch") or "x86_64").strip()
    xml = f"<domain type='kvm'><name>{name}</name><os><type arch='{arch}'>hvm</type></os>{text}</domain>"
    return parse_domain(xml, cpu_file(name).name, knowledge)


def cpuguard_says(host: str, guest: str, knowledge: Knowledge, tmp_path: Path, move: Move = Move.COLD) -> str:
    facts = as_host(host, knowledge, tmp_path)
    try:
        domain = as_domain(guest, knowledge)
    except BadInput:
        return "error"
    verdict = decide(build_requirements(guest, domain, None, move, knowledge, source_host=facts), facts)
    return str(verdict.outcome)


def libvirt_says(result: str) -> str:
    return "allow" if result in ALLOW_RESULTS else "block" if result == "INCOMPATIBLE" else "error"


def test_the_cases_are_all_there() -> None:
    assert len(COMPARE) == 35 and len(CPUIDS) == 61
    assert all(cpu_file(name).is_file() for case in COMPARE for name in case[:2])
    assert set(DIFFERENCES) <= {(host, guest) for host, guest, _ in COMPARE}


@pytest.mark.parametrize(("host", "guest", "result"), COMPARE, ids=[f"{h}/{g}" for h, g, _ in COMPARE])
def test_compare_cases_agree_with_libvirt(
    host: str, guest: str, result: str, knowledge: Knowledge, tmp_path: Path
) -> None:
    expected = DIFFERENCES.get((host, guest), libvirt_says(result))
    assert cpuguard_says(host, guest, knowledge, tmp_path) == expected


def test_the_deliberate_differences_are_where_the_readme_says(knowledge: Knowledge, tmp_path: Path) -> None:
    results = {(host, guest): result for host, guest, result in COMPARE}
    for case, ours in DIFFERENCES.items():
        assert ours != libvirt_says(results[case]), case  # still a difference, or it goes from the table
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    assert "`policy='force'` is a need" in readme
    assert "`match='strict'` is not modelled" in readme


def test_a_forced_feature_is_a_need_with_its_origin(tmp_path: Path) -> None:
    """libvirt: SUPERSET (QEMU is told to give 3dnowext regardless); cpuguard: the guest will use it."""
    (tmp_path / "host.xml").write_text(
        f"<capabilities><host>{cpu_file('host').read_text()}</host></capabilities>", encoding="utf-8"
    )
    text = cpu_file("exact-force").read_text()
    (tmp_path / "guest.xml").write_text(
        f"<domain type='kvm'><name>forced</name><os><type arch='x86_64'>hvm</type></os>{text}</domain>",
        encoding="utf-8",
    )
    result = run_cpuguard("check", "vm", "guest.xml", "host", "host.xml", "--cold", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stdout.splitlines()[:4] == [
        "BLOCK  forced must not move to host (cold start)",
        "  host lacks 1 feature forced needs:",
        "    3dnowext",
        "        <- features required by the guest CPU definition (domain XML guest.xml)",
    ]


@pytest.mark.parametrize("cpu", CPUIDS)
def test_the_host_model_guest_runs_on_its_own_host(cpu: str, knowledge: Knowledge, tmp_path: Path) -> None:
    host = f"cpuid-{cpu}-host"
    guest = f"cpuid-{cpu}-guest"
    for move in (Move.COLD, Move.LIVE):
        facts = as_host(host, knowledge, tmp_path)
        req = build_requirements(guest, as_domain(guest, knowledge), None, move, knowledge, source_host=facts)
        verdict: Verdict = decide(req, facts)
        assert (verdict.outcome, verdict.missing, verdict.problems) == (Outcome.ALLOW, (), ()), move


NO_SYSCALL = {"cpuid-Atom-D510-host"}
REAL_HOSTS = sorted(
    p.name.removeprefix("x86_64-").removesuffix(".xml") for p in CPUTEST.glob("x86_64-cpuid-*-host.xml")
)


@pytest.mark.parametrize("host", REAL_HOSTS)
def test_every_real_cpu_is_a_host(host: str, knowledge: Knowledge, tmp_path: Path) -> None:
    """Parses, has a psABI level, and can run the libvirt model libvirt describes it with."""
    facts = as_host(host, knowledge, tmp_path)
    assert facts.arch == "x86_64" and facts.vendor in ("Intel", "AMD", "Hygon")
    assert facts.libvirt_model is not None
    level = highest_level(facts.flags)
    if host in NO_SYSCALL:  # libvirt's dump lacks the SYSCALL bit, which Intel reports only in 64-bit mode
        assert (level, level_features("x86-64-v1") - facts.flags) == (None, {"syscall"})
        return
    assert level is not None and level.startswith("x86-64-v")
    runnable = [m.name for m in knowledge.cpu_map.runnable_on(facts.flags, facts.vendor)]
    assert facts.libvirt_model in runnable
    # the level follows from the features: a CPU that runs a model of a level has at least that level
    assert all((highest_level(knowledge.cpu_map.features_of(m)) or "x86-64-v0") <= level for m in runnable[:5]), (
        runnable[:5]
    )


def test_the_bundled_cpu_map_alone_agrees_too(tmp_path: Path) -> None:
    """Where no libvirt is installed cpuguard decides with the bundled (newer) cpu_map only."""
    data = read_snapshot()
    vocabulary = build_vocabulary(data, read_yaml(NAMES_FILE), NAMES_FILE)
    bundled = Knowledge(vocabulary, build_cpu_map(data, vocabulary))
    disagreements = [
        (host, guest)
        for host, guest, result in COMPARE
        if cpuguard_says(host, guest, bundled, tmp_path) != DIFFERENCES.get((host, guest), libvirt_says(result))
    ]
    disagreements += [
        cpu for cpu in CPUIDS if cpuguard_says(f"cpuid-{cpu}-host", f"cpuid-{cpu}-guest", bundled, tmp_path) != "allow"
    ]
    assert disagreements == []
