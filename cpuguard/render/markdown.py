"""Markdown for tickets, merge requests and CI job summaries (GitHub's
``$GITHUB_STEP_SUMMARY``, GitLab notes): GitHub-flavoured tables."""

from __future__ import annotations

from cpuguard.planning.matrix import Matrix
from cpuguard.planning.records import Baseline, EvacuationPlan, Problem, ReportMeta, is_safe
from cpuguard.records import Move
from cpuguard.render.advice_text import advised_cpu_xml
from cpuguard.render.plan_text import GRID_MAX_HOSTS, baseline_xml, incomplete_head, targets_text
from cpuguard.render.rehearsals import failed_rehearsals, rehearsal_lines
from cpuguard.render.verdict_text import by_origin


def _cell(text: str) -> str:
    """Table cell text: pipes escaped, no line breaks, no HTML (a guest's names and commands may
    hold ``<``: a Markdown viewer would take it for a tag)."""
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _problems(problems: tuple[Problem, ...], what: str = "plan") -> list[str]:
    """Incomplete first: the report's first line says so, the items follow."""
    if not problems:
        return []
    return [f"**{incomplete_head(problems, what)}:**", ""] + [f"- {_cell(p.describe())}" for p in problems] + [""]


def _meta(meta: ReportMeta | None) -> list[str]:
    if meta is None:
        return []
    return ["", "---", "", "; ".join(f"{what}: {_cell(value)}" for what, value in meta.items())]


def render_evacuation_markdown(plan: EvacuationPlan, meta: ReportMeta | None = None) -> str:
    stranded, undecided = plan.stranded, plan.undecided
    lines = [*_problems(plan.problems), f"## Evacuating `{plan.host}` ({plan.move.value} moves)", ""]
    if plan.dropped:
        lines += [f"Targets: {_cell(targets_text(plan))}", ""]
    if undecided:
        names = ", ".join(f"`{v.vm}`" for v in undecided)
        unread = ", ".join(undecided[0].unread)
        lines.append(
            f"**{len(undecided)} of {len(plan.vms)} VMs are undecided:** {names} -- no target read takes them; "
            f"{_cell(unread)} could not be read and might"
        )
    if stranded:
        names = ", ".join(f"`{v.vm}`" for v in stranded)
        lines.append(f"**{len(stranded)} of {len(plan.vms)} VMs have no safe target:** {names}")
    elif not undecided:
        lines.append(f"Every one of {len(plan.vms)} VMs has a safe target.")
    lines += ["", "| VM | Safe targets | Cold move only | Why not |", "| --- | --- | --- | --- |"]
    for vm in plan.vms:
        reasons = []
        for candidate in vm.candidates:
            verdict = candidate.verdict(vm.move)
            if is_safe(verdict):
                continue
            why = list(verdict.problems)
            if verdict.missing:
                why.append("missing " + ", ".join(m.feature for m in verdict.missing))
            if verdict.forbidden_present:
                why.append("has forbidden " + ", ".join(m.feature for m in verdict.forbidden_present))
            why += [f"rehearsal failed on its CPU ({line.when}): {line.detail}" for line in failed_rehearsals(verdict)]
            reasons.append(f"{candidate.host}: {'; '.join(why)}")
        safe = ", ".join(vm.safe) or ("**none read** (undecided)" if vm.undecided else "**none**")
        lines.append(
            f"| `{_cell(vm.vm)}` | {_cell(safe)} | {_cell(', '.join(vm.cold_only) or '-')} "
            f"| {'<br>'.join(_cell(r) for r in reasons) or '-'} |"
        )
    lines += _causes(plan) + _rehearsals(plan) + _meta(meta)
    return "\n".join(lines) + "\n"


