"""Read a fleet for planning, one item at a time.

A corrupt host file, a host that times out, a policy naming an unknown
feature, a duplicated name or a VM listed on two hosts each become one
:class:`Problem`; everything else still loads and is planned. Only an
inventory that cannot be read at all is fatal (there is nothing to plan).

All I/O of the planning commands lives here, in ``inventory_file``,
``vmfiles`` and ``collect``; ``plan``, ``matrix`` and ``baseline`` are pure.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cpuguard.domain import parse_domain
from cpuguard.errors import BadInput, CpuguardError
from cpuguard.fleet import guest_scan_dirs, latest_scan
from cpuguard.guest.store import read_needs
from cpuguard.hosts.sources import host_from_hypervisor, is_uri, resolve_host
from cpuguard.inventory import HostEntry, VmEntry
from cpuguard.knowledge import Knowledge
from cpuguard.libvirt_api import Hypervisor, connect
from cpuguard.planning.concurrency import run_all
from cpuguard.planning.inventory_file import (
    collect_problems,
    document_problems,
    host_entries,
    inventory_path,
    read_document,
    vm_entries,
)
from cpuguard.planning.records import Problem, VmSpec
from cpuguard.planning.vmfiles import VmFileReader, policy_files
from cpuguard.policy import with_guest
from cpuguard.records import HostFacts
from cpuguard.rehearse.evidence import latest as latest_rehearsals
from cpuguard.rehearse.evidence import rehearsed_vms

DEFAULT_TIMEOUT = 30.0

Connector = Callable[[str], Any]  # a context manager factory like libvirt_api.connect


@dataclass(frozen=True)
class PlanFleet:
    """Everything the planning commands read, and what could not be read."""

    inventory: Path
    policies: Path
    host_entries: Mapping[str, HostEntry]  # every host the inventory names, readable or not
    hosts: Mapping[str, HostFacts]  # the hosts whose facts were read
    vms: Mapping[str, VmSpec]  # the VMs that can be planned
    vm_hosts: Mapping[str, tuple[str, ...]]  # every listed VM -> the hosts it is listed on
    problems: tuple[Problem, ...] = ()
    clusters: Mapping[str, str] = field(default_factory=dict)  # host -> cluster

    def vms_on(self, host: str) -> list[VmSpec]:
        return sorted((v for v in self.vms.values() if v.host == host), key=lambda v: v.name)


def _read_hosts(
    entries: Mapping[str, HostEntry],
    vm_entries: Mapping[str, VmEntry],
    knowledge: Knowledge,
    problems: list[Problem],
    *,
    timeout: float,
    connector: Connector,
) -> tuple[dict[str, HostFacts], dict[str, str]]:
    """Facts of every host; for hosts given as libvirt URIs also the domain XML of
    their VMs that have no saved definition (one connection per host).

    Files and synthetic hosts go through the core's ``resolve_host``. URIs do not
    (``fleet.Fleet.host`` would connect one host after another, with no deadline):
    they are read concurrently, each with its own timeout, so one hung host is one
    problem instead of a hung plan."""
    facts: dict[str, HostFacts] = {}
    live_xml: dict[str, str] = {}
    remote: dict[str, Callable[[], tuple[HostFacts, dict[str, str]]]] = {}
    for name, entry in sorted(entries.items()):
        if is_uri(entry.source):
            wanted = sorted(v.name for v in vm_entries.values() if v.host == name and v.domain is None)
            remote[name] = _remote_job(entry, wanted, knowledge, connector)
            continue
        try:
            facts[name] = resolve_host(entry.source, knowledge, name=name)
        except CpuguardError as exc:
            problems.append(Problem("host", name, str(exc)))
    for name, outcome in sorted(run_all(remote, timeout=timeout).items()):
        if outcome.timed_out:
            problems.append(Problem("host", name, f"{entries[name].source}: no answer within {timeout:g} s"))
        elif outcome.error is not None:
            problems.append(Problem("host", name, f"{entries[name].source}: {outcome.error}"))
        elif outcome.value is not None:
            facts[name], xml = outcome.value
            live_xml.update(xml)
    return facts, live_xml


def _remote_job(
    entry: HostEntry, vms: list[str], knowledge: Knowledge, connector: Connector
) -> Callable[[], tuple[HostFacts, dict[str, str]]]:
    def job() -> tuple[HostFacts, dict[str, str]]:
        with connector(entry.source) as hv:
            hypervisor: Hypervisor = hv
            host = host_from_hypervisor(hypervisor, knowledge, name=entry.name)
            return host, {vm: hypervisor.domain_xml(vm) for vm in vms}

    return job


def load_fleet(
    policies: Path,
    knowledge: Knowledge,
    *,
    inventory: Path | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    connector: Connector = connect,
) -> PlanFleet:
    path = inventory_path(policies, inventory)
    if not path.is_file():
        raise BadInput(path, "no inventory: a planning command needs to know the hosts and the VMs on them")
    raw = read_document(path)
    problems: list[Problem] = collect_problems(path) + document_problems(raw, path)
    entries = host_entries(raw, path, problems)
    vms_listed, vm_hosts = vm_entries(raw, path, set(entries) | _unreadable(problems), problems)
    found = policy_files(policies)
    guest_scans: dict[str, list[Path]] = {}
    for guest_dir in guest_scan_dirs(policies, path):
        for result in sorted(guest_dir.glob("*.json")) if guest_dir.is_dir() else ():
            guest_scans.setdefault(result.stem, []).append(result)
    rehearsal_files = rehearsed_vms(policies)
    now = datetime.now(UTC)
    files = {name: (e.domain, found.get(name)) for name, e in vms_listed.items()}
    vms: dict[str, VmSpec] = {}
    with VmFileReader(files, knowledge) as reader:
        # workers (forked before any thread starts) parse the VM files while this process reads the hosts
        hosts, live_xml = _read_hosts(entries, vms_listed, knowledge, problems, timeout=timeout, connector=connector)
        for name, domain, policy in reader.all():
            entry = vms_listed[name]
            on = (entry.host,) if entry.host else ()
            if domain is None and entry.domain is None and name in live_xml:
                try:
                    domain = parse_domain(live_xml[name], f"{entries[entry.host or ''].source}#{name}", knowledge)
                except CpuguardError as exc:
                    domain = str(exc)
            if isinstance(policy, str) or isinstance(domain, str):
                problems.append(Problem("vm", name, policy if isinstance(policy, str) else str(domain), on))
                continue
            try:
                scan = latest_scan([read_needs(p, vm=name, now=now) for p in guest_scans.get(name, ())])
                policy = with_guest(policy, name, scan)
                rehearsed = tuple(latest_rehearsals(policies, name)) if name in rehearsal_files else ()
            except CpuguardError as exc:
                problems.append(Problem("vm", name, str(exc), on))
                continue
            vms[name] = VmSpec(name, entry.host, domain, policy, rehearsed)
    clusters = {name: e.cluster for name, e in entries.items() if e.cluster}
    return PlanFleet(path, policies, entries, hosts, vms, vm_hosts, tuple(sorted(set(problems))), clusters)


def _unreadable(problems: list[Problem]) -> set[str]:
    """Hosts named by an invalid inventory entry: their VMs are not 'on an unknown host'."""
    return {p.name for p in problems if p.kind == "host"}


def facts_dates(fleet: PlanFleet) -> dict[str, datetime | None]:
    """When each readable host's facts were taken: the snapshot's own date, else
    the modification time of the facts file, else None (live or synthetic facts)."""
    result: dict[str, datetime | None] = {}
    for name, facts in fleet.hosts.items():
        when = facts.captured_at
        entry = fleet.host_entries.get(name)
        if when is None and entry is not None and not is_uri(entry.source) and Path(entry.source).is_file():
            when = datetime.fromtimestamp(Path(entry.source).stat().st_mtime, UTC)
        result[name] = when
    return result
