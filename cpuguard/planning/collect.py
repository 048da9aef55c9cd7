"""``cpuguard inventory collect``: fetch host facts and domain definitions from
many hypervisors at once into files that CI can plan with, without any access
to the hypervisors.

Layout of the output directory (an interface, docs/planning.md)::

    inventory.yaml            hosts and VMs, as cpuguard reads them
    hosts/<host>.json         cpuguard host snapshots
    domains/<host>/<vm>.xml   domain XML (libvirt's XMLDesc)
    collect-report.json       per host: status, seconds, domains and their state;
                              problems (unreachable hosts, VM name conflicts)

``index`` rebuilds inventory.yaml from hosts/ and domains/ alone, for files
gathered another way (the Ansible playbook in examples/ansible/).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cpuguard.errors import BadInput
from cpuguard.hosts.snapshot import write_atomically, write_snapshot
from cpuguard.hosts.sources import host_from_hypervisor
from cpuguard.inventory import INVENTORY_NAME
from cpuguard.knowledge import Knowledge
from cpuguard.planning.concurrency import JobResult, run_all
from cpuguard.planning.inventory_file import COLLECT_REPORT
from cpuguard.planning.load import Connector
from cpuguard.planning.records import Problem
from cpuguard.records import HostFacts

#: Host and VM names become file names: keep them to a safe alphabet.
SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]{0,199}")


@dataclass(frozen=True)
class Target:
    name: str
    uri: str


@dataclass(frozen=True)
class Collected:
    facts: HostFacts
    domains: tuple[tuple[str, str, bool], ...]  # (name, XML, running)


@dataclass
class CollectReport:
    hosts: dict[str, dict[str, Any]] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)


def parse_target(spec: str) -> Target:
    """``NAME=URI`` or a bare URI, named after the URI's host (``qemu+ssh://node3/system`` -> node3)."""
    name, sep, uri = spec.partition("=")
    if not sep:
        name, uri = "", spec
    if "://" not in uri:
        raise BadInput(spec, "not a libvirt URI (e.g. qemu+ssh://node3/system)")
    if not sep:
        name = (urlsplit(spec).hostname or "").split(".")[0]
        if not name:
            raise BadInput(spec, "cannot name this host from its URI: give it as NAME=URI")
    if not SAFE_NAME.fullmatch(name):
        raise BadInput(spec, f"host name {name!r} is not usable as a file name")
    return Target(name, uri)


def inventory_targets(path: Path) -> list[Target]:
    """The hosts an inventory gives as libvirt URIs (``hosts: NAME: {uri: ...}``). The file
    must be a valid inventory; its host names become file names, so they must be safe."""
    from cpuguard.planning.inventory_file import uri_hosts

    targets = []
    for name, uri in uri_hosts(path):
        if "://" not in uri:
            raise BadInput(path, f"hosts.{name}.uri: {uri!r} is not a libvirt URI (e.g. qemu+ssh://node3/system)")
        if not SAFE_NAME.fullmatch(name):
            raise BadInput(path, f"hosts.{name}: host name not usable as a file name")
        targets.append(Target(name, uri))
    return targets


def collect_host(target: Target, knowledge: Knowledge, connector: Connector) -> Collected:
    with connector(target.uri) as hv:
        facts = host_from_hypervisor(hv, knowledge, name=target.name)
        return Collected(facts, tuple(hv.domains()))


def collect(
    targets: Sequence[Target],
    out: Path,
    knowledge: Knowledge,
    *,
    timeout: float,
    workers: int,
    connector: Connector,
    now: datetime,
    on_done: Callable[[JobResult[Collected]], None] | None = None,
) -> CollectReport:
    """Collect every target concurrently, write the files, then the inventory."""
    names = [t.name for t in targets]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise BadInput(None, f"host name {twice[0]!r} given twice")
    jobs = {t.name: (lambda t=t: collect_host(t, knowledge, connector)) for t in targets}
    results = run_all(jobs, timeout=timeout, workers=workers, on_done=on_done)
    report = CollectReport()
    for target in targets:
        result = results[target.name]
        entry: dict[str, Any] = {"uri": target.uri, "seconds": round(result.seconds, 3)}
        report.hosts[target.name] = entry
        _forget(out, target.name, keep_facts=result.value is not None)
        if result.timed_out or result.error is not None or result.value is None:
            if result.timed_out:
                why = f"{target.uri}: no answer within {timeout:g} s"
            elif isinstance(result.error, BadInput) and result.error.where == target.uri:
                why = result.error.line()
            else:
                why = f"{target.uri}: {result.error}"
            entry["status"] = "unreachable"
            report.problems.append(Problem("host", target.name, why))
            continue
        entry["status"] = "ok"
        collected = result.value
        write_snapshot(collected.facts, out / "hosts" / f"{target.name}.json")
        states: dict[str, str] = {}
        for vm, xml, running in collected.domains:
            if not SAFE_NAME.fullmatch(vm):
                report.problems.append(Problem("vm", vm, "name not usable as a file name; skipped", (target.name,)))
                continue
            write_atomically(out / "domains" / target.name / f"{vm}.xml", xml)
            states[vm] = "running" if running else "shut off"
        entry["domains"] = dict(sorted(states.items()))
    index(out, report, now=now)
    return report


