"""Every reader of outside input, called the way cpuguard calls it, with its real samples.

A :class:`Reader` writes the bytes under test to a file and calls the real entry
point on it (``read_domain``, ``host_from_file``, ``read_policy``...), so the
whole path -- opening, size cap, sniffing, parsing, validation -- is exercised
in-process. The hostile catalog, the truncation tests and the fuzz targets all
use these.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from cpuguard.config import read_config
from cpuguard.domain import read_domain
from cpuguard.errors import BadInput
from cpuguard.guest.store import read_needs
from cpuguard.hosts.snapshot import snapshot_to_dict
from cpuguard.hosts.sources import host_from_file
from cpuguard.inventory import read_inventory
from cpuguard.knowledge import Knowledge, load_knowledge
from cpuguard.policy import read_policy

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data"
POLICIES = ROOT / "policies"

#: A realistic /etc/cpuguard/config.yaml (keys from cpuguard/config.py); no capture exists.
CONFIG_SAMPLE = b"""\
# /etc/cpuguard/config.yaml on a hypervisor
policies: /etc/cpuguard/policies
host_facts: /var/lib/cpuguard/host.json
host_name: node3
audit_log: /var/log/cpuguard/audit.jsonl
mode: enforce
on_error:
  migrate: block
  restore: block
  start: allow
deadline_seconds: 5
check_permissions: true
"""


@dataclass(frozen=True)
class Reader:
    """One kind of input file and the function cpuguard reads it with."""

    name: str
    file_name: str  # the name the input is written under; {stem}: the sample's (vms/<vm>.yaml)
    call: Callable[[Path, Knowledge], object]
    #: True when a proper prefix of a valid file is never itself valid but different: every
    #: truncation must then be refused (or, when only trailing whitespace went, read the same).
    #: YAML has no end marker, so a policy cut after a complete line is a valid, shorter policy.
    prefix_safe: bool = True

    #: What a refusal raises: BadInput everywhere but in the ELF reader, whose ElfError the
    #: scanner turns into a note or a BadInput naming the file.
    errors: tuple[type[Exception], ...] = (BadInput,)

    def path_in(self, directory: Path, label: str = "") -> Path:
        return directory / self.file_name.format(stem=Path(label).stem or "pbx01")

    def read(self, data: bytes, directory: Path, label: str = "") -> object:
        path = self.path_in(directory, label)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return self.call(path, load_knowledge())


def _policy(path: Path, knowledge: Knowledge) -> object:
    return read_policy(path, knowledge, vm=path.stem)


def _inventory(path: Path, knowledge: Knowledge) -> object:
    return read_inventory(path.parent)


def _config(path: Path, knowledge: Knowledge) -> object:
    return read_config(path, required=True)


def _guest_scan(path: Path, knowledge: Knowledge) -> object:
    return read_needs(path)


READERS: dict[str, Reader] = {
    r.name: r
    for r in (
        Reader("domain-xml", "pbx01.xml", lambda p, k: read_domain(p, k)),
        Reader("capabilities-xml", "host.xml", lambda p, k: host_from_file(p, k, name="h")),
        Reader("domcapabilities-xml", "host.xml", lambda p, k: host_from_file(p, k, name="h")),
        Reader("cpuinfo", "cpuinfo.txt", lambda p, k: host_from_file(p, k, name="h")),
        Reader("snapshot-json", "host.json", lambda p, k: host_from_file(p, k, name="h")),
        Reader("policy-yaml", "vms/{stem}.yaml", _policy, prefix_safe=False),
        Reader("inventory-yaml", "inventory.yaml", _inventory, prefix_safe=False),
        Reader("config-yaml", "config.yaml", _config, prefix_safe=False),
        Reader("guest-scan-json", "guests/{stem}.json", _guest_scan),
    )
}


def _snapshot_samples() -> list[tuple[str, bytes]]:
    """Snapshots as ``cpuguard host snapshot`` writes them, of the real captured hosts."""
    knowledge = load_knowledge()
    samples = []
    for path in sorted(DATA.glob("*capabilities*.xml")) + sorted((POLICIES / "hosts").glob("*.xml")):
        facts = host_from_file(path, knowledge, name=path.stem)
        text = json.dumps(snapshot_to_dict(facts), indent=2) + "\n"
        samples.append((f"snapshot-of-{path.name}", text.encode()))
    return samples


@cache
def samples(reader: str) -> tuple[tuple[str, bytes], ...]:
    """(label, bytes) of the real inputs of one reader: captures in tests/data, the example fleet."""
    files: list[Path] = []
    if reader == "domain-xml":
        files = sorted((POLICIES / "domains").glob("*.xml"))
    elif reader == "capabilities-xml":
        files = sorted(DATA.glob("*-capabilities.xml")) + sorted((POLICIES / "hosts").glob("*.xml"))
    elif reader == "domcapabilities-xml":
        files = sorted(DATA.glob("*-domcapabilities-*.xml"))
    elif reader == "cpuinfo":
        files = sorted(DATA.glob("*-cpuinfo.txt"))
    elif reader == "snapshot-json":
        return tuple(_snapshot_samples())
    elif reader == "policy-yaml":
        files = sorted((POLICIES / "vms").glob("*.yaml"))
    elif reader == "inventory-yaml":
        files = [POLICIES / "inventory.yaml"]
    elif reader == "config-yaml":
        return (("config.yaml", CONFIG_SAMPLE),)
    elif reader == "guest-scan-json":
        files = sorted(DATA.glob("cpuguard-guest-scan-*.json"))
    return tuple((f.name, f.read_bytes()) for f in files)
