"""Turn a domain definition, a VM policy and the kind of move into the needs a
destination must meet. Pure: no I/O, everything is passed in.

Rules (README "Live and cold moves"):

* cold (fresh boot): the workload's needs (policy, scanned binaries) and the
  guest CPU definition: a custom model's features plus required ones;
  host-model and host-passthrough guests take what the new host offers.
* live (migration, restore of a memory image): additionally every feature
  the guest sees *now*. For host-passthrough / maximum / host-model (not yet
  expanded) that is the source host's guest-visible CPUID features, minus
  those that never migrate (cpu_map ``migratable='no'``: invtsc, xsaves).
"""

from __future__ import annotations

from collections.abc import Sequence

from cpuguard.domain import X86_ARCHES
from cpuguard.knowledge import Knowledge
from cpuguard.levels import level_features
from cpuguard.policy import VmPolicy
from cpuguard.records import Domain, HostFacts, Move, Need, Origin, Requirements
from cpuguard.scan.records import BinaryNeeds


def _policy_needs(policy: VmPolicy) -> list[Need]:
    needs: list[Need] = []
    where = f"policy {policy.source}"
    for feature in sorted(policy.features):
        needs.append(Need(feature, Origin("policy", where)))
    if policy.level:
        origin = Origin("level", f"level {policy.level} required by {where}")
        needs.extend(Need(f, origin) for f in sorted(level_features(policy.level)))
    if policy.model:
        origin = Origin("policy", f"model {policy.model} required by {where}")
        needs.extend(Need(f, origin) for f in sorted(policy.model_features))
    for binary in policy.binaries:
        # only what the binary itself needs: its `level` is a summary of these, not a need
        needs.extend(Need(use.feature, Origin("binary", binary.provenance(use.feature))) for use in binary.required)
    return needs


def guest_visible(flags: frozenset[str], knowledge: Knowledge) -> frozenset[str]:
    """The features of ``flags`` a guest can see and carry across a live move:
    CPUID features libvirt models (not Linux's synthetic flags like
    ``rep_good`` or mitigation markers like ``pti``), minus non-migratable ones
    and those KVM provides on every host (``hypervisor``, ``x2apic``, ``arat``...)."""
    vocabulary = knowledge.vocabulary
    modelled = frozenset(vocabulary.to_libvirt)
    # what KVM gives every guest on any host is never a need the destination's CPU must meet
    return (flags & modelled) - vocabulary.non_migratable - vocabulary.hypervisor_provided - {"hypervisor"}


def build_requirements(
    vm: str,
    domain: Domain | None,
    policy: VmPolicy | None,
    move: Move,
    knowledge: Knowledge,
    *,
    source_host: HostFacts | None = None,
) -> Requirements:
    needs: list[Need] = _policy_needs(policy) if policy else []
    forbidden: list[Need] = []
    notes: list[str] = []
    unchecked: list[str] = []
    vendor: str | None = None
    arch = domain.arch if domain else (source_host.arch if source_host else "x86_64")
    if domain is not None:
        cpu = domain.cpu
        where = f"domain XML {domain.source}"
        x86 = domain.arch in X86_ARCHES
        if cpu.mode == "custom" and cpu.model and x86:
            origin = Origin("guest-cpu", f"guest CPU model {cpu.model} ({where})")
            model_features = knowledge.cpu_map.features_of(cpu.model) - cpu.disabled
            needs.extend(Need(f, origin) for f in sorted(model_features))
            if cpu.vendor:
                vendor = cpu.vendor
        if cpu.required:
            origin = Origin("guest-cpu", f"features required by the guest CPU definition ({where})")
            needs.extend(Need(f, origin) for f in sorted(cpu.required))
        forbidden.extend(
            Need(f, Origin("guest-cpu", f"feature forbidden by the guest CPU definition ({where})"))
            for f in sorted(cpu.forbidden)
        )
        if move is Move.LIVE and cpu.mode == "default" and cpu.model and source_host is not None:
            # no <cpu>: QEMU's default model minus what the current host lacked, which the guest sees now
            seen = knowledge.cpu_map.features_of(cpu.model) & guest_visible(source_host.flags, knowledge)
            origin = Origin("live", f"the running guest sees it now (QEMU's default {cpu.model} on {source_host.name})")
            needs.extend(Need(f, origin) for f in sorted(seen))
        if move is Move.LIVE and cpu.mode == "host-model" and cpu.model and x86:
            # a running host-model guest's XML carries the CPU libvirt expanded for it at start
            origin = Origin("live", f"the running guest sees it now (host-model expanded to {cpu.model}, {where})")
            seen = knowledge.cpu_map.features_of(cpu.model) - cpu.disabled - knowledge.vocabulary.hypervisor_provided
            needs.extend(Need(f, origin) for f in sorted(seen))
        elif move is Move.LIVE and cpu.mode in ("host-passthrough", "maximum", "host-model"):
            if source_host is None:
                unchecked.append(
                    f"live rule only partly applied: {cpu.mode} guest and its current host is unknown, "
                    "so the features it sees now could not be checked"
                )
            else:
                seen = guest_visible(source_host.flags, knowledge) - cpu.disabled
                origin = Origin(
                    "live",
                    f"the running guest sees it now ({cpu.mode} on {source_host.name or source_host.source})",
                )
                needs.extend(Need(f, origin) for f in sorted(seen))
                if source_host.vendor:
                    vendor = vendor or source_host.vendor
        if move is Move.LIVE and cpu.mode == "custom" and cpu.optional:
            notes.append(
                "optional guest CPU features were not checked: whether the running guest has them "
                "depends on its current host"
            )
        if domain.virt_type == "qemu":
            notes.append(
                "TCG guest (domain type 'qemu'): QEMU emulates its CPU, so the host's features matter less "
                "than for KVM; checked as if it were KVM"
            )
    elif move is Move.LIVE and source_host is None:
        notes.append("no domain definition: only the workload's needs were checked")
    # The hypervisor bit is set by every hypervisor for every guest (libvirt's
    # check='full' XML of a running guest lists it): never a need of the host.
    needs = [n for n in needs if n.feature != "hypervisor"]
    return Requirements(
        vm=vm,
        arch=arch,
        move=move,
        needs=tuple(needs),
        forbidden=tuple(forbidden),
        vendor=vendor,
        mode=policy.mode if policy else "enforce",
        notes=tuple(notes),
        policy=policy.source if policy else None,
        current_host=source_host.name if source_host is not None else None,
        unchecked=tuple(unchecked),
    )


def binary_requirements(name: str, binaries: Sequence[BinaryNeeds], move: Move = Move.COLD) -> Requirements:
    """What a bare set of scanned binaries needs (``cpuguard check binary``)."""
    needs = [
        Need(use.feature, Origin("binary", binary.provenance(use.feature)))
        for binary in binaries
        for use in binary.required
    ]
    return Requirements(vm=name, arch="x86_64", move=move, needs=tuple(needs), subject="binaries")
