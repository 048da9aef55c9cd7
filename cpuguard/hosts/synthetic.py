"""Hypothetical hosts for "what if we buy / keep this hardware" questions.

``model:NAME``  exactly the features of libvirt's cpu_map model NAME;
``uarch:NAME``  an archspec microarchitecture (a real CPU generation);
``level:x86-64-vN``  a psABI level.
The last two stand for real hosts running KVM, so they also offer what KVM
gives every guest (hypervisor, x2apic, tsc-deadline, arat); ``model:`` stays
exactly libvirt's model, so that its verdicts agree with libvirt's expansion.
archspec and the psABI list only instruction-set extensions, so those two
are completed with the architectural features every 64-bit x86 model in
cpu_map has (see Knowledge.x86_64_baseline).
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

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


UARCH_MODELS_FILE = Path(__file__).resolve().parents[1] / "data" / "uarch_models.yaml"
_VARIANT = re.compile(r"(-IBRS|-IBPB|-noTSX|-noTSX-IBRS)?")


@cache
def _uarch_models() -> dict[str, str]:
    from cpuguard.yamlsafe import read_yaml

    raw = read_yaml(UARCH_MODELS_FILE)
    return {str(k): str(v) for k, v in raw.items()}


def generation_features(uarch: str, knowledge: Knowledge) -> tuple[str | None, frozenset[str]]:
    """(libvirt model, features every variant of it has) for an archspec microarchitecture."""
    base = _uarch_models().get(uarch)
    if base is None:
        return None, frozenset()
    variants = [
        m.features
        for name, m in knowledge.cpu_map.models.items()
        if name.startswith(base) and _VARIANT.fullmatch(name[len(base) :])
    ]
    return base, (frozenset.intersection(*variants) if variants else frozenset())


def uarch_host(name: str, knowledge: Knowledge, host_name: str = "") -> HostFacts:
    uarch = microarchitecture(name)
    model, generation = generation_features(uarch.name, knowledge)
    notes = (
        (
            f"archspec lists instruction-set extensions only; completed with what every variant of libvirt's "
            f"{model} model has",
        )
        if model
        else (
            f"archspec lists instruction-set extensions only and no libvirt model is mapped to {uarch.name}: "
            "system features (pcid, smep, x2apic...) are unknown",
        )
    )
    return HostFacts(
        name=host_name or f"uarch:{uarch.name}",
        arch="x86_64",
        vendor=_UARCH_VENDORS.get(uarch.vendor, ""),
        model_name=f"{uarch.name} microarchitecture (archspec)",
        flags=uarch.features | knowledge.x86_64_baseline | generation | knowledge.vocabulary.hypervisor_provided,
        source=f"uarch:{uarch.name}",
        kind="uarch",
        libvirt_model=model,
        notes=notes,
    )


def level_host(name: str, knowledge: Knowledge, host_name: str = "") -> HostFacts:
    level = normalize_level(name)
    return HostFacts(
        name=host_name or f"level:{level}",
        arch="x86_64",
        vendor="",
        model_name=f"any {level} CPU",
        flags=level_features(level) | knowledge.x86_64_baseline | knowledge.vocabulary.hypervisor_provided,
        source=f"level:{level}",
        kind="level",
    )
