"""The most portable guest CPU definition a VM's workload allows, and what it unlocks. Pure.

A VM's needs come in two kinds (``records.Origin.kind``):

* *configuration*: what its ``<cpu>`` definition asks of a host (``guest-cpu``)
  and, for a live move, what the running guest sees now (``live``). A different
  ``<cpu>`` changes them at the next cold boot;
* *workload*: what its software needs (``policy``, ``level``, ``binary``,
  ``guest-os``). No definition can take those away.

The advice keeps every workload need and drops every other reason a host
refuses the VM: the hosts that can run the workload are the most any
definition can reach. Among libvirt's named models (cpu_map) it picks the one
that needs the fewest ``<feature>`` elements to give the workload its needs
while leaving out what one of those hosts lacks -- the rule ``cluster_baseline``
applies to a cluster, applied to the hosts the workload can use. Ties go to
fewer disabled features, then to more features, then to the name.

A running guest keeps the CPU it booted with: the advice takes effect at its
next cold boot, and the live rule applies until then (``live_now``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace

from cpuguard.advice.records import Advice, AdvisedCpu, HostShortfall, Standing
from cpuguard.domain import X86_ARCHES
from cpuguard.knowledge import Knowledge
from cpuguard.levels import highest_level
from cpuguard.planning.records import VmSpec, is_safe
from cpuguard.records import Domain, GuestCpu, HostFacts, Missing, Move, Need, Origin, Requirements
from cpuguard.requirements import build_requirements
from cpuguard.verdict import arch_runs_on, decide, vm_level

#: Origins of needs that come from the software, not from the guest's CPU definition.
WORKLOAD_KINDS = frozenset({"policy", "level", "binary", "guest-os"})


def _group(needs: Iterable[Need]) -> tuple[Missing, ...]:
    """Needs by feature (sorted), each with every origin."""
    by_feature: dict[str, set[Origin]] = {}
    for need in needs:
        by_feature.setdefault(need.feature, set()).add(need.origin)
    return tuple(Missing(f, tuple(sorted(by_feature[f]))) for f in sorted(by_feature))


def _reachable(req: Requirements, hosts: Mapping[str, HostFacts]) -> tuple[str, ...]:
    return tuple(name for name in sorted(hosts) if is_safe(decide(req, hosts[name])))


def _given(vm: VmSpec, hosts: Mapping[str, HostFacts], knowledge: Knowledge) -> frozenset[str] | None:
    """What the VM's current CPU definition gives the guest (None when that cannot be told)."""
    domain = vm.domain
    if domain is None or domain.arch not in X86_ARCHES:
        return None
    cpu = domain.cpu
    if cpu.mode in ("custom", "default") or (cpu.mode == "host-model" and cpu.model):
        model = knowledge.cpu_map.find(cpu.model) if cpu.model else None
        if cpu.model and model is None:
            return None  # a model from a newer libvirt: what it gives is not known here
        base = model.features if model is not None else frozenset()
        return (base - cpu.disabled) | cpu.required | cpu.optional
    current = hosts.get(vm.host) if vm.host else None
    return current.flags - cpu.disabled if current is not None else None


def best_definition(
    workload: frozenset[str], hosts: Mapping[str, HostFacts], knowledge: Knowledge
) -> AdvisedCpu | None:
    """The named model plus ``require``/``disable`` features that gives ``workload`` and runs on every
    one of ``hosts`` (the hosts that can run the workload); None if there is no such host."""
    if not hosts:
        return None
    never = knowledge.vocabulary.never_needed
    common = frozenset.intersection(*(h.flags for h in hosts.values()))
    vendors = {h.vendor for h in hosts.values() if h.vendor}
    vendor = vendors.pop() if len(vendors) == 1 else None
    best: AdvisedCpu | None = None
    best_key: tuple[int, int, int, str] | None = None
    for model in knowledge.cpu_map.models.values():
        if vendor is not None and model.vendor not in (None, vendor):
            continue
        required = workload - model.features - never
        disabled = (model.features - workload - never) - common  # a feature one of the hosts lacks
        key = (len(required) + len(disabled), len(disabled), -len(model.features), model.name)
        if best_key is not None and key >= best_key:
            continue
        features = (model.features - disabled) | required
        best_key = key
        best = AdvisedCpu(
            model=model.name,
            required=tuple(sorted(required)),
            disabled=tuple(sorted(disabled)),
            required_libvirt=_libvirt(required, knowledge),
            disabled_libvirt=_libvirt(disabled, knowledge),
            features=features,
            level=highest_level(features),
        )
    return best


def _libvirt(features: frozenset[str], knowledge: Knowledge) -> tuple[str, ...]:
    return tuple(sorted(knowledge.vocabulary.libvirt_name(f) or f for f in features))


def advised_domain(domain: Domain | None, vm: str, advised: AdvisedCpu) -> Domain:
    """``domain`` with its <cpu> replaced by the advised definition (check='partial', fallback='forbid')."""
    cpu = GuestCpu(
        mode="custom",
        model=advised.model,
        fallback="forbid",
        check="partial",
        required=frozenset(advised.required),
        disabled=frozenset(advised.disabled),
    )
    if domain is None:
        return Domain(vm, "x86_64", "kvm", cpu, "the advised <cpu>")
    return replace(domain, cpu=cpu, source=f"{domain.source} with the advised <cpu>")


