"""The fleet inventory: which hosts exist, where their facts come from, which VMs run where.

``policies/inventory.yaml`` (schema in data/schema-inventory.json)::

    hosts:
      old-node: {facts: hosts/old-node.json}          # snapshot, capabilities XML or cpuinfo
      node3:    {uri: "qemu+ssh://node3/system"}       # live, through libvirt-python
      spare:    {source: "uarch:icelake"}              # any host SOURCE
    vms:
      pbx01: {host: new-node, domain: domains/pbx01.xml}

Relative paths are relative to the inventory file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from cpuguard.errors import BadInput
from cpuguard.policy import load_schema
from cpuguard.schema import validate

INVENTORY_NAME = "inventory.yaml"


@dataclass(frozen=True)
class HostEntry:
    name: str
    source: str  # a host SOURCE string: a file path, URI or model:/uarch:/level:
    cluster: str | None = None


@dataclass(frozen=True)
class VmEntry:
    name: str
    host: str | None
    domain: Path | None


@dataclass(frozen=True)
class Inventory:
    root: Path  # the policies directory
    path: Path | None
    hosts: dict[str, HostEntry] = field(default_factory=dict)
    vms: dict[str, VmEntry] = field(default_factory=dict)


def read_inventory(policies_dir: Path, inventory: Path | None = None) -> Inventory:
    """``POLICIES/inventory.yaml``, or ``inventory`` (a file, or a directory holding one,
    e.g. written by ``cpuguard inventory collect``)."""
    from cpuguard.yamlsafe import read_yaml  # deferred: keeps PyYAML off the hook's fast path

    if inventory is not None:
        path = inventory / INVENTORY_NAME if inventory.is_dir() else inventory
        if not path.exists():
            raise BadInput(path, "no such inventory file")
    else:
        path = policies_dir / INVENTORY_NAME
    if not path.exists():
        return Inventory(policies_dir, None)
    raw = read_yaml(path)
    if raw is not None:
        validate(raw, load_schema("inventory"), path)
    if inventory is not None and not (raw and (raw.get("hosts") or raw.get("vms"))):
        # one asked for by name must say something: an empty one would only fail later, vaguely
        raise BadInput(path, "the inventory lists no hosts and no VMs")
    if raw is None:
        return Inventory(policies_dir, path)
    hosts: dict[str, HostEntry] = {}
    for name, entry in (raw.get("hosts") or {}).items():
        sources = [k for k in ("facts", "uri", "source") if k in entry]
        if len(sources) != 1:
            raise BadInput(path, f"hosts.{name}: give exactly one of facts, uri, source")
        value = entry[sources[0]]
        if sources[0] == "facts":
            value = str(path.parent / value)
        hosts[str(name)] = HostEntry(str(name), value, entry.get("cluster"))
    vms: dict[str, VmEntry] = {}
    for name, entry in (raw.get("vms") or {}).items():
        host = entry.get("host")
        if host is not None and host not in hosts:
            raise BadInput(path, f"vms.{name}: runs on unknown host {host!r}")
        domain = path.parent / entry["domain"] if "domain" in entry else None
        vms[str(name)] = VmEntry(str(name), host, domain)
    return Inventory(policies_dir, path, hosts, vms)
