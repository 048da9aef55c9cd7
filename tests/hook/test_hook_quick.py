"""cpuguard.hook.quick decides as the full path does (cpuguard.hook.decision, by cpuguard's core), byte for
byte, or declines: over the example fleet's and libvirt's domains, every kind of guest CPU definition,
each operation, several hosts, a stale snapshot, config mode warn and a stored guest scan."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hook_helpers import DOMAINS, HookSite, domain_xml

from cpuguard.errors import BadInput
from cpuguard.hook import quick
from cpuguard.hook.context import build_context
from cpuguard.hook.decision import Event, decide_event
from cpuguard.hook.domainxml import read_guest
from cpuguard.hook.hostfacts import local_host
from cpuguard.hook.plain import plain_context

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 12, 6, 8, 0, 0, 123000, tzinfo=UTC)
CALLS = [("migrate", "migrate begin"), ("restore", "restore begin"), ("start", "prepare begin")]

CPUS = [
    "",
    "<cpu mode='host-passthrough' check='none'/>",
    "<cpu mode='maximum'/>",
    "<cpu mode='host-model'/>",
    "<cpu mode='host-model'><model fallback='forbid'>Skylake-Server-IBRS</model>"
    "<feature policy='disable' name='avx512f'/></cpu>",
    "<cpu mode='custom'><model>westmere</model></cpu>",
    "<cpu mode='custom' match='exact'><model>Haswell-noTSX</model><vendor>Intel</vendor>"
    "<feature policy='optional' name='avx2'/><feature policy='forbid' name='sse4.2'/>"
    "<feature policy='force' name='x2apic'/><feature policy='require' name='pclmuldq'/></cpu>",
    "<cpu mode='custom'><model>EPYC</model><vendor>AMD</vendor></cpu>",
    "<cpu mode='custom'><feature policy='require' name='avx512f'/></cpu>",
    "<cpu mode='custom'><feature policy='forbid' name='ssse3'/></cpu>",
    "<cpu mode='custom'/>",
    "<cpu><model>Nehalem</model><feature name='hypervisor'/><feature policy='disable' name='vmx'/></cpu>",
]
#: Guests the quick path leaves to the full path, which knows why they are wrong or unusual.
DECLINED_CPUS = [
    "<cpu mode='custom'><model>Futurelake-9000</model></cpu>",
    "<cpu mode='custom'><model>Westmere</model><feature name='shiny-new-thing'/></cpu>",
    "<cpu mode='exotic'/>",
    "<cpu mode='custom'><feature policy='sometimes' name='avx'/></cpu>",
]


def samples() -> list[tuple[str, bytes]]:
    files = [*sorted(DOMAINS.glob("*.xml")), *sorted((Path(__file__).parent / "data").glob("libvirt9-testbed-*.xml"))]
    found = [(p.stem if p.parent == DOMAINS else "web01", p.read_bytes()) for p in files]
    # the <cpu> libvirt 9 expanded for four models, as a running guest's definition has it
    expanded = [p.read_text() for p in sorted((ROOT / "tests" / "data").glob("libvirt9-expanded-*.xml"))]
    found += [("web01", domain_xml("web01", cpu)) for cpu in expanded]
    found += [(vm, domain_xml(vm, cpu)) for vm in ("app01", "pbx01", "nobody") for cpu in CPUS]
    found += [("ci01", domain_xml("ci01", cpu).replace(b"type='kvm'", b"type='qemu'")) for cpu in CPUS[:3]]
    found += [("db01", domain_xml("db01", CPUS[6]).replace(b"x86_64", b"i686"))]
    return found


def compare(site: HookSite, tmp_path: Path, booted: int | None) -> tuple[int, int]:
    """Every sample through both paths; (decided quickly, declined)."""
    context = build_context(site.config)
    plain = json.loads(json.dumps(plain_context(context)))  # as the cache keeps it
    proc_stat = tmp_path / "stat"
    proc_stat.write_text(f"cpu 1 2 3\nbtime {booted}\n" if booted else "cpu 1 2 3\n")
    local = local_host(context, nodename="node", proc_stat=proc_stat)
    decided = declined = 0
    for vm, xml in samples():
        for operation, call in CALLS:
            stamp = NOW.isoformat(timespec="milliseconds")
            answer = quick.decide(
                plain, vm, operation, call, read_guest(xml), nodename="node", now=stamp, booted=booted
            )
            if answer is None:
                declined += 1
                continue
            decided += 1
            full = decide_event(Event(vm, operation, call), xml, context, local, NOW)
            assert (answer.exit_code, answer.message) == (full.exit_code, full.message), (vm, operation, xml)
            assert answer.record == full.record, (vm, operation, xml)
    return decided, declined


@pytest.mark.parametrize(
    ("snapshot", "config", "booted"),
    [
        ("model:Westmere", {}, None),
        ("model:Skylake-Server-IBRS", {"host_name": "here"}, 1_000),
        ("model:EPYC", {"mode": "warn"}, None),
        ("model:Haswell-noTSX", {}, 4_000_000_000),  # a snapshot captured before the last boot
        ("level:x86-64-v3", {}, None),  # no vendor known
    ],
)
def test_quick_decisions_are_the_full_paths(
    site: HookSite, tmp_path: Path, snapshot: str, config: dict[str, Any], booted: int | None
) -> None:
    site.configure(**config)
    site.snapshot_from(snapshot, "snap-node")
    decided, declined = compare(site, tmp_path, booted)
    assert decided > 140
    assert declined == 2 * 3  # the example app01 and pbx01 have XML comments: the full parser reads those


def test_with_a_stored_guest_scan_and_a_policy_in_warn_mode(site: HookSite, tmp_path: Path) -> None:
    (site.policies / "guests").mkdir()
    scan = json.loads((ROOT / "tests" / "data" / "cpuguard-guest-scan-assembled-debian12-pbxd.json").read_text())
    (site.policies / "guests" / "pbx01.json").write_text(json.dumps({**scan, "vm": "pbx01"}))
    policy = site.policies / "vms" / "web01.yaml"
    policy.write_text(policy.read_text().replace("mode: enforce", "mode: warn") + "\n")
    decided, _ = compare(site, tmp_path, None)
    assert decided > 140
    plain = plain_context(build_context(site.config))
    assert plain["vms"]["pbx01"]["guest_scan"] is not None and plain["vms"]["web01"]["mode"] == "warn"


def test_what_the_quick_path_declines(site: HookSite) -> None:
    plain = plain_context(build_context(site.config))
    for cpu in DECLINED_CPUS:
        guest = read_guest(domain_xml("db01", cpu))
        assert guest is not None
        assert quick.decide(plain, "db01", "start", "prepare begin", guest, nodename="n", now="t", booted=None) is None
    aarch64 = read_guest(domain_xml("db01", "").replace(b"x86_64", b"aarch64"))
    assert quick.decide(plain, "db01", "start", "prepare begin", aarch64, nodename="n", now="t", booted=None) is None


def test_a_live_move_from_a_host_whose_facts_are_broken_is_the_full_paths(site: HookSite) -> None:
    (site.policies / "hosts" / "new-node.xml").write_text("<broken")
    context = build_context(site.config)
    plain = plain_context(context)
    xml = domain_xml("app01", CPUS[1])
    guest = read_guest(xml)
    assert quick.decide(plain, "app01", "migrate", "migrate begin", guest, nodename="n", now="t", booted=None) is None
    with pytest.raises(BadInput, match="app01 runs on new-node"):
        decide_event(Event("app01", "migrate", "migrate begin"), xml, context, local_host(context, nodename="n"), NOW)
    started = quick.decide(plain, "app01", "start", "prepare begin", guest, nodename="n", now="t", booted=None)
    assert started is not None and "inventory host new-node ignored" in started.message


def test_without_a_snapshot_the_full_path_reads_cpuinfo(site: HookSite) -> None:
    site.snapshot.unlink()
    plain = plain_context(build_context(site.config))
    guest = read_guest((DOMAINS / "db01.xml").read_bytes())
    assert quick.decide(plain, "db01", "start", "prepare begin", guest, nodename="n", now="t", booted=None) is None
