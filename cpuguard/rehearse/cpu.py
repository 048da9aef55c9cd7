"""A ``qemu-x86_64 -cpu`` option with exactly a host's features (pure).

QEMU's own CPU models are not libvirt's (same names, other feature lists), so
the option starts from QEMU's featureless ``base`` model and adds the host's
features one by one, in libvirt's spelling, which QEMU shares for CPUID flags;
the scanner's ground-truth tests (tests/scan/test_groundtruth.py) check this
construction against every binary of their corpus. ``level``/``xlevel`` make
CPUID leaves 7 and 0xD exist: without them glibc refuses to start. The vendor
and family/model come from the host's libvirt model when it has one, because
some programs choose code by them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping

from cpuguard.records import HostFacts
from cpuguard.rehearse.records import EmulatedCpu

#: What QEMU 7.2 prints for each feature its TCG cannot offer (target/i386/cpu.c,
#: ``mark_unavailable_features``): "TCG doesn't support requested feature: CPUID.07H:EBX.avx512f [bit 16]".
_UNSUPPORTED = re.compile(r"TCG doesn't support requested feature: \S+?\.([\w.-]+) \[")

DEFAULT_VENDOR = "GenuineIntel"


def recognized_flags(cpu_help: str) -> frozenset[str]:
    """The flag names of ``qemu-x86_64 -cpu help`` (the part after "Recognized CPUID flags:")."""
    _, found, rest = cpu_help.partition("Recognized CPUID flags:")
    return frozenset(rest.split()) if found else frozenset()


def emulated_cpu(
    facts: HostFacts,
    qemu_flags: frozenset[str],
    libvirt_name: Callable[[str], str | None],
    vendors: Mapping[str, str],
    signature: tuple[int, int] | None,
) -> EmulatedCpu:
    """The CPU for ``facts``: QEMU's ``base`` plus every host feature QEMU has a name for.

    ``qemu_flags`` is :func:`recognized_flags`; ``libvirt_name`` maps a canonical
    name to libvirt's spelling; ``vendors`` maps libvirt vendor names to CPUID
    vendor strings; ``signature`` is the (family, model) of the host's libvirt model.
    """
    adds: list[str] = []
    offered: set[str] = set()
    unknown: list[str] = []
    for feature in sorted(facts.flags):
        name = libvirt_name(feature) or feature
        spelled = next((n for n in (name, name.replace("_", "-"), feature) if n in qemu_flags), None)
        if spelled is None:
            unknown.append(feature)
            continue
        adds.append(f"+{spelled}")
        offered.add(feature)
    family, model = signature or (6, 0)
    vendor = vendors.get(facts.vendor, DEFAULT_VENDOR) if facts.vendor else DEFAULT_VENDOR
    option = ",".join([f"base,vendor={vendor},family={family},model={model},level=13,xlevel=0x80000008", *adds])
    return EmulatedCpu(option, frozenset(offered), tuple(unknown))


def without_unsupported(cpu: EmulatedCpu, qemu_stderr: str, canonical: Callable[[str], str | None]) -> EmulatedCpu:
    """``cpu`` less the features QEMU's warnings (``qemu_stderr`` of a probe run) say TCG lacks."""
    dropped = sorted({canonical(name) or name for name in _UNSUPPORTED.findall(qemu_stderr)} & cpu.offered)
    return EmulatedCpu(cpu.option, cpu.offered - set(dropped), cpu.unknown_to_qemu, tuple(dropped))


def beyond_tcg(names: Iterable[str]) -> list[str]:
    """The instruction-set extensions among ``names`` that QEMU 7.2's TCG cannot run."""
    return sorted(n for n in names if n.startswith(("avx512", "amx", "avx_vnni", "avx10")))
