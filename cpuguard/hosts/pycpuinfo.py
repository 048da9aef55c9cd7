"""Host facts from py-cpuinfo, for machines without /proc/cpuinfo (``local`` off Linux).

py-cpuinfo runs CPUID through a helper process and takes over a second, so it
is only used when /proc/cpuinfo does not exist, never on a hot path. Its flag
names are Linux's where Linux has one.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from cpuguard.errors import BadInput
from cpuguard.records import HostFacts
from cpuguard.vocabulary import Vocabulary

_VENDORS = {"GenuineIntel": "Intel", "AuthenticAMD": "AMD", "HygonGenuine": "Hygon"}
_ARCHES = {"X86_64": "x86_64", "X86_32": "i686", "ARM_8": "aarch64"}


def parse_py_cpuinfo(
    info: Mapping[str, Any], vocabulary: Vocabulary, *, name: str = "", captured_at: datetime | None = None
) -> HostFacts:
    flags = info.get("flags")
    if not isinstance(flags, list) or not flags:
        raise BadInput("py-cpuinfo", "reported no CPU flags")
    vendor_id = str(info.get("vendor_id_raw", ""))
    return HostFacts(
        name=name,
        arch=_ARCHES.get(str(info.get("arch", "")), str(info.get("arch", "")).lower()),
        vendor=_VENDORS.get(vendor_id, vendor_id),
        model_name=str(info.get("brand_raw", "")),
        flags=frozenset(vocabulary.try_canonical(str(f)) or str(f) for f in flags),
        source="py-cpuinfo",
        kind="cpuinfo",
        captured_at=captured_at,
    )


def read_py_cpuinfo(vocabulary: Vocabulary, *, name: str = "", captured_at: datetime | None = None) -> HostFacts:
    try:
        import cpuinfo
    except ImportError:
        raise BadInput("py-cpuinfo", "not installed and no /proc/cpuinfo: cannot read this machine's CPU") from None
    return parse_py_cpuinfo(cpuinfo.get_cpu_info(), vocabulary, name=name, captured_at=captured_at)
