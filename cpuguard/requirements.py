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
* ``policy='optional'`` features are never needs of a fresh boot (libvirt
  gives them only where the host has them); a running guest has one only if
  its current host has it, so only then is it a live need.
* never a need, whatever the move: what KVM gives every guest and the VMX
  capability bits (``Vocabulary.never_needed``).
* a model cpuguard's cpu_map does not know (domain XML from a newer
  libvirt) is the need ``model:NAME``, met only by a host whose facts name
  that model; an unknown feature name is kept as written.
"""

from __future__ import annotations

from collections.abc import Sequence

from cpuguard.domain import X86_ARCHES
from cpuguard.guest.records import GuestNeeds
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
    if policy.guest is not None:
        needs.extend(_guest_needs(policy.guest))
    return needs


def _guest_needs(guest: GuestNeeds) -> list[Need]:
    """What a stored scan of the guest's disks found: its binaries' needs and its OS's CPU floor."""
    needs: list[Need] = []
    for binary in guest.binaries:
        needs.extend(Need(use.feature, Origin("binary", binary.provenance(use.feature))) for use in binary.required)
    floor = guest.os_need
    if floor is not None:
        name = guest.os_name or floor.family
        origin = Origin("guest-os", f"guest OS {name} needs {floor.level} ({floor.family})")
        needs.extend(Need(f, origin) for f in sorted(level_features(floor.level)))
    return needs


def _guest_remarks(guest: GuestNeeds) -> tuple[list[str], list[str]]:
    """(notes, unchecked) about a stored guest scan: its age always; stale or incomplete is a warning."""
    when = f"{guest.scanned_at:%Y-%m-%d %H:%M} UTC, {_age(guest.age_days)}"
    notes = [f"guest scan of {guest.vm}'s disks: {when} ({guest.source})"]
    unchecked = []
    if guest.stale:
        unchecked.append(
            f"the guest scan of {guest.vm} is stale ({_age(guest.age_days)}): what the workload needs may have "
            f"changed since; run cpuguard inventory scan-guests {guest.vm}"
        )
    if guest.problems:
        unchecked.append(f"the guest scan of {guest.vm} is incomplete: {'; '.join(guest.problems[:3])}")
    return notes, unchecked


def _age(days: float) -> str:
    if days < 1:
        hours = int(days * 24)
        return "less than an hour old" if hours < 1 else f"{hours} hour{'s' if hours != 1 else ''} old"
    whole = int(days)
    return f"{whole} day{'s' if whole != 1 else ''} old"


def _model_needs(model: str, dropped: frozenset[str], detail: str, kind: str, knowledge: Knowledge) -> list[Need]:
    """A guest CPU model's features as needs; a model this cpu_map does not know is one narrow need."""
    found = knowledge.cpu_map.find(model)
    if found is None:
        unknown = Origin(
            kind, f"{detail}; the model is not in cpuguard's cpu_map, so only a host naming it can meet it"
        )
        return [Need(f"model:{model}", unknown)]
    origin = Origin(kind, detail)
    return [Need(f, origin) for f in sorted(found.features - dropped)]


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
    if policy is not None and policy.guest is not None:
        notes, unchecked = _guest_remarks(policy.guest)
    vendor: str | None = None
    vendor_origin: str | None = None
    arch = domain.arch if domain else (source_host.arch if source_host else "x86_64")
    if domain is not None:
        cpu = domain.cpu
        where = f"domain XML {domain.source}"
        x86 = domain.arch in X86_ARCHES
        if cpu.mode == "custom" and cpu.model and x86:
            needs.extend(
                _model_needs(
                    cpu.model,
                    cpu.disabled | cpu.optional,
                    f"guest CPU model {cpu.model} ({where})",
                    "guest-cpu",
                    knowledge,
                )
            )
        if cpu.vendor and x86 and cpu.mode == "custom":
            vendor = cpu.vendor  # libvirt: a named vendor must be the host's (cputest host/pentium3-amd)
            vendor_origin = "guest-cpu"
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
            detail = f"the running guest sees it now (host-model expanded to {cpu.model}, {where})"
            needs.extend(_model_needs(cpu.model, cpu.disabled, detail, "live", knowledge))
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
                if source_host.vendor and not vendor:
                    vendor, vendor_origin = source_host.vendor, "live"
        if move is Move.LIVE and cpu.mode == "custom" and cpu.optional and x86:
            # libvirt enabled each optional feature at start only if the host had it
            if source_host is None:
                unchecked.append(
                    "live rule only partly applied: the guest CPU has optional features and its current host "
                    "is unknown, so whether the running guest has them could not be checked"
                )
            else:
                origin = Origin(
                    "live",
                    f"optional feature the running guest has (its host {source_host.name or source_host.source} "
                    f"has it; {where})",
                )
                needs.extend(Need(f, origin) for f in sorted(cpu.optional & source_host.flags))
        if domain.virt_type == "qemu":
            notes.append(
                "TCG guest (domain type 'qemu'): QEMU emulates its CPU, so the host's features matter less "
                "than for KVM; checked as if it were KVM"
            )
    elif move is Move.LIVE and source_host is None:
        notes.append("no domain definition: only the workload's needs were checked")
    # KVM gives every guest hypervisor, x2apic, tsc-deadline and arat whatever the host CPU says
    # (libvirt's check='full' XML of a running guest lists them as require): never a need, under
    # either rule; likewise the VMX capability bits, which vmx stands for.
    never = knowledge.vocabulary.never_needed
    needs = [n for n in needs if n.feature not in never]
    return Requirements(
        vm=vm,
        arch=arch,
        move=move,
        needs=tuple(needs),
        forbidden=tuple(forbidden),
        vendor=vendor,
        vendor_origin=vendor_origin,
        mode=policy.mode if policy else "enforce",
        notes=tuple(notes),
        policy=policy.source if policy and policy.source else None,
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