def _rehearsals(plan: EvacuationPlan) -> list[str]:
    """The kept rehearsals of each VM on each target: the evidence (``cpuguard rehearse``)."""
    rows = []
    for vm in plan.vms:
        for candidate in vm.candidates:
            for line in rehearsal_lines(candidate.verdict(vm.move).rehearsals):
                rows.append(
                    f"| `{_cell(vm.vm)}` | {_cell(candidate.host)} | {_cell(line.when)} | **{line.outcome}** "
                    f"| {_cell(line.command)} | {_cell(line.detail)} |"
                )
    if not rows:
        return []
    head = [
        "",
        "### Rehearsals",
        "",
        "| VM | Host | When | Outcome | Ran | Detail |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    return head + rows


def _causes(plan: EvacuationPlan) -> list[str]:
    """Stranded by configuration (with the <cpu> that frees each VM) and by the workload (what it lacks)."""
    lines: list[str] = []
    configuration = [(v, v.advised) for v in plan.stranded_by("configuration") if v.advised is not None]
    if configuration:
        lines += ["", "### Stranded by configuration: a new `<cpu>` frees them at their next cold boot"]
        for vm, advised in configuration:
            lines += ["", f"`{_cell(vm.vm)}` could then go to {_cell(', '.join(vm.advised_targets))}:", ""]
            lines += ["```xml", *advised_cpu_xml(advised).splitlines(), "```"]
    workload = plan.stranded_by("workload")
    if workload:
        lines += ["", "### Stranded by the workload: no target offers what its software needs", ""]
        for vm in workload:
            needs = "; ".join(f"{', '.join(f)} ({o.detail})" for o, f in by_origin(vm.workload_missing))
            lines.append(f"- `{_cell(vm.vm)}`: {_cell(needs) or 'see the table'}")
    return lines


def render_matrix_markdown(matrix: Matrix, meta: ReportMeta | None = None) -> str:
    lines = [*_problems(matrix.problems), f"## VM × host matrix: {len(matrix.vms)} VMs, {len(matrix.hosts)} hosts", ""]
    stranded = matrix.stranded
    if stranded:
        lines.append(f"**No host to move to live:** {', '.join(f'`{v.name}`' for v in stranded)}")
        for cause, label in (("configuration", "a new `<cpu>` frees it (`cpuguard advise`)"), ("workload", "")):
            names = [f"`{v.name}`" for v in stranded if matrix.stranded_by.get(v.name) == cause]
            if names:
                lines.append(f"- stranded by {'the ' if cause == 'workload' else ''}{cause}: {', '.join(names)}"
                             + (f" -- {label}" if label else ""))  # fmt: skip
        lines.append("")
    if len(matrix.hosts) <= GRID_MAX_HOSTS:
        lines.append("| VM | " + " | ".join(f"`{_cell(h)}`" for h in matrix.hosts) + " |")
        lines.append("| --- |" + " --- |" * len(matrix.hosts))
        for vm in matrix.vms:
            marks = []
            for column, host in enumerate(matrix.hosts):
                if host == vm.host:
                    marks.append("here")
                elif matrix.cell(vm, column, Move.LIVE).ok:
                    marks.append("ok")
                elif matrix.cell(vm, column, Move.COLD).ok:
                    marks.append("cold")
                else:
                    marks.append("**no**")
            lines.append(f"| `{_cell(vm.name)}` | " + " | ".join(marks) + " |")
        lines += ["", "ok: live move; cold: after a shutdown only; **no**: neither; here: runs there now"]
    else:
        lines += ["| VM | Host | Live targets | Cold targets |", "| --- | --- | --- | --- |"]
        for vm in matrix.vms:
            lines.append(f"| `{_cell(vm.name)}` | {_cell(vm.host or '?')} | {vm.live_targets} | {vm.cold_targets} |")
    lines += _meta(meta)
    return "\n".join(lines) + "\n"


def render_baseline_markdown(baseline: Baseline, meta: ReportMeta | None = None) -> str:
    extras = [f"+ {', '.join(map(baseline.spelled, baseline.extra))}"] if baseline.extra else []
    extras += [f"- {', '.join(map(baseline.spelled, baseline.disabled))}"] if baseline.disabled else []
    lines = [
        *_problems(baseline.problems, "baseline"),
        f"## Cluster baseline of {len(baseline.hosts)} hosts",
        "",
        "| | |",
        "| --- | --- |",
        f"| Hosts | {_cell(', '.join(baseline.hosts))} |",
        f"| x86-64 level | {baseline.level or 'below x86-64-v1'} |",
        f"| libvirt model | {_cell(' '.join([baseline.model or 'none', *extras]))} |",
        f"| Vendor | {_cell(baseline.vendor or ' / '.join(baseline.vendors) or 'unknown')} |",
        "",
        "```xml",
        baseline_xml(baseline).rstrip("\n"),
        "```",
    ]
    if baseline.held_back:
        lines += ["", "| Hosts lacking | Features the others have |", "| --- | --- |"]
        lines += [f"| {_cell(', '.join(h))} | {_cell(', '.join(f))} |" for h, f in baseline.held_back]
    lines += _meta(meta)
    return "\n".join(lines) + "\n"