def advise(vm: VmSpec, hosts: Mapping[str, HostFacts], knowledge: Knowledge) -> Advice:
    current = hosts.get(vm.host) if vm.host else None
    live = build_requirements(vm.name, vm.domain, vm.policy, Move.LIVE, knowledge, source_host=current)
    cold = build_requirements(vm.name, vm.domain, vm.policy, Move.COLD, knowledge, source_host=current)
    workload_needs = tuple(n for n in cold.needs if n.origin.kind in WORKLOAD_KINDS)
    needs = _group(workload_needs)
    features = frozenset(n.feature for n in workload_needs)
    # the workload alone: no CPU definition, no vendor pinned, no forbidden feature
    workload = replace(cold, needs=workload_needs, forbidden=(), vendor=None, vendor_origin=None, unchecked=())
    workload_hosts = _reachable(workload, hosts)
    shortfalls = tuple(
        HostShortfall(name, verdict.missing, verdict.problems)
        for name in sorted(hosts)
        if name not in workload_hosts
        for verdict in (decide(workload, hosts[name]),)
    )
    notes = list(cold.notes) + list(live.unchecked)
    given = _given(vm, hosts, knowledge)
    not_given: tuple[Missing, ...] = ()
    if given is not None:
        never = knowledge.vocabulary.never_needed
        not_given = _group(n for n in workload_needs if n.feature not in given | never)
    x86 = cold.arch in X86_ARCHES
    advised = best_definition(features, {n: hosts[n] for n in workload_hosts}, knowledge) if x86 else None
    if not x86:
        notes.append(f"no advised <cpu> for an {cold.arch} guest: cpuguard's named models are x86 CPUs")
    live_after: tuple[str, ...] = ()
    cold_after: tuple[str, ...] = ()
    if advised is not None:
        domain = advised_domain(vm.domain, vm.name, advised)
        cold_after = _reachable(_requirements(vm, domain, Move.COLD, knowledge, current), hosts)
        live_after = _reachable(_requirements(vm, domain, Move.LIVE, knowledge, current), hosts)
    live_now = _reachable(live, hosts)
    cold_now = _reachable(cold, hosts)
    others = [h for h in workload_hosts if h != vm.host]
    if not_given:
        standing = Standing.NOT_GIVEN
    elif not others:
        standing = Standing.WORKLOAD
    elif set(live_after) - set(live_now) or set(cold_after) - set(cold_now):
        standing = Standing.CONFIGURATION
    else:
        standing = Standing.FREE
    return Advice(
        vm=vm.name,
        host=vm.host,
        mode=vm.domain.cpu.mode if vm.domain else None,
        model=vm.domain.cpu.model if vm.domain else None,
        needs=needs,
        workload_level=vm_level(features),
        not_given=not_given,
        live_now=live_now,
        cold_now=cold_now,
        workload_hosts=workload_hosts,
        shortfalls=shortfalls,
        advised=advised,
        live_after=live_after,
        cold_after=cold_after,
        standing=standing,
        notes=tuple(dict.fromkeys(notes)),
    )


def _requirements(
    vm: VmSpec, domain: Domain, move: Move, knowledge: Knowledge, current: HostFacts | None
) -> Requirements:
    return build_requirements(vm.name, domain, vm.policy, move, knowledge, source_host=current)


def hosts_after(
    vm: VmSpec,
    hosts: Mapping[str, HostFacts],
    knowledge: Knowledge,
    cache: dict[object, tuple[str, ...]] | None = None,
    *,
    current: HostFacts | None = None,
) -> tuple[str, ...] | None:
    """The hosts the VM could cold-start on, and move among live, once it has booted with the advised
    <cpu>: every host offering its workload's needs (what :func:`advise` finds as ``cold_after`` and
    ``live_after``, by set arithmetic alone, for fleet-wide figures). None for a guest cpuguard gives
    no advice (not x86). ``cache`` shares the answer between VMs with the same workload; ``current``
    is the VM's host when ``hosts`` may lack it."""
    current = current or (hosts.get(vm.host) if vm.host else None)
    cold = build_requirements(vm.name, vm.domain, vm.policy, Move.COLD, knowledge, source_host=current)
    if cold.arch not in X86_ARCHES:
        return None
    workload = frozenset(n.feature for n in cold.needs if n.origin.kind in WORKLOAD_KINDS)
    key = (cold.arch, workload)
    if cache is not None and key in cache:
        return cache[key]
    found = tuple(
        name
        for name in sorted(hosts)
        if workload <= hosts[name].flags and (not hosts[name].arch or arch_runs_on(cold.arch, hosts[name].arch))
    )
    if cache is not None:
        cache[key] = found
    return found


def describe_current(advice: Advice) -> str:
    """``host-passthrough``, ``custom Westmere-IBRS``, ``no domain definition``: for renderers."""
    if advice.mode is None:
        return "no domain definition"
    if advice.mode == "default":
        return f"no <cpu> (QEMU's default {advice.model})" if advice.model else "no <cpu>"
    if advice.model and advice.mode == "custom":
        return f"custom {advice.model}"
    return advice.mode
