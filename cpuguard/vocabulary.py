"""Feature vocabulary: every spelling of an x86 CPU feature -> one canonical name.

Canonical names are Linux's /proc/cpuinfo flag names (``sse4_2``,
``pclmulqdq``, ``avx512_vnni``, ``pni`` for SSE3, ``abm`` for LZCNT): the
names admins already know. The table is derived from libvirt's cpu_map
(feature names and their ``<alias>`` elements) plus the few facts in
``data/feature_names.yaml``. Matching ignores case and the separators
``.``, ``-`` and ``_``, and drops the ``HW_CPU_X86_`` (OpenStack os-traits)
and ``X86_FEATURE_`` (kernel) prefixes, so ``SSE4_2``, ``sse4.2``,
``HW_CPU_X86_SSE42`` and ``sse4-2`` all meet.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from cpuguard.cpumap import CpuMapData, load_cpu_map_data
from cpuguard.errors import AmbiguousFeature, BadInput, UnknownFeature

NAMES_FILE = Path(__file__).with_name("data") / "feature_names.yaml"
_PREFIXES = ("hwcpux86", "x86feature")
_SEPARATORS = re.compile(r"[^a-z0-9]")


def match_key(name: str) -> str:
    """The spelling-insensitive key two names of one feature share."""
    key = _SEPARATORS.sub("", name.lower())
    for prefix in _PREFIXES:
        if key.startswith(prefix) and len(key) > len(prefix):
            return key[len(prefix) :]
    return key


@dataclass(frozen=True)
class Vocabulary:
    names: frozenset[str]  # canonical names
    by_key: Mapping[str, str]  # match key -> canonical
    to_libvirt: Mapping[str, str]  # canonical -> libvirt name
    from_libvirt: Mapping[str, str]  # libvirt name -> canonical
    non_migratable: frozenset[str]  # canonical names libvirt marks migratable='no'
    hypervisor_provided: frozenset[str] = frozenset()  # KVM offers them to guests on any host
    #: vendor -> {flag Linux shows: hidden CPUID bits it implies} (data/feature_names.yaml)
    cpuinfo_hidden: Mapping[str, Mapping[str, tuple[str, ...]]] = field(default_factory=dict)
    #: canonical names of VMX capability bits (cpu_map ``vmx-*``, see FeatureDef.vmx_capability)
    vmx_capabilities: frozenset[str] = frozenset()
    #: (match key, the canonical names it could mean): spellings refused as ambiguous
    ambiguous: tuple[tuple[str, tuple[str, ...]], ...] = ()

    @property
    def never_needed(self) -> frozenset[str]:
        """Features no destination's CPU must offer: KVM gives them to every guest
        (``hypervisor_provided``), or they are details of nested virtualization that
        ``vmx`` itself stands for (``vmx_capabilities``). One rule for every move."""
        return self.hypervisor_provided | self.vmx_capabilities

    def try_canonical(self, name: str) -> str | None:
        return self.by_key.get(match_key(name))

    def canonical(self, name: str, where: str | Path | None = None) -> str:
        found = self.try_canonical(name)
        if found is None:
            meanings = dict(self.ambiguous).get(match_key(name))
            if meanings:
                raise AmbiguousFeature(name, meanings, str(where) if where else None)
            raise UnknownFeature(name, self.suggest(name), str(where) if where else None)
        return found

    def canonical_set(self, names: Iterable[str], where: str | Path | None = None) -> frozenset[str]:
        return frozenset(self.canonical(n, where) for n in names)

    def libvirt_name(self, canonical: str) -> str | None:
        return self.to_libvirt.get(canonical)

    def spellings(self, canonical: str) -> tuple[str, ...]:
        return tuple(sorted(k for k, v in self.by_key.items() if v == canonical))

    def suggest(self, name: str, limit: int = 3) -> list[str]:
        close = difflib.get_close_matches(match_key(name), list(self.by_key), n=limit * 3, cutoff=0.6)
        result: list[str] = []
        for key in close:
            canonical = self.by_key[key]
            if canonical not in result:
                result.append(canonical)
        return result[:limit]


def _mechanical_linux_name(libvirt_name: str) -> str:
    return libvirt_name.replace(".", "_").replace("-", "_")


def build_vocabulary(cpu_map: CpuMapData, names: Mapping[str, Any], where: Path) -> Vocabulary:
    """Derive the vocabulary from cpu_map facts plus the names file (pure)."""
    exceptions: Mapping[str, str] = names.get("libvirt_to_linux", {})
    by_key: dict[str, str] = {}
    to_libvirt: dict[str, str] = {}
    from_libvirt: dict[str, str] = {}
    non_migratable: set[str] = set()
    vmx_capabilities: set[str] = set()

    def claim(spelling: str, canonical: str) -> None:
        key = match_key(spelling)
        owner = by_key.setdefault(key, canonical)
        if owner != canonical:
            raise BadInput(where, f"spelling {spelling!r} would name both {owner} and {canonical}")

    for feature in cpu_map.features.values():
        linux = [alias for alias, source in feature.aliases if source == "linux"]
        canonical = exceptions.get(feature.name) or (linux[0] if linux else None)
        canonical = canonical or _mechanical_linux_name(feature.name)
        to_libvirt[canonical] = feature.name
        from_libvirt[feature.name] = canonical
        if not feature.migratable:
            non_migratable.add(canonical)
        if feature.vmx_capability:
            vmx_capabilities.add(canonical)
        claim(canonical, canonical)
        claim(feature.name, canonical)
        for alias, _source in feature.aliases:
            claim(alias, canonical)
    for flag in names.get("linux_only", []):
        claim(flag, flag)
    for canonical, spellings in names.get("aliases", {}).items():
        if match_key(canonical) not in by_key:
            raise BadInput(where, f"alias target {canonical!r} is not a known feature")
        for spelling in spellings:
            claim(spelling, by_key[match_key(canonical)])
    ambiguous: list[tuple[str, tuple[str, ...]]] = []
    for spelling, meanings in names.get("ambiguous", {}).items():
        if match_key(spelling) in by_key:
            raise BadInput(where, f"ambiguous spelling {spelling!r} already names {by_key[match_key(spelling)]}")
        unknown = [m for m in meanings if match_key(m) not in by_key]
        if unknown:
            raise BadInput(where, f"ambiguous spelling {spelling!r}: {unknown[0]!r} is not a known feature")
        ambiguous.append((match_key(spelling), tuple(by_key[match_key(m)] for m in meanings)))
    provided = frozenset(by_key[match_key(n)] for n in names.get("hypervisor_provided", []))
    hidden = {
        vendor: {by_key[match_key(shown)]: tuple(by_key[match_key(b)] for b in bits) for shown, bits in table.items()}
        for vendor, table in names.get("cpuinfo_hidden", {}).items()
    }
    return Vocabulary(
        frozenset(by_key.values()),
        by_key,
        to_libvirt,
        from_libvirt,
        frozenset(non_migratable),
        provided,
        hidden,
        frozenset(vmx_capabilities),
        tuple(ambiguous),
    )


@cache
def load_vocabulary() -> Vocabulary:
    from cpuguard.yamlsafe import read_yaml  # deferred: the hook's fast path must not pay for PyYAML

    names = read_yaml(NAMES_FILE)
    return build_vocabulary(load_cpu_map_data(), names, NAMES_FILE)
