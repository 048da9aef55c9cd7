"""The decision: may a VM land on a host? Pure; explains every "no".

``decide(requirements, host)`` returns a :class:`Verdict` with the missing
features (sorted), each with every origin of the need, the x86-64 level of
both sides, architecture/vendor problems and hints. No I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace

from cpuguard.levels import LEVEL_NAMES, highest_level, level_features, lowest_level_covering
from cpuguard.records import HostFacts, Missing, Origin, Outcome, Rehearsed, Requirements, Verdict


def _group(needs: Iterable[tuple[str, Origin]]) -> tuple[Missing, ...]:
    by_feature: dict[str, set[Origin]] = {}
    for feature, origin in needs:
        by_feature.setdefault(feature, set()).add(origin)
    return tuple(Missing(f, tuple(sorted(by_feature[f]))) for f in sorted(by_feature))


def vm_level(features: frozenset[str]) -> str | None:
    """The x86-64 level the VM's needs amount to (the lowest one covering its level features)."""
    relevant = features & level_features(LEVEL_NAMES[-1])
    return lowest_level_covering(relevant) if relevant else None


def arch_runs_on(guest: str, host: str) -> bool:
    """A 32-bit x86 guest runs on a 64-bit x86 host; otherwise the architectures must match."""
    return guest == host or (guest in ("i686", "i386") and host == "x86_64")


def _problems(req: Requirements, host: HostFacts) -> list[str]:
    problems = []
    if host.arch and req.arch and not arch_runs_on(req.arch, host.arch):
        problems.append(f"architecture mismatch: the guest is {req.arch}, the host {host.arch}")
    if req.vendor and host.vendor and req.vendor.lower() != host.vendor.lower():
        problems.append(f"vendor mismatch: the guest needs a CPU by {req.vendor}, the host's is by {host.vendor}")
    elif req.vendor and not host.vendor and req.vendor_origin == "guest-cpu":
        # libvirt calls a vendor-pinned guest incompatible with a host of unknown vendor
        # (tests/cputest.c: host-no-vendor against host); what could not be checked is not allowed
        problems.append(
            f"vendor unknown: the guest CPU definition names {req.vendor}, the host's CPU vendor is not known"
        )
    return problems


def _unchecked(req: Requirements, host: HostFacts) -> list[str]:
    """What could not be checked on this host: an allow becomes a warn."""
    found = list(req.unchecked)
    if req.vendor and not host.vendor and req.vendor_origin != "guest-cpu":
        found.append(
            f"vendor not checked: the running guest sees a CPU by {req.vendor}, the host's CPU vendor is not known"
        )
    return found


def _missing(req: Requirements, host: HostFacts) -> tuple[tuple[Missing, ...], tuple[Missing, ...]]:
    missing = _group((n.feature, n.origin) for n in req.needs if n.feature not in host.flags)
    forbidden = _group((n.feature, n.origin) for n in req.forbidden if n.feature in host.flags)
    return missing, forbidden


def accepts(req: Requirements, host: HostFacts) -> bool:
    missing, forbidden = _missing(req, host)
    return not missing and not forbidden and not _problems(req, host)


def decide(
    req: Requirements,
    host: HostFacts,
    *,
    alternatives: Mapping[str, HostFacts] | None = None,
) -> Verdict:
    missing, forbidden = _missing(req, host)
    problems = _problems(req, host)
    unchecked = _unchecked(req, host)
    warnings: list[str] = []
    notes = list(req.notes)
    if not missing and not forbidden and not problems and unchecked:
        outcome = Outcome.WARN  # nothing found missing, but not everything could be checked
        warnings.extend(unchecked)
    elif not missing and not forbidden and not problems:
        outcome = Outcome.ALLOW
    elif problems:
        outcome = Outcome.BLOCK  # a move across architectures or vendors never works
    elif req.mode == "warn":
        outcome = Outcome.WARN
        warnings.append("policy mode is warn: the move is allowed, but the guest may fail")
    elif req.mode == "off":
        outcome = Outcome.ALLOW
        notes.append("policy mode is off: missing features reported but not enforced")
    else:
        outcome = Outcome.BLOCK
    if outcome is not Outcome.WARN or not set(unchecked) <= set(warnings):
        notes.extend(unchecked)
    hints: list[str] = []
    if outcome is not Outcome.ALLOW and alternatives:
        hints = sorted(
            name
            for name, other in alternatives.items()
            if other is not host and name != req.current_host and accepts(req, other)
        )
    return Verdict(
        vm=req.vm,
        host=host.name or host.source,
        move=req.move,
        outcome=outcome,
        missing=missing,
        forbidden_present=forbidden,
        problems=tuple(problems),
        warnings=tuple(warnings),
        notes=tuple(notes),
        vm_level=vm_level(req.features),
        host_level=highest_level(host.flags),
        hints=tuple(hints),
        host_source=host.source,
        policy_mode=req.mode,
        subject=req.subject,
        policy=req.policy,
        current_host=req.current_host,
    )


def with_rehearsals(verdict: Verdict, rehearsed: Sequence[Rehearsed]) -> Verdict:
    """``verdict`` with the kept rehearsals of its VM on its host (newest first). A rehearsal never
    blocks by itself, but one that failed on the CPU turns an allow into a warning: the emulated
    host could not run the workload's own code, whatever the static needs say."""
    if not rehearsed:
        return verdict
    warnings = list(verdict.warnings)
    outcome = verdict.outcome
    for kept in rehearsed:
        if kept.outcome == "failed-cpu" and verdict.outcome is not Outcome.BLOCK:
            when = kept.time.strftime("%Y-%m-%d %H:%M %Z").strip()
            warnings.append(f"the workload's own code failed on {kept.host}'s CPU when rehearsed ({when})")
            if outcome is Outcome.ALLOW:
                outcome = Outcome.WARN
    return replace(verdict, outcome=outcome, warnings=tuple(warnings), rehearsals=tuple(rehearsed))
