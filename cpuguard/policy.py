"""VM policies: what the workload itself needs (``policies/vms/<vm>.yaml``).

Format (an interface; schema in data/schema-policy.json, documented in
docs/policy.md)::

    vm: pbx01
    mode: enforce          # enforce | warn | off
    requires:
      level: x86-64-v2     # optional
      features: [avx2, bmi2]
      model: Haswell-noTSX # optional: every feature of a libvirt model
    binaries: [...]        # written by `cpuguard scan --merge-into`
    rehearse:              # what `cpuguard rehearse` runs when no command is given
      - argv: [/opt/app/bin/report, --selftest]
        expect_status: 0   # optional (0)
        timeout: 60        # optional, seconds (60)
        files: [/opt/app/plugins/fast.so]   # optional: more guest files (dlopen'ed)
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path
from typing import Any

from cpuguard.errors import BadInput
from cpuguard.guest.records import GuestNeeds
from cpuguard.knowledge import Knowledge
from cpuguard.levels import normalize_level
from cpuguard.rehearse.records import RehearseEntry
from cpuguard.scan.records import BinaryNeeds
from cpuguard.schema import validate

DATA = Path(__file__).with_name("data")


@cache
def load_schema(name: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads((DATA / f"schema-{name}.json").read_text(encoding="utf-8"))
    return result


@dataclass(frozen=True)
class VmPolicy:
    vm: str
    source: str
    mode: str = "enforce"
    level: str | None = None
    features: frozenset[str] = frozenset()
    model: str | None = None
    model_features: frozenset[str] = frozenset()
    binaries: tuple[BinaryNeeds, ...] = ()
    description: str = ""
    guest: GuestNeeds | None = None  # a stored scan of the VM's disks (policies/guests/<vm>.json)
    rehearse: tuple[RehearseEntry, ...] = ()  # commands for `cpuguard rehearse`


def with_guest(policy: VmPolicy | None, vm: str, guest: GuestNeeds | None) -> VmPolicy | None:
    """``policy`` with the VM's stored guest scan; a VM without a policy gets one that holds only
    the scan (``source`` empty: no policy file applied)."""
    if guest is None:
        return policy
    if policy is None:
        return VmPolicy(vm=vm, source="", guest=guest)
    return replace(policy, guest=guest)


def policy_from_data(raw: Any, where: Path | str, knowledge: Knowledge, *, vm: str | None = None) -> VmPolicy:
    if raw is None:
        raise BadInput(where, "empty policy file")
    validate(raw, load_schema("policy"), where)
    if vm is not None and raw["vm"] != vm:
        raise BadInput(where, f"policy is for VM {raw['vm']!r}, expected {vm!r} (file name and 'vm' must agree)")
    vocabulary = knowledge.vocabulary
    requires = raw.get("requires", {})
    level = normalize_level(requires["level"], where) if "level" in requires else None
    model = requires.get("model")
    model_features: frozenset[str] = frozenset()
    if model is not None:
        found = knowledge.cpu_map.get(model, where)
        model, model_features = found.name, found.features
    # the scanner owns the binaries section's format (docs/scan.md) and its validation
    from cpuguard.scan.policy import policy_binaries_from_data

    binaries = policy_binaries_from_data(raw.get("binaries"), where, vocabulary.canonical)
    return VmPolicy(
        vm=raw["vm"],
        source=str(where),
        mode=raw.get("mode", "enforce"),
        level=level,
        features=vocabulary.canonical_set(requires.get("features", []), where),
        model=model,
        model_features=model_features,
        binaries=tuple(binaries),
        description=raw.get("description", ""),
        rehearse=tuple(
            RehearseEntry(
                tuple(entry["argv"]),
                entry.get("expect_status", 0),
                float(entry.get("timeout", 60.0)),
                tuple(entry.get("files", ())),
                entry.get("description", ""),
            )
            for entry in raw.get("rehearse", ())
        ),
    )


def read_policy(path: Path, knowledge: Knowledge, *, vm: str | None = None) -> VmPolicy:
    from cpuguard.yamlsafe import read_yaml  # deferred: keeps PyYAML off the hook's fast path

    return policy_from_data(read_yaml(path), path, knowledge, vm=vm)


def find_policy(policies_dir: Path, vm: str, knowledge: Knowledge) -> VmPolicy | None:
    """The policy of ``vm`` (``vms/<vm>.yaml``), or None when it has none."""
    for suffix in (".yaml", ".yml"):
        path = policies_dir / "vms" / f"{vm}{suffix}"
        if path.exists():
            return read_policy(path, knowledge, vm=vm)
    return None
