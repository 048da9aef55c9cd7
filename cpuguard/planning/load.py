"""Read a fleet for planning, one item at a time.

A corrupt host file, a host that times out, a policy naming an unknown
feature, a duplicated name or a VM listed on two hosts each become one
:class:`Problem`; everything else still loads and is planned. Only an
inventory that cannot be read at all is fatal (there is nothing to plan).

All I/O of the planning commands lives here and in ``collect``; ``plan``,
``matrix`` and ``baseline`` are pure.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cpuguard.domain import parse_domain, read_domain
from cpuguard.errors import BadInput, CpuguardError
from cpuguard.hosts.sources import host_from_hypervisor, is_uri, resolve_host
from cpuguard.inventory import INVENTORY_NAME, HostEntry
from cpuguard.knowledge import Knowledge
from cpuguard.libvirt_api import Hypervisor, connect
from cpuguard.planning import yamlread
from cpuguard.planning.concurrency import run_all
from cpuguard.planning.records import Problem, VmSpec
from cpuguard.policy import VmPolicy, load_schema, policy_from_data
from cpuguard.records import Domain, GuestCpu, HostFacts
from cpuguard.schema import validate

#: Written by ``cpuguard inventory collect`` next to the inventory it writes.
COLLECT_REPORT = "collect-report.json"
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


def inventory_path(policies: Path, inventory: Path | None) -> Path:
    if inventory is None:
        return policies / INVENTORY_NAME
    return inventory / INVENTORY_NAME if inventory.is_dir() else inventory


def _entry_problem(exc: CpuguardError) -> str:
    return exc.problem if isinstance(exc, BadInput) else str(exc)


def _host_entries(raw: Any, path: Path, problems: list[Problem]) -> dict[str, HostEntry]:
    schema = load_schema("inventory")["properties"]["hosts"]["additionalProperties"]
    entries: dict[str, HostEntry] = {}
    hosts = raw.get("hosts") or {}
    if not isinstance(hosts, dict):
        raise BadInput(path, "hosts: expected a mapping of host name -> facts, uri or source")
    for key, _value, line in yamlread.duplicates(hosts):
        first = yamlread.line_of(hosts, key)
        lines = f" (lines {first} and {line})" if first and line else ""
        problems.append(Problem("host", str(key), f"listed twice in {path}{lines}; the first is used"))
    for key, entry in hosts.items():
        name = str(key)
        try:
            validate(entry, schema, path, ("hosts", name))
            sources = [k for k in ("facts", "uri", "source") if k in entry]
            if len(sources) != 1:
                raise BadInput(path, f"hosts.{name}: give exactly one of facts, uri, source")
        except BadInput as exc:
            problems.append(Problem("host", name, exc.line()))
            continue
        value = str(entry[sources[0]])
        if sources[0] == "facts":
            value = str(path.parent / value)
        entries[name] = HostEntry(name, value, entry.get("cluster"))
    return entries


def _string_keys(schema: Mapping[str, Any]) -> frozenset[str]:
    return frozenset(k for k, v in schema.get("properties", {}).items() if v == {"type": "string"})


def _plain_entry(entry: Any, keys: frozenset[str]) -> bool:
    """An entry the schema certainly accepts: string-typed keys (``keys``) with string
    values (10,000 of them are checked in a blink; anything else goes to the schema walker)."""
    return isinstance(entry, dict) and entry.keys() <= keys and all(isinstance(v, str) for v in entry.values())


@dataclass(frozen=True)
class _VmEntry:
    name: str
    host: str | None
    domain: Path | None


def _vm_entries(
    raw: Any, path: Path, host_names: set[str], problems: list[Problem]
) -> tuple[dict[str, _VmEntry], dict[str, tuple[str, ...]]]:
    schema = load_schema("inventory")["properties"]["vms"]["additionalProperties"]
    plain_keys = _string_keys(schema)
    vms = raw.get("vms") or {}
    if not isinstance(vms, dict):
        raise BadInput(path, "vms: expected a mapping of VM name -> host and domain")
    listed: dict[str, list[tuple[str | None, int]]] = {}
    for key, entry in vms.items():
        host = entry.get("host") if isinstance(entry, dict) else None
        listed.setdefault(str(key), []).append(
            (host if isinstance(host, str) else None, yamlread.line_of(vms, key) or 0)
        )
    for key, entry, line in yamlread.duplicates(vms):
        host = entry.get("host") if isinstance(entry, dict) else None
        listed[str(key)].append((host if isinstance(host, str) else None, line))
    vm_hosts = {name: tuple(sorted({h for h, _ in places if h})) for name, places in listed.items()}
    result: dict[str, _VmEntry] = {}
    for key, entry in vms.items():
        name = str(key)
        places = listed[name]
        if len(places) > 1:
            where = " and ".join(f"{h or 'no host'}{f' (line {line})' if line else ''}" for h, line in places)
            if len(vm_hosts[name]) > 1:
                problems.append(
                    Problem("vm", name, f"listed on two hosts in {path}: {where}; left out of the plan", vm_hosts[name])
                )
                continue
            problems.append(Problem("vm", name, f"listed twice in {path}: {where}; the first is used", vm_hosts[name]))
        try:
            if not _plain_entry(entry, plain_keys):  # the common case, checked without the schema walker
                validate(entry, schema, path, ("vms", name))
        except BadInput as exc:
            problems.append(Problem("vm", name, exc.line(), vm_hosts[name]))
            continue
        host = entry.get("host")
        if host is not None and host not in host_names:
            problems.append(Problem("vm", name, f"{path}: vms.{name}: runs on unknown host {host!r}", (host,)))
            continue
        domain = path.parent / entry["domain"] if "domain" in entry else None
        result[name] = _VmEntry(name, host, domain)
    return result, vm_hosts


def _read_hosts(
    entries: Mapping[str, HostEntry],
    vm_entries: Mapping[str, _VmEntry],
    knowledge: Knowledge,
    problems: list[Problem],
    *,
    timeout: float,
    connector: Connector,
) -> tuple[dict[str, HostFacts], dict[str, str]]:
    """Facts of every host; for hosts given as libvirt URIs also the domain XML of
    their VMs that have no saved definition (one connection per host)."""
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


def _policy_files(policies: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    directory = policies / "vms"
    if directory.is_dir():
        for path in sorted(directory.iterdir()):
            if path.suffix in (".yaml", ".yml"):
                found.setdefault(path.stem, path)
    return found


def _read_policy(path: Path, vm: str, knowledge: Knowledge) -> VmPolicy:
    raw = yamlread.read(path, 4 * 1024 * 1024)
    duplicate = yamlread.first_duplicate(raw)
    if duplicate is not None:
        key, line = duplicate
        raise BadInput(path, f"invalid YAML: duplicate key {key!r}{f' (line {line})' if line else ''}")
    return policy_from_data(raw, path, knowledge, vm=vm)


def _collect_problems(inventory: Path) -> list[Problem]:
    """Problems ``inventory collect`` recorded (unreachable hosts, conflicts)."""
    report = inventory.parent / COLLECT_REPORT
    if not report.is_file():
        return []
    try:
        raw = json.loads(report.read_text(encoding="utf-8"))
        return [Problem(p["kind"], p["name"], p["message"], tuple(p.get("hosts", ()))) for p in raw["problems"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return [Problem("inventory", str(report), f"{report}: unreadable collect report ({exc})")]


#: Below this many VMs, reading their files in this process is faster than starting workers.
PARALLEL_VMS = 2000

#: What a worker returns per VM: (name, domain or its error, policy or its error).
_VmFiles = tuple[str, "Domain | str | None", "VmPolicy | str | None"]


def _read_vm(name: str, domain: str | None, policy: str | None, knowledge: Knowledge) -> _VmFiles:
    parsed_domain: Domain | str | None = None
    parsed_policy: VmPolicy | str | None = None
    try:
        parsed_policy = _read_policy(Path(policy), name, knowledge) if policy else None
    except CpuguardError as exc:
        parsed_policy = str(exc)
    try:
        parsed_domain = read_domain(Path(domain), knowledge) if domain else None
    except CpuguardError as exc:
        parsed_domain = str(exc)
    return name, parsed_domain, parsed_policy


def _read_vm_chunk(chunk: list[tuple[str, str | None, str | None]]) -> tuple[list[GuestCpu], list[Any]]:
    """In a worker: parse VMs' domain XML and policies; a failure comes back as its one-line message.

    Sent back compactly: pickling 10,000 ``Domain`` records costs a third of a
    second, so each distinct guest CPU definition is sent once and a domain as
    a tuple of strings referring to it.
    """
    from cpuguard.knowledge import load_knowledge

    knowledge = load_knowledge()  # inherited from the parent through fork: no reload
    cpus: dict[GuestCpu, int] = {}
    rows: list[Any] = []
    for name, domain_path, policy_path in chunk:
        _name, domain, policy = _read_vm(name, domain_path, policy_path, knowledge)
        if isinstance(domain, Domain):
            cpu = cpus.setdefault(domain.cpu, len(cpus))
            rows.append((name, (domain.name, domain.arch, domain.virt_type, cpu, domain.source), policy))
        else:
            rows.append((name, domain, policy))
    return list(cpus), rows


def _unpack_chunk(cpus: list[GuestCpu], rows: list[Any]) -> list[_VmFiles]:
    result: list[_VmFiles] = []
    for name, domain, policy in rows:
        if isinstance(domain, tuple):
            domain_name, arch, virt_type, cpu, source = domain
            domain = Domain(domain_name, arch, virt_type, cpus[cpu], source)
        result.append((name, domain, policy))
    return result


class VmFileReader:
    """VMs' domain XML and policy files, parsed on every core when there are thousands.

    Parsing 10,000 definitions and 2,000 policies takes over a second in one
    process; forked workers share the loaded knowledge and send back plain
    records. Fork only when this process runs no other thread (a hung libvirt
    connection from ``_read_hosts`` may), else parse here.
    """

    def __init__(
        self,
        files: Mapping[str, tuple[Path | None, Path | None]],
        knowledge: Knowledge,
        *,
        threshold: int = PARALLEL_VMS,
    ) -> None:
        self.items = [(n, str(d) if d else None, str(p) if p else None) for n, (d, p) in sorted(files.items())]
        self.knowledge = knowledge
        self.threshold = threshold
        self.results: dict[str, _VmFiles] = {}
        self.pending: list[Any] = []
        self.pool: Any = None

    def __enter__(self) -> VmFileReader:
        import os
        import threading

        workers = min(os.cpu_count() or 1, 8)
        if len(self.items) < self.threshold or workers < 2 or threading.active_count() > 1:
            return self
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        size = -(-len(self.items) // (workers * 4))
        self.pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"))
        chunks = [self.items[i : i + size] for i in range(0, len(self.items), size)]
        self.pending = [self.pool.submit(_read_vm_chunk, chunk) for chunk in chunks]
        return self

    def all(self) -> list[_VmFiles]:
        """Every VM's (name, domain, policy), in name order."""
        if self.pool is None:
            return [_read_vm(name, domain, policy, self.knowledge) for name, domain, policy in self.items]
        return [entry for future in self.pending for entry in _unpack_chunk(*future.result())]

    def __exit__(self, *exc: object) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)


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
    raw = yamlread.read(path)
    if not isinstance(raw, dict):
        raise BadInput(path, "expected a mapping with 'hosts' and 'vms'")
    problems: list[Problem] = _collect_problems(path)
    for key, _value, line in yamlread.duplicates(raw):
        problems.append(
            Problem("inventory", str(path), f"{path}: key {key!r} appears twice (line {line}); the first is used")
        )
    for key in sorted(set(raw) - {"description", "hosts", "vms"}, key=str):
        problems.append(
            Problem("inventory", str(path), f"{path}: unknown key {key!r} (known: description, hosts, vms)")
        )
    entries = _host_entries(raw, path, problems)
    vm_entries, vm_hosts = _vm_entries(raw, path, set(entries) | _unreadable(problems), problems)
    policy_files = _policy_files(policies)
    files = {name: (e.domain, policy_files.get(name)) for name, e in vm_entries.items()}
    vms: dict[str, VmSpec] = {}
    with VmFileReader(files, knowledge) as reader:
        # workers (forked before any thread starts) parse the VM files while this process reads the hosts
        hosts, live_xml = _read_hosts(entries, vm_entries, knowledge, problems, timeout=timeout, connector=connector)
        for name, domain, policy in reader.all():
            entry = vm_entries[name]
            on = (entry.host,) if entry.host else ()
            if domain is None and entry.domain is None and name in live_xml:
                try:
                    domain = parse_domain(live_xml[name], f"{entries[entry.host or ''].source}#{name}", knowledge)
                except CpuguardError as exc:
                    domain = str(exc)
            if isinstance(policy, str) or isinstance(domain, str):
                problems.append(Problem("vm", name, policy if isinstance(policy, str) else str(domain), on))
                continue
            vms[name] = VmSpec(name, entry.host, domain, policy)
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
