"""Named CPU models (libvirt cpu_map) and microarchitectures (archspec) as canonical feature sets.

The two are different things and cpuguard keeps them apart:

* a libvirt model (``model:Haswell-noTSX``) is a conservative *guest* CPU
  definition: exactly the features libvirt gives a guest of that model;
  libvirt 9.0's Haswell-noTSX lacks abm, f16c and rdrand although every
  real Haswell has them;
* an archspec microarchitecture (``uarch:haswell``) describes a real CPU
  generation as Linux reports it.

Comparisons are always by feature set, never by ancestry.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from cpuguard.cpumap import CpuMapData, load_cpu_map_data
from cpuguard.errors import UnknownName
from cpuguard.vocabulary import Vocabulary, load_vocabulary


@dataclass(frozen=True)
class CpuModel:
    name: str
    vendor: str | None
    features: frozenset[str]  # canonical, inheritance expanded


@dataclass(frozen=True)
class CpuMap:
    source: str
    models: Mapping[str, CpuModel]

    def get(self, name: str, where: str | Path | None = None) -> CpuModel:
        model = self.models.get(name)
        if model is None:
            lowered = {m.lower(): m for m in self.models}
            if name.lower() in lowered:
                return self.models[lowered[name.lower()]]
            import difflib

            close = difflib.get_close_matches(name, list(self.models), n=3, cutoff=0.5)
            raise UnknownName(where, "libvirt CPU model", name, close)
        return model

    def find(self, name: str) -> CpuModel | None:
        """The model, or None if this cpu_map does not know the name (matching ignores case)."""
        model = self.models.get(name)
        if model is None:
            lowered = {m.lower(): m for m in self.models}
            model = self.models.get(lowered.get(name.lower(), ""))
        return model

    def features_of(self, name: str) -> frozenset[str]:
        return self.get(name).features

    def satisfying(self, needed: Iterable[str], vendor: str | None = None) -> list[CpuModel]:
        """Models that offer every needed feature, smallest feature set first."""
        need = frozenset(needed)
        found = [
            m for m in self.models.values() if need <= m.features and (vendor is None or m.vendor in (None, vendor))
        ]
        return sorted(found, key=lambda m: (len(m.features), m.name))

    def runnable_on(self, flags: Iterable[str], vendor: str | None = None) -> list[CpuModel]:
        """Models a host with ``flags`` can offer, largest feature set first."""
        have = frozenset(flags)
        found = [
            m for m in self.models.values() if m.features <= have and (vendor is None or m.vendor in (None, vendor))
        ]
        return sorted(found, key=lambda m: (-len(m.features), m.name))


def build_cpu_map(data: CpuMapData, vocabulary: Vocabulary) -> CpuMap:
    models = {}
    for name in data.models:
        features = frozenset(vocabulary.from_libvirt.get(f, f) for f in data.expanded(name))
        # Newer cpu_maps list the VMX capability bits (vmx-*) in Intel models. QEMU gives them
        # to a guest only together with vmx, which the models do not have, and /proc/cpuinfo
        # does not name them: cpuguard checks vmx itself (README "What counts as a need").
        features -= vocabulary.vmx_capabilities
        models[name] = CpuModel(name, data.models[name].vendor, features)
    return CpuMap(data.source, models)


@cache
def load_cpu_map() -> CpuMap:
    return build_cpu_map(load_cpu_map_data(), load_vocabulary())


@dataclass(frozen=True)
class Microarchitecture:
    name: str
    vendor: str
    features: frozenset[str]  # canonical where the vocabulary knows the name


def microarchitecture(name: str) -> Microarchitecture:
    """An archspec x86_64 microarchitecture as canonical features."""
    import archspec.cpu  # deferred: archspec loads its JSON database at import

    targets = archspec.cpu.TARGETS
    target = targets.get(name) or targets.get(name.lower())
    x86 = sorted(n for n, t in targets.items() if t.family.name == "x86_64" and n != "x86_64")
    if target is None or target.family.name != "x86_64":
        import difflib

        raise UnknownName(None, "x86_64 microarchitecture", name, difflib.get_close_matches(name.lower(), x86, 3))
    vocabulary = load_vocabulary()
    features = frozenset(vocabulary.try_canonical(f) or f for f in target.features)
    return Microarchitecture(target.name, str(target.vendor), features)


def microarchitectures_satisfying(needed: Iterable[str]) -> list[Microarchitecture]:
    """Real CPU generations (archspec) that have every needed feature, oldest-ish first."""
    import archspec.cpu

    need = frozenset(needed)
    result = []
    for name, target in archspec.cpu.TARGETS.items():
        if target.family.name != "x86_64" or target.vendor == "generic":
            continue
        uarch = microarchitecture(name)
        if need <= uarch.features:
            result.append(uarch)
    return sorted(result, key=lambda u: (len(u.features), u.name))
