"""The inventory file as planning reads it: item by item.

``cpuguard.inventory.read_inventory`` (what ``check`` and the hook use) stops
at the first bad entry. A plan must go on: a duplicated name, an invalid
entry or a VM on an unknown host each become one :class:`Problem` and the
rest of the inventory is still planned. The format, its schema and the
:class:`~cpuguard.inventory.HostEntry` / :class:`~cpuguard.inventory.VmEntry`
records are the core's.

The file is read by :mod:`cpuguard.planning.yamlread`, not by the core's YAML
reader: on the 10,000-VM benchmark inventory (JSON syntax, as ``inventory
collect`` writes it) ``read_inventory`` takes 2.0 s of CPU where the json
module takes 18 ms, and yamlread records duplicate keys instead of refusing
the whole file.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cpuguard.errors import BadInput
from cpuguard.inventory import INVENTORY_NAME, HostEntry, VmEntry
from cpuguard.planning import yamlread
from cpuguard.planning.records import Problem
from cpuguard.policy import load_schema
from cpuguard.schema import validate

#: Written by ``cpuguard inventory collect`` next to the inventory it writes.
COLLECT_REPORT = "collect-report.json"

HOST_SOURCE_KEYS = ("facts", "uri", "source")


def inventory_path(policies: Path, inventory: Path | None) -> Path:
    if inventory is None:
        return policies / INVENTORY_NAME
    return inventory / INVENTORY_NAME if inventory.is_dir() else inventory


def host_entry(name: str, entry: Any, path: Path) -> HostEntry:
    """One ``hosts:`` entry, validated; its ``facts`` file is relative to the inventory."""
    validate(entry, load_schema("inventory")["properties"]["hosts"]["additionalProperties"], path, ("hosts", name))
    keys = [k for k in HOST_SOURCE_KEYS if k in entry]
    if len(keys) != 1:
        raise BadInput(path, f"hosts.{name}: give exactly one of facts, uri, source")
    value = str(entry[keys[0]])
    if keys[0] == "facts":
        value = str(path.parent / value)
    return HostEntry(name, value, entry.get("cluster"))


def read_document(path: Path) -> dict[Any, Any]:
    """The inventory's top-level mapping (duplicate keys recorded, not refused)."""
    raw = yamlread.read(path)
    if not isinstance(raw, dict):
        raise BadInput(path, "expected a mapping with 'hosts' and 'vms'")
    return raw


def document_problems(raw: Any, path: Path) -> list[Problem]:
    """Top-level keys given twice or unknown: reported, the rest is still read."""
    problems = [
        Problem("inventory", str(path), f"{path}: key {key!r} appears twice (line {line}); the first is used")
        for key, _value, line in yamlread.duplicates(raw)
    ]
    known = sorted(load_schema("inventory")["properties"])
    for key in sorted(set(raw) - set(known), key=str):
        problems.append(Problem("inventory", str(path), f"{path}: unknown key {key!r} (known: {', '.join(known)})"))
    return problems


def host_entries(raw: Any, path: Path, problems: list[Problem]) -> dict[str, HostEntry]:
    entries: dict[str, HostEntry] = {}
    hosts = raw.get("hosts") or {}
    if not isinstance(hosts, dict):
        raise BadInput(path, "hosts: expected a mapping of host name -> facts, uri or source")
    for key, _value, line in yamlread.duplicates(hosts):
        first = yamlread.line_of(hosts, key)
        lines = f" (lines {first} and {line})" if first and line else ""
        problems.append(Problem("host", str(key), f"listed twice in {path}{lines}; the first is used"))
    for key, entry in hosts.items():
        try:
            entries[str(key)] = host_entry(str(key), entry, path)
        except BadInput as exc:
            problems.append(Problem("host", str(key), exc.line()))
    return entries


def _string_keys(schema: Mapping[str, Any]) -> frozenset[str]:
    return frozenset(k for k, v in schema.get("properties", {}).items() if v == {"type": "string"})


def _plain_entry(entry: Any, keys: frozenset[str]) -> bool:
    """An entry the schema certainly accepts: string-typed keys (``keys``) with string
    values (10,000 of them are checked in a blink; anything else goes to the schema walker)."""
    return isinstance(entry, dict) and entry.keys() <= keys and all(isinstance(v, str) for v in entry.values())


def vm_entries(
    raw: Any, path: Path, host_names: set[str], problems: list[Problem]
) -> tuple[dict[str, VmEntry], dict[str, tuple[str, ...]]]:
    """The VMs that can be planned, and every listed VM -> the hosts it is listed on."""
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
    result: dict[str, VmEntry] = {}
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
        result[name] = VmEntry(name, host, domain)
    return result, vm_hosts


def collect_problems(inventory: Path) -> list[Problem]:
    """Problems ``inventory collect`` recorded (unreachable hosts, conflicts)."""
    report = inventory.parent / COLLECT_REPORT
    if not report.is_file():
        return []
    try:
        raw = json.loads(report.read_text(encoding="utf-8"))
        return [Problem(p["kind"], p["name"], p["message"], tuple(p.get("hosts", ()))) for p in raw["problems"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return [Problem("inventory", str(report), f"{report}: unreadable collect report ({exc})")]


def uri_hosts(path: Path) -> list[tuple[str, str]]:
    """(name, URI) of every host ``path`` gives as ``uri:``, for ``inventory collect``.

    Unlike a plan, collection reads nothing else from the file, so any problem
    in it is refused at once, in one line: the whole file must be valid."""
    raw = yamlread.read(path)
    duplicate = yamlread.first_duplicate(raw)
    if duplicate is not None:
        key, line = duplicate
        raise BadInput(path, f"invalid YAML: duplicate key {key!r}{f' (line {line})' if line else ''}")
    validate(raw, load_schema("inventory"), path)
    result = []
    for key, entry in (raw.get("hosts") or {}).items():
        host_entry(str(key), entry, path)  # exactly one of facts, uri, source
        if "uri" in entry:
            result.append((str(key), str(entry["uri"])))
    return result
