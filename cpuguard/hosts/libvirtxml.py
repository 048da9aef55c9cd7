"""Host facts from libvirt's XML: ``virsh capabilities`` and ``virsh domcapabilities``.

``capabilities`` lists under ``<host><cpu>`` only the features *beyond* its
``<model>``, so the model is expanded from cpu_map first.
``domcapabilities``' ``host-model`` mode is what the hypervisor can really
give a guest (model + require - disable); cpuguard prefers it. See
https://libvirt.org/formatcaps.html and https://libvirt.org/formatdomaincaps.html.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import datetime
from pathlib import Path

from cpuguard.cpumodels import CpuMap
from cpuguard.errors import BadInput
from cpuguard.hosts.refusal import NotThisKind
from cpuguard.records import HostFacts
from cpuguard.vocabulary import Vocabulary
from cpuguard.xmlsafe import parse_xml


def _expand(
    model: str | None,
    features: list[ET.Element],
    where: str | Path,
    vocabulary: Vocabulary,
    cpu_map: CpuMap,
) -> frozenset[str]:
    flags: set[str] = set()
    if model:
        found = cpu_map.find(model)
        # A model this cpu_map does not know (XML from a newer libvirt) is not an error: the host
        # keeps the features it lists plus the model's name, which a guest of that model needs
        # (requirements.py), so the answer is narrow rather than a refusal.
        flags |= found.features if found is not None else {f"model:{model}"}
    for feature in features:
        name = feature.get("name")
        if not name:
            raise BadInput(where, "<feature> without a name")
        canonical = vocabulary.try_canonical(name) or name
        if feature.get("policy", "require") in ("disable", "forbid"):
            flags.discard(canonical)
        else:
            flags.add(canonical)
    return frozenset(flags)


def _signature(cpu: ET.Element) -> str:
    sig = cpu.find("signature")
    if sig is None:
        return ""
    return f" (family {sig.get('family')} model {sig.get('model')} stepping {sig.get('stepping')})"


def parse_capabilities(
    text: str | bytes,
    where: str | Path,
    vocabulary: Vocabulary,
    cpu_map: CpuMap,
    *,
    name: str = "",
    captured_at: datetime | None = None,
) -> HostFacts:
    try:
        root = parse_xml(text, where)
    except BadInput as exc:  # not XML at all: perhaps another kind of host file
        raise NotThisKind(where, exc.problem) from None
    if root.tag not in ("capabilities", "domainCapabilities"):
        raise NotThisKind(where, f"root element <{root.tag}>")
    if root.tag == "domainCapabilities":
        return parse_domcapabilities(text, where, vocabulary, cpu_map, name=name, captured_at=captured_at, root=root)
    cpu = root.find("host/cpu")
    if cpu is None:
        raise BadInput(where, "no <host><cpu> element in capabilities XML")
    arch = (cpu.findtext("arch") or "").strip()
    if not arch:
        raise BadInput(where, "no <arch> in <host><cpu>")
    if len(cpu.findall("model")) > 1:
        raise BadInput(where, "more than one <model> in <host><cpu>")
    model = (cpu.findtext("model") or "").strip() or None
    vendor = (cpu.findtext("vendor") or "").strip()
    flags = _expand(model, cpu.findall("feature"), where, vocabulary, cpu_map) if arch == "x86_64" else frozenset()
    return HostFacts(
        name=name,
        arch=arch,
        vendor=vendor,
        model_name=f"{model or 'unknown model'}{_signature(cpu)}",
        flags=flags,
        source=f"capabilities:{where}",
        kind="capabilities",
        captured_at=captured_at,
        libvirt_model=model,
    )


def parse_domcapabilities(
    text: str | bytes,
    where: str | Path,
    vocabulary: Vocabulary,
    cpu_map: CpuMap,
    *,
    name: str = "",
    captured_at: datetime | None = None,
    root: ET.Element | None = None,
) -> HostFacts:
    if root is None:
        root = parse_xml(text, where, root="domainCapabilities")
    arch = (root.findtext("arch") or "").strip()
    if not arch:
        raise BadInput(where, "no <arch> in domain capabilities")
    host_models = [mode for mode in root.findall("cpu/mode") if mode.get("name") == "host-model"]
    if len(host_models) > 1:  # libvirt writes one; which one counts would be a guess
        raise BadInput(where, "more than one host-model CPU mode in domain capabilities")
    host_model = host_models[0] if host_models else None
    if host_model is None or host_model.get("supported") == "no":
        raise BadInput(where, "no supported host-model CPU mode in domain capabilities")
    if len(host_model.findall("model")) > 1:
        raise BadInput(where, "more than one <model> in the host-model CPU mode")
    model = (host_model.findtext("model") or "").strip() or None
    vendor = (host_model.findtext("vendor") or "").strip()
    flags = _expand(model, host_model.findall("feature"), where, vocabulary, cpu_map)
    virt = (root.findtext("domain") or "").strip()
    return HostFacts(
        name=name,
        arch=arch,
        vendor=vendor,
        model_name=f"{model or 'unknown model'} (host-model{', ' + virt if virt else ''})",
        flags=flags,
        source=f"domcapabilities:{where}",
        kind="domcapabilities",
        captured_at=captured_at,
        libvirt_model=model,
    )
