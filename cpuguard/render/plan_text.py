"""Human text for planning reports: evacuation plans, the matrix, baselines.

The first lines answer the question (which VMs are stranded); details follow.
"""

from __future__ import annotations

from xml.sax.saxutils import escape

from cpuguard.planning.matrix import Matrix
from cpuguard.planning.records import Baseline, EvacuationPlan, Problem, VmPlan, is_safe
from cpuguard.records import Move, Verdict
from cpuguard.render.advice_text import advised_cpu_xml
from cpuguard.render.features import feature_text, fit
from cpuguard.render.rehearsals import failed_rehearsals, rehearsal_text
from cpuguard.render.verdict_text import by_binary, by_origin

#: Above this many hosts the matrix is summarised per VM instead of drawn as a grid.
GRID_MAX_HOSTS = 12


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'s' if count != 1 else ''}"


def incomplete_head(problems: tuple[Problem, ...], what: str = "plan") -> str:
    """The first line of an incomplete report, in every format."""
    return f"INCOMPLETE: {_plural(len(problems), 'item')} could not be read; the {what} covers the rest"


def _problems_first(problems: tuple[Problem, ...], what: str = "plan") -> list[str]:
    """Incomplete comes first: the first line of the report says so, the problems follow it,
    one line each (not wrapped: a file name and its fault stay together)."""
    if not problems:
        return []
    return [incomplete_head(problems, what) + ":", *(f"  {problem.describe()}" for problem in problems), ""]


def targets_text(plan: EvacuationPlan) -> str:
    """The targets, and those dropped because they could not be read."""
    text = ", ".join(plan.targets) or "no other host"
    dropped = [p.name for p in plan.dropped]
    if dropped:
        text += f" ({', '.join(dropped)} could not be read: left out)"
    return text


def _rejection(verdict: Verdict, indent: str) -> list[str]:
    lines = [f"{indent}{problem}" for problem in verdict.problems]
    lines += [f"{indent}{line.detail} (rehearsed {line.when})" for line in failed_rehearsals(verdict)]
    for origin, features in by_binary(verdict.missing):
        lines.append(f"{indent}missing {feature_text(features)}")
        lines.append(f"{indent}    <- {origin.detail}")
    for origin, features in by_origin(verdict.forbidden_present):
        lines.append(f"{indent}has forbidden {feature_text(features)}")
        lines.append(f"{indent}    <- {origin.detail}")
    return lines


def cause_lines(vm: VmPlan) -> list[str]:
    """Stranded by configuration (with the <cpu> that frees it) or by the workload (with what it lacks)."""
    if vm.stranded_by == "configuration" and vm.advised is not None:
        lines = [
            f"  stranded by configuration: with the advised <cpu> it could go to {', '.join(vm.advised_targets)} "
            "(from its next cold boot on):"
        ]
        lines.extend(f"      {line}" for line in advised_cpu_xml(vm.advised).splitlines())
        return lines
    if vm.stranded_by == "workload":
        lines = [f"  stranded by the workload: no target{' read' if vm.unread else ''} offers what its software needs"]
        for origin, features in by_binary(vm.workload_missing):
            lines.append(f"      needs {feature_text(features)}")
            lines.append(f"          <- {origin.detail}")
        return lines
    return []


def _vm_section(vm: VmPlan) -> list[str]:
    move = vm.move.value
    if vm.undecided:
        head = (
            f"UNDECIDED {vm.vm}: no host read can take it ({move}); {', '.join(vm.unread)} could not be read and might"
        )
    elif vm.stranded:
        head = f"STRANDED  {vm.vm}: no host can take it ({move})"
    else:
        head = f"OK        {vm.vm}: {', '.join(vm.safe)} ({move})"
    lines = [head]
    if not vm.safe and vm.cold_only:
        lines.append(f"  after a shutdown (cold move) it could start on: {', '.join(vm.cold_only)}")
    elif not vm.safe and vm.move is Move.LIVE:
        lines.append(f"  after a shutdown (cold move) no target{' read' if vm.unread else ''} could start it either")
    elif vm.cold_only:
        lines.append(f"  cold move only: {', '.join(vm.cold_only)}")
    lines.extend(cause_lines(vm))
    if vm.policy_mode != "enforce":
        lines.append(f"  policy mode {vm.policy_mode}: the hook would not stop a move to a host that lacks features")
    for candidate in vm.candidates:
        verdict = candidate.verdict(vm.move)
        if is_safe(verdict):
            continue
        count = len(verdict.missing)
        summary = f"lacks {_plural(count, 'feature')}" if count else "rejected"
        if not count and failed_rehearsals(verdict):
            summary = "the workload failed a rehearsal on its CPU"
        lines.append(f"  {candidate.host}: {summary}")
        lines.extend(_rejection(verdict, "      "))
    for candidate in vm.candidates:
        lines.extend(rehearsal_text(candidate.verdict(vm.move).rehearsals))
    for note in vm.notes:
        lines.append(f"  note: {note}")
    return lines


def render_evacuation_text(plan: EvacuationPlan) -> str:
    stranded, undecided = plan.stranded, plan.undecided
    head = (
        f"Evacuating {plan.host} ({plan.move.value} moves) to {targets_text(plan)}: "
        f"{_plural(len(plan.vms), 'VM')}, {len(stranded)} stranded"
    )
    lines = [head + (f", {len(undecided)} undecided" if undecided else "")]
    if undecided:
        lines.append(
            f"  undecided (no target read takes them; {', '.join(undecided[0].unread)} might): "
            f"{', '.join(v.vm for v in undecided)}"
        )
    if stranded:
        lines.append(f"  no safe target: {', '.join(v.vm for v in stranded)}")
    configuration, workload = plan.stranded_by("configuration"), plan.stranded_by("workload")
    if configuration:
        lines.append(f"  stranded by configuration (a new <cpu> frees it): {', '.join(v.vm for v in configuration)}")
    if workload:
        lines.append(f"  stranded by the workload: {', '.join(v.vm for v in workload)}")
    if plan.evacuable_after_reconfiguration:
        lines.append(f"  {plan.host} can be emptied once these VMs have booted with the advised <cpu>")
    for vm in plan.vms:
        lines.append("")
        lines.extend(_vm_section(vm))
    return "\n".join([*_problems_first(plan.problems), *fit(lines)]) + "\n"


