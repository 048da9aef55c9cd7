"""Evacuation plans: for every VM on a host, which other hosts can take it. Pure.

Built on the same decision as ``cpuguard check``: requirements from
``requirements.build_requirements`` and one ``verdict.decide`` per VM, target
and rule, so a plan never disagrees with the hook.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

from cpuguard.advice.advise import advise
from cpuguard.errors import EXIT_BAD_INPUT, EXIT_BLOCKED, EXIT_OK
from cpuguard.knowledge import Knowledge
from cpuguard.levels import highest_level
from cpuguard.planning.records import Candidate, EvacuationPlan, Problem, VmPlan, VmSpec, is_safe
from cpuguard.records import HostFacts, Missing, Move
from cpuguard.requirements import build_requirements
from cpuguard.verdict import decide, vm_level, with_rehearsals

#: Exit code of a planning command whose plan is incomplete: some input could
#: not be read (see the "problems" of the report); the report still covers
#: everything else. It takes precedence over EXIT_BLOCKED (a VM is stranded),
#: because "every VM has a target" cannot be claimed from partial input.
EXIT_INCOMPLETE = EXIT_BAD_INPUT


def plan_vm(
    vm: VmSpec,
    source_name: str,
    source: HostFacts | None,
    targets: Mapping[str, HostFacts],
    knowledge: Knowledge,
    move: Move = Move.LIVE,
) -> VmPlan:
    live = build_requirements(vm.name, vm.domain, vm.policy, Move.LIVE, knowledge, source_host=source)
    cold = build_requirements(vm.name, vm.domain, vm.policy, Move.COLD, knowledge, source_host=source)
    candidates = []
    for name, host in sorted(targets.items()):
        kept = [r for r in vm.rehearsals if r.host == name]
        candidates.append(
            Candidate(name, with_rehearsals(decide(live, host), kept), with_rehearsals(decide(cold, host), kept))
        )
    safe = tuple(c.host for c in candidates if is_safe(c.verdict(move)))
    cold_only: tuple[str, ...] = ()
    if move is Move.LIVE:
        cold_only = tuple(c.host for c in candidates if is_safe(c.cold) and not is_safe(c.live))
    candidates.sort(key=lambda c: (not is_safe(c.verdict(move)), not is_safe(c.cold), c.host))
    chosen = live if move is Move.LIVE else cold
    plan = VmPlan(
        vm=vm.name,
        source=source_name,
        move=move,
        candidates=tuple(candidates),
        safe=safe,
        cold_only=cold_only,
        notes=chosen.notes,
        policy_mode=chosen.mode,
        level=vm_level(chosen.features),
    )
    return _cause(plan, vm, source_name, source, targets, knowledge) if plan.stranded else plan


def _cause(
    plan: VmPlan,
    vm: VmSpec,
    source_name: str,
    source: HostFacts | None,
    targets: Mapping[str, HostFacts],
    knowledge: Knowledge,
) -> VmPlan:
    """Why a stranded VM is stranded: its CPU configuration (the advised <cpu> would open a target)
    or its workload (no target offers what its software needs)."""
    hosts = {**targets, **({source_name: source} if source is not None else {})}
    advice = advise(vm, hosts, knowledge)
    reach = advice.live_after if plan.move is Move.LIVE else advice.cold_after
    opens = tuple(h for h in reach if h in targets and h != source_name)
    if opens and advice.advised is not None:
        return replace(plan, stranded_by="configuration", advised=advice.advised, advised_targets=opens)
    if any(h in targets and h != source_name for h in advice.workload_hosts):
        return plan  # the workload fits a target, yet no definition does (a guest cpuguard cannot advise)
    shortfalls = [s for s in advice.shortfalls if s.host in targets]
    common = (
        frozenset.intersection(*(frozenset(m.feature for m in s.missing) for s in shortfalls))
        if shortfalls
        else frozenset()
    )
    missing: dict[str, Missing] = {}
    for shortfall in shortfalls:
        for item in shortfall.missing:
            if item.feature in common or not common:
                missing.setdefault(item.feature, item)
    return replace(plan, stranded_by="workload", workload_missing=tuple(missing[f] for f in sorted(missing)))


def evacuate(
    host: str,
    vms: Sequence[VmSpec],
    hosts: Mapping[str, HostFacts],
    knowledge: Knowledge,
    *,
    targets: Sequence[str] | None = None,
    move: Move = Move.LIVE,
    problems: Sequence[Problem] = (),
) -> EvacuationPlan:
    """Plan moving every VM of ``vms`` that runs on ``host`` to ``targets``
    (default: every other host in ``hosts``). VMs with no safe target come first.

    ``problems`` are what could not be loaded; those that could change this
    plan (see :meth:`Problem.concerns`) are kept in it and make it incomplete.
    """
    names = [t for t in targets if t != host] if targets is not None else [h for h in sorted(hosts) if h != host]
    target_facts = {name: hosts[name] for name in names if name in hosts}
    source = hosts.get(host)
    # An unreadable host matters when it is the source or might have been a target.
    relevant = [
        p
        for p in problems
        if (p.kind == "host" and (targets is None or p.name == host or p.name in targets))
        or (p.kind != "host" and p.concerns(host))
    ]
    # a VM no target read can take might go to one that could not be read: undecided, not stranded
    unread = tuple(sorted({p.name for p in relevant if p.kind == "host" and p.name != host}))
    plans = [plan_vm(vm, host, source, target_facts, knowledge, move) for vm in vms if vm.host == host]
    plans = [replace(p, unread=unread) if not p.safe and unread else p for p in plans]
    plans.sort(key=lambda p: (bool(p.safe), not p.stranded, p.vm))
    return EvacuationPlan(
        host=host,
        move=move,
        targets=tuple(names),
        vms=tuple(plans),
        problems=tuple(sorted(set(relevant))),
        source_level=highest_level(source.flags) if source else None,
    )


def exit_code(stranded: bool, complete: bool) -> int:
    """0: every VM has a safe target; 1: some VM has none; 2: the plan is incomplete."""
    if not complete:
        return EXIT_INCOMPLETE
    return EXIT_BLOCKED if stranded else EXIT_OK
