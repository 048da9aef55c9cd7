"""The cluster baseline: the guest CPU that can move freely between a set of hosts. Pure.

This is the idea behind VMware's EVC and oVirt's cluster CPU type: give every
guest only what *every* host offers, and no live move inside the cluster can
fail for lack of a feature. The answer is phrased the way libvirt wants it in
a domain definition: a named model from libvirt's cpu_map plus features to
require or disable on top of it.

The model is chosen by the rule libvirt's ``virsh cpu-baseline`` applies
first (``x86Decode`` in libvirt's src/cpu/cpu_x86.c): among the models of the
hosts' vendor, the one that needs the fewest ``<feature>`` elements on top.
Ties go to the model with fewer disabled features (one the hosts run as it
is), then to more features, then to the name, so the result does not depend
on the order of cpu_map's files. libvirt also weighs the CPUs'
family/model signature, so its model name can differ; the feature set a guest
gets is the same (the tests check both against ``virsh cpu-baseline``).

Features KVM offers guests on any host (``hypervisor_provided`` in
data/feature_names.yaml: x2apic, tsc-deadline, arat) are never required on top
of the model: no host can lack them, so they cannot hold a move back, and
libvirt, which reads the bare CPUs, does not list them either. They stay in
``guest_features`` and are named in ``Baseline.hypervisor_provided``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from cpuguard.errors import BadInput
from cpuguard.knowledge import Knowledge
from cpuguard.levels import highest_level
from cpuguard.planning.records import Baseline, Problem
from cpuguard.records import HostFacts
from cpuguard.requirements import guest_visible


def _libvirt_names(features: Sequence[str], knowledge: Knowledge) -> tuple[str, ...]:
    return tuple(sorted(knowledge.vocabulary.libvirt_name(f) or f for f in features))


def cluster_baseline(
    hosts: Mapping[str, HostFacts], knowledge: Knowledge, *, problems: Sequence[Problem] = ()
) -> Baseline:
    if not hosts:
        raise BadInput(None, "a baseline needs at least one host whose facts could be read")
    arches = sorted({h.arch for h in hosts.values()})
    if len(arches) > 1:
        listing = ", ".join(f"{n} ({h.arch})" for n, h in sorted(hosts.items()))
        raise BadInput(None, f"hosts of different architectures have no common guest CPU: {listing}")
    vendors = tuple(sorted({h.vendor for h in hosts.values() if h.vendor}))
    vendor = vendors[0] if len(vendors) == 1 else None
    common = frozenset.intersection(*(h.flags for h in hosts.values()))
    guest = guest_visible(common, knowledge)
    notes: list[str] = []
    if len(vendors) > 1:
        notes.append(
            f"hosts of different vendors ({', '.join(vendors)}): the <cpu> has no <vendor>; "
            "libvirt's cpu-baseline refuses CPUs whose vendors differ"
        )
    dropped = sorted(common & knowledge.vocabulary.non_migratable)
    if dropped:
        notes.append(f"left out because they never migrate (cpu_map migratable='no'): {', '.join(dropped)}")
    # guest_visible leaves out what KVM offers on every host; the guest still has it
    provided = (
        (common & knowledge.vocabulary.hypervisor_provided) - {"hypervisor"} if arches == ["x86_64"] else frozenset()
    )
    guest = guest | provided
    wanted = guest - provided  # what the <cpu> has to ask for
    best = None
    best_key: tuple[int, int, int, str] | None = None
    if arches == ["x86_64"]:
        for model in knowledge.cpu_map.models.values():
            if vendor is not None and model.vendor not in (None, vendor):
                continue
            extra = wanted - model.features
            disabled = model.features - guest
            key = (len(extra) + len(disabled), len(disabled), -len(model.features), model.name)
            if best_key is None or key < best_key:
                best, best_key = model, key
    extra_set = sorted(wanted - best.features) if best else sorted(wanted)
    disabled_set = sorted(best.features - guest) if best else []
    unlisted = sorted(provided - best.features) if best else sorted(provided)
    if unlisted:
        notes.append(
            f"not required in the <cpu>: {', '.join(unlisted)} -- "
            "KVM offers them to guests on every host, so no move can fail for lack of them"
        )
    union = frozenset.union(*(guest_visible(h.flags, knowledge) for h in hosts.values()))
    lacking: dict[tuple[str, ...], list[str]] = {}
    for feature in sorted(union - guest):
        lacking.setdefault(tuple(sorted(n for n, h in hosts.items() if feature not in h.flags)), []).append(feature)
    held_back = sorted(((h, tuple(f)) for h, f in lacking.items()), key=lambda item: (len(item[0]), item[0]))
    return Baseline(
        hosts=tuple(sorted(hosts)),
        arch=arches[0],
        vendor=vendor,
        vendors=vendors,
        common=common,
        guest_features=guest,
        level=highest_level(common),
        model=best.name if best else None,
        extra=tuple(extra_set),
        disabled=tuple(disabled_set),
        hypervisor_provided=tuple(unlisted),
        extra_libvirt=_libvirt_names(extra_set, knowledge),
        disabled_libvirt=_libvirt_names(disabled_set, knowledge),
        held_back=tuple(held_back),
        notes=tuple(notes),
        problems=tuple(sorted(set(problems))),
        libvirt_spelling=tuple(
            (f, name) for f in (*extra_set, *disabled_set) if (name := knowledge.vocabulary.libvirt_name(f) or f) != f
        ),
    )
