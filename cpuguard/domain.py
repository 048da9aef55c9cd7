"""Guest CPU definitions from libvirt domain XML (https://libvirt.org/formatdomain.html#cpu-model-and-topology)."""

from __future__ import annotations

import re
from pathlib import Path

from cpuguard.errors import BadInput
from cpuguard.knowledge import Knowledge
from cpuguard.records import Domain, GuestCpu
from cpuguard.xmlsafe import MAX_XML_BYTES, parse_xml, read_bytes

CPU_MODES = ("custom", "host-model", "host-passthrough", "maximum")
X86_ARCHES = ("x86_64", "i686")
FEATURE_POLICIES = ("force", "require", "optional", "disable", "forbid")
#: How libvirt's cpu_map spells model and feature names (``Icelake-Server-v7``, ``sse4.2``,
#: ``vmx-invept-single-context-noglobals``); an unknown name of this shape is kept, any other refused.
LIBVIRT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")

#: QEMU's default x86_64 CPU model when a domain has no <cpu> element. QEMU then
#: drops quietly whatever of it the host lacks (no check), so such a guest starts
#: anywhere; GuestCpu mode "default" stands for that.
DEFAULT_MODEL = "qemu64"


def parse_domain(text: str | bytes, where: str | Path, knowledge: Knowledge) -> Domain:
    root = parse_xml(text, where, root="domain")
    name = (root.findtext("name") or "").strip()
    if not name:
        raise BadInput(where, "domain XML has no <name>")
    os_type = root.find("os/type")
    arch = (os_type.get("arch") if os_type is not None else None) or "x86_64"
    cpus = root.findall("cpu")
    if len(cpus) > 1:  # libvirt's schema allows one; which one counts would be a guess
        raise BadInput(where, "more than one <cpu> element in the domain XML")
    cpu_el = cpus[0] if cpus else None
    if cpu_el is None:
        cpu = GuestCpu(mode="default", model=DEFAULT_MODEL if arch in X86_ARCHES else None)
        return Domain(name, arch, root.get("type", ""), cpu, str(where))
    mode = cpu_el.get("mode", "custom")
    if mode not in CPU_MODES:
        raise BadInput(where, f"unknown <cpu mode={mode!r}> (expected one of {', '.join(CPU_MODES)})")
    models = cpu_el.findall("model")
    if len(models) > 1:
        raise BadInput(where, "more than one <model> in <cpu>")
    model_el = models[0] if models else None
    model = (model_el.text or "").strip() if model_el is not None else None
    if model and arch in X86_ARCHES:
        found = knowledge.cpu_map.find(model)
        if found is None and not LIBVIRT_NAME.fullmatch(model):
            knowledge.cpu_map.get(model, where)  # not a name any libvirt writes: the unknown-model error
        # a model this cpu_map does not know (XML from a newer libvirt) is kept as written:
        # requirements.py makes it a need only a host naming the same model can meet
        model = found.name if found is not None else model
    by_policy: dict[str, set[str]] = {p: set() for p in FEATURE_POLICIES}
    for feature in cpu_el.findall("feature"):
        fname = feature.get("name")
        policy = feature.get("policy", "require")
        if not fname:
            raise BadInput(where, "<cpu><feature> without a name")
        if policy not in FEATURE_POLICIES:
            raise BadInput(where, f"unknown feature policy {policy!r} for {fname}")
        if arch in X86_ARCHES:  # other architectures' feature names are not in the x86 vocabulary
            # a name the vocabulary does not know (XML from a newer libvirt) stays as written: a
            # need only a host whose facts list that name can meet, never an error that blocks all
            known = knowledge.vocabulary.try_canonical(fname)
            if known is None and not LIBVIRT_NAME.fullmatch(fname):
                knowledge.vocabulary.canonical(fname, where)  # not a name any libvirt writes: unknown-feature error
            by_policy[policy].add(known or fname)
    if mode == "custom" and not model and not any(by_policy.values()) and arch in X86_ARCHES:
        mode, model = "default", DEFAULT_MODEL
    return Domain(
        name=name,
        arch=arch,
        virt_type=root.get("type", ""),
        cpu=GuestCpu(
            mode=mode,
            model=model or None,
            vendor=(cpu_el.findtext("vendor") or "").strip() or None,
            fallback=model_el.get("fallback") if model_el is not None else None,
            check=cpu_el.get("check"),
            required=frozenset(by_policy["require"] | by_policy["force"]),
            optional=frozenset(by_policy["optional"]),
            disabled=frozenset(by_policy["disable"]),
            forbidden=frozenset(by_policy["forbid"]),
        ),
        source=str(where),
    )


def read_domain(path: Path, knowledge: Knowledge) -> Domain:
    return parse_domain(read_bytes(path, MAX_XML_BYTES), path, knowledge)