def _forget(out: Path, host: str, *, keep_facts: bool) -> None:
    """Drop what an earlier run saved of ``host``: VMs that are gone must not linger,
    and an unreachable host's old files must not pass for current ones."""
    for path in (out / "domains" / host).glob("*.xml"):
        path.unlink()
    if not keep_facts:
        (out / "hosts" / f"{host}.json").unlink(missing_ok=True)


def _facts_files(out: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    hosts = out / "hosts"
    if hosts.is_dir():
        for path in sorted(hosts.iterdir()):
            if path.is_file() and SAFE_NAME.fullmatch(path.stem) and not path.name.startswith("."):
                found.setdefault(path.stem, path)
    return found


def _domain_states(out: Path, report: CollectReport) -> dict[str, dict[str, str]]:
    """host -> VM -> state, from the collect report when there is one, else every file counts as running."""
    states: dict[str, dict[str, str]] = {}
    domains = out / "domains"
    if domains.is_dir():
        for host_dir in sorted(p for p in domains.iterdir() if p.is_dir()):
            known: Mapping[str, str] = report.hosts.get(host_dir.name, {}).get("domains", {})
            for path in sorted(host_dir.glob("*.xml")):
                states.setdefault(host_dir.name, {})[path.stem] = known.get(path.stem, "running")
    return states


def inventory_text(description: str, hosts: Mapping[str, Any], vms: Mapping[str, Any]) -> str:
    """An inventory in JSON syntax, one host or VM a line: valid YAML for every
    reader, diffs well in git, and read by the json module (see yamlread)."""

    def block(entries: Mapping[str, Any]) -> str:
        lines = [f"    {json.dumps(k)}: {json.dumps(v, sort_keys=True)}" for k, v in entries.items()]
        return "{\n" + ",\n".join(lines) + ("\n  }" if lines else "}")

    return f'{{\n  "description": {json.dumps(description)},\n  "hosts": {block(hosts)},\n  "vms": {block(vms)}\n}}\n'


def index(out: Path, report: CollectReport | None = None, *, now: datetime) -> CollectReport:
    """(Re)write ``out``/inventory.yaml and the collect report from the files in ``out``.

    A VM is placed on the host where it runs. Defined on several hosts but
    running on one: placed there (a definition left behind by a migration).
    Running on several, or defined on several and running on none: a
    conflict, reported and left out -- nobody can say where it would start.
    """
    report = report or CollectReport()
    facts = _facts_files(out)
    states = _domain_states(out, report)
    places: dict[str, list[tuple[str, str]]] = {}
    for host, vms in states.items():
        if host not in facts:
            report.problems.append(Problem("host", host, f"domains/{host}/ has domain XML but no hosts/{host} facts"))
        for vm, state in vms.items():
            places.setdefault(vm, []).append((host, state))
    vms_out: dict[str, dict[str, str]] = {}
    for vm, where in sorted(places.items()):
        running = [h for h, s in where if s == "running"]
        hosts = tuple(sorted(h for h, _ in where))
        if len(running) > 1:
            report.problems.append(Problem("vm", vm, f"running on two hosts at once: {', '.join(running)}", hosts))
            continue
        if not running and len(where) > 1:
            report.problems.append(Problem("vm", vm, f"defined on {', '.join(hosts)} and running on none", hosts))
            continue
        host = running[0] if running else where[0][0]
        vms_out[vm] = {"host": host, "domain": f"domains/{host}/{vm}.xml"}
    description = f"written by cpuguard inventory collect / index, {now.isoformat(timespec='seconds')}"
    hosts_out = {name: {"facts": f"hosts/{path.name}"} for name, path in sorted(facts.items())}
    write_atomically(out / INVENTORY_NAME, inventory_text(description, hosts_out, vms_out))
    problems = sorted(set(report.problems))
    document = {
        "cpuguard_collect": 1,
        "collected_at": now.isoformat(),
        "hosts": report.hosts,
        "problems": [{"kind": p.kind, "name": p.name, "message": p.message, "hosts": list(p.hosts)} for p in problems],
    }
    write_atomically(out / COLLECT_REPORT, json.dumps(document, indent=2, sort_keys=True) + "\n")
    report.problems = problems
    return report