def _mark(matrix: Matrix, row: int, column: int) -> str:
    vm = matrix.vms[row]
    host = matrix.hosts[column]
    if host == vm.host:
        return "(here)"
    if matrix.cell(vm, column, Move.LIVE).ok:
        return "ok"
    if matrix.cell(vm, column, Move.COLD).ok:
        return "cold"
    return "no"


def render_matrix_text(matrix: Matrix) -> str:
    stranded = matrix.stranded
    lines = [
        *_problems_first(matrix.problems),
        f"VM x host matrix: {_plural(len(matrix.vms), 'VM')}, {_plural(len(matrix.hosts), 'host')}, "
        f"{len(stranded)} with no host to move to live",
    ]
    for cause, label in (("configuration", "stranded by configuration (cpuguard advise gives the <cpu> that frees it)"),
                         ("workload", "stranded by the workload")):  # fmt: skip
        names = [v.name for v in stranded if matrix.stranded_by.get(v.name) == cause]
        if names:
            lines.extend(fit([f"  {label}: {', '.join(names)}"]))
    if len(matrix.hosts) <= GRID_MAX_HOSTS:
        width = max([len(v.name) for v in matrix.vms] + [2])
        columns = [max(len(h), 6) for h in matrix.hosts]
        lines.append("")
        lines.append(" " * width + "  " + "  ".join(h.ljust(w) for h, w in zip(matrix.hosts, columns, strict=True)))
        for row, vm in enumerate(matrix.vms):
            marks = [_mark(matrix, row, c).ljust(w) for c, w in enumerate(columns)]
            lines.append(f"{vm.name.ljust(width)}  {'  '.join(marks)}".rstrip())
        lines.append("")
        lines.append("ok: live move possible; cold: only after a shutdown; no: neither;")
        lines.append("(here): where it runs now")
        details = []
        for vm in matrix.vms:
            for column, host in enumerate(matrix.hosts):
                cell = matrix.cell(vm, column, Move.LIVE)
                if host == vm.host or cell.ok:
                    continue
                reasons = list(cell.problems)
                if cell.missing:
                    reasons.append(f"missing {feature_text(cell.missing)}")
                if cell.forbidden:
                    reasons.append(f"has forbidden {', '.join(cell.forbidden)}")
                details.append(f"  {vm.name} -> {host}: {'; '.join(reasons)}")
        if details:
            lines.append("")
            lines.append("Why not (live):")
            lines.extend(fit(details))
    else:
        lines.append("")
        for vm in matrix.vms:
            flag = "  STRANDED" if vm.live_targets == 0 else ""
            lines.append(f"{vm.name} on {vm.host or '?'}: {vm.live_targets} live, {vm.cold_targets} cold targets{flag}")
    return "\n".join(lines) + "\n"


def _x(text: str) -> str:
    return escape(text, {"'": "&apos;"})


def baseline_xml(baseline: Baseline) -> str:
    """The ``<cpu>`` element to paste into a domain definition."""
    lines = ["<cpu mode='custom' match='exact' check='partial'>"]
    if baseline.model:
        lines.append(f"  <model fallback='forbid'>{_x(baseline.model)}</model>")
    if baseline.vendor:
        lines.append(f"  <vendor>{_x(baseline.vendor)}</vendor>")
    lines.extend(f"  <feature policy='require' name='{_x(name)}'/>" for name in baseline.extra_libvirt)
    lines.extend(f"  <feature policy='disable' name='{_x(name)}'/>" for name in baseline.disabled_libvirt)
    lines.append("</cpu>")
    return "\n".join(lines) + "\n"


def render_baseline_text(baseline: Baseline) -> str:
    lines = [
        f"Baseline of {_plural(len(baseline.hosts), 'host')}: {', '.join(baseline.hosts)}",
    ]
    lines.append(f"  level: {baseline.level or 'below x86-64-v1'}")
    model = baseline.model or "none"
    extras = []
    if baseline.extra:
        extras.append(f"+ {', '.join(map(baseline.spelled, baseline.extra))}")
    if baseline.disabled:
        extras.append(f"- {', '.join(map(baseline.spelled, baseline.disabled))}")
    lines.append(f"  libvirt model: {model}{' ' + ' '.join(extras) if extras else ''}")
    lines.append(f"  vendor: {baseline.vendor or ' / '.join(baseline.vendors) or 'unknown'}")
    lines.append(f"  {len(baseline.guest_features)} features a guest can be given and keep across live moves")
    if baseline.held_back:
        lines.append("  held back by (hosts lacking features the others have):")
        for hosts, features in baseline.held_back:
            lines.append(f"    {', '.join(hosts)}: {feature_text(features)}")
    for note in baseline.notes:
        lines.append(f"  note: {note}")
    lines.append("")
    if baseline.problems:
        unread = ", ".join(p.name for p in baseline.problems)
        lines.append(f"Guest CPU definition (domain XML) for the hosts read, not for {unread}:")
    else:
        lines.append("Guest CPU definition (domain XML):")
    problems = _problems_first(baseline.problems, "baseline")
    return "\n".join([*problems, *fit(lines), baseline_xml(baseline).rstrip("\n")]) + "\n"
