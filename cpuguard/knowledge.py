"""The CPU knowledge cpuguard decides with, loaded once and passed around."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache, cached_property

from cpuguard.cpumodels import CpuMap, load_cpu_map
from cpuguard.vocabulary import Vocabulary, load_vocabulary


@dataclass(frozen=True)
class Knowledge:
    vocabulary: Vocabulary
    cpu_map: CpuMap

    @cached_property
    def x86_64_baseline(self) -> frozenset[str]:
        """Features every 64-bit x86 model in cpu_map has (fpu, apic, pae, sse2, lm...).

        Used to complete sources that list only ISA extensions (archspec
        microarchitectures, psABI levels) so that a guest CPU model's
        architectural features do not look missing on them.
        """
        models = [m.features for m in self.cpu_map.models.values() if "lm" in m.features]
        return frozenset.intersection(*models) if models else frozenset()


@cache
def load_knowledge() -> Knowledge:
    return Knowledge(load_vocabulary(), load_cpu_map())
