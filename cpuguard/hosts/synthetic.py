"""Hypothetical hosts for "what if we buy / keep this hardware" questions.

``model:NAME``  exactly the features of libvirt's cpu_map model NAME;
``uarch:NAME``  an archspec microarchitecture (a real CPU generation);
``level:x86-64-vN``  a psABI level.
archspec and the psABI list only instruction-set extensions, so those two
are completed with the architectural features every 64-bit x86 model in
cpu_map has (see Knowledge.x86_64_baseline).
"""

from __future__ import annotations

from cpuguard.cpumodels import microarchitecture
from cpuguard.knowledge import Knowledge
from cpuguard.levels import level_features, normalize_level
from cpuguard.records import HostFacts

_UARCH_VENDORS = {"GenuineIntel": "Intel", "AuthenticAMD": "AMD", "HygonGenuine": "Hygon"}


def model_host(name: str, knowledge: Knowledge, host_name: str = "") -> HostFacts:
    model = knowledge.cpu_map.get(name)
    return HostFacts(
        name=host_name or f"model:{model.name}",
        arch="x86_64",
        vendor=model.vendor or "",
        model_name=f"libvirt model {model.name}",
        flags=model.features,
        source=f"model:{model.name}",
        kind="model",
        libvirt_model=model.name,
    )


def uarch_host(name: str, knowledge: Knowledge, host_name: str = "") -> HostFacts:
    uarch = microarchitecture(name)
    return HostFacts(
        name=host_name or f"uarch:{uarch.name}",
        arch="x86_64",
        vendor=_UARCH_VENDORS.get(uarch.vendor, ""),
        model_name=f"{uarch.name} microarchitecture (archspec)",
        flags=uarch.features | knowledge.x86_64_baseline,
        source=f"uarch:{uarch.name}",
        kind="uarch",
    )


def level_host(name: str, knowledge: Knowledge, host_name: str = "") -> HostFacts:
    level = normalize_level(name)
    return HostFacts(
        name=host_name or f"level:{level}",
        arch="x86_64",
        vendor="",
        model_name=f"any {level} CPU",
        flags=level_features(level) | knowledge.x86_64_baseline,
        source=f"level:{level}",
        kind="level",
    )
