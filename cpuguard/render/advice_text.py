"""Human text for ``cpuguard advise``: per VM what holds it, what its workload needs, the <cpu> that frees it."""

from __future__ import annotations

from collections.abc import Sequence
from xml.sax.saxutils import escape

from cpuguard.advice.advise import describe_current
from cpuguard.advice.records import Advice, AdvisedCpu, Standing
from cpuguard.planning.records import Problem
from cpuguard.render.features import WIDTH, feature_text, fit, wrap
from cpuguard.render.verdict_text import by_origin

TAKES_EFFECT = (
    "takes effect at the next cold boot: a running guest keeps the CPU it booted with, "
    "and the live rule applies until then"
)

_HEADS = {
    Standing.NOT_GIVEN: "ITS CPU DEFINITION DOES NOT GIVE ITS WORKLOAD WHAT IT NEEDS",
    Standing.WORKLOAD: "stranded by the workload",
    Standing.CONFIGURATION: "pinned by configuration",
    Standing.FREE: "free",
}


def advised_cpu_xml(advised: AdvisedCpu) -> str:
    """The ``<cpu>`` element to paste into the domain definition."""
    lines = [
        "<cpu mode='custom' match='exact' check='partial'>",
        f"  <model fallback='forbid'>{_x(advised.model)}</model>",
    ]
    lines.extend(f"  <feature policy='require' name='{_x(name)}'/>" for name in advised.required_libvirt)
    lines.extend(f"  <feature policy='disable' name='{_x(name)}'/>" for name in advised.disabled_libvirt)
    lines.append("</cpu>")
    return "\n".join(lines) + "\n"


def _x(text: str) -> str:
    return escape(text, {"'": "&apos;"})


def _hosts(names: Sequence[str]) -> str:
    return ", ".join(names) or "none"


def _why(advice: Advice) -> str:
    if advice.standing is Standing.NOT_GIVEN:
        features = ", ".join(m.feature for m in advice.not_given)
        return f"{features} -- its software runs a fallback or is already broken"
    if advice.standing is Standing.WORKLOAD:
        return "no other host offers what its software needs"
    if advice.standing is Standing.CONFIGURATION:
        return f"the advised <cpu> opens {_hosts(advice.opened)}"
    return "it already reaches every host its workload runs on"


def _head(advice: Advice) -> list[str]:
    """``VM on HOST: STANDING: why``; longer than a screen, the why goes on the next lines, four
    columns in (deeper than the details), so that the VM and its standing stay on one line for grep."""
    where = f" on {advice.host}" if advice.host else ""
    head = f"{advice.vm}{where}: {_HEADS[advice.standing]}:"
    if len(head) + 1 + len(_why(advice)) <= WIDTH:
        return [f"{head} {_why(advice)}"]
    return [*wrap(head, "", more="    "), *wrap(_why(advice), "    ")]


def _needs(advice: Advice, lines: list[str], verbose: bool) -> None:
    if not advice.needs:
        lines.append("  workload needs: nothing recorded (no policy, scan or level)")
        return
    level = f" ({advice.workload_level})" if advice.workload_level else ""
    lines.append(f"  workload needs{level}:")
    for origin, features in by_origin(advice.needs):
        lines.append(f"    {feature_text(features, verbose=verbose)}")
        lines.append(f"        <- {origin.detail}")


def render_advice(advice: Advice, verbose: bool = False) -> str:
    """One VM's advice; feature lists grouped by x86-64 level unless ``verbose``."""
    head = _head(advice)
    lines = [f"  current CPU: {describe_current(advice)}"]
    lines.append(f"  reachable now: live {_hosts(advice.live_now)}; cold {_hosts(advice.cold_now)}")
    _needs(advice, lines, verbose)
    if advice.not_given:
        lines.append(f"  NOT GIVEN by its CPU definition ({describe_current(advice)}):")
        for origin, features in by_origin(advice.not_given):
            lines.append(f"    {feature_text(features, verbose=verbose)}")
            lines.append(f"        <- {origin.detail}")
    if advice.shortfalls:
        lines.append("  hosts its workload cannot run on:")
        for shortfall in advice.shortfalls:
            lacks = [", ".join(shortfall.problems)] if shortfall.problems else []
            lacks += [f"lacks {feature_text(f, verbose=verbose)} ({o.detail})" for o, f in by_origin(shortfall.missing)]
            lines.append(f"    {shortfall.host}: {'; '.join(lacks)}")
    advised = advice.advised
    if advised is None:
        lines.append("  advised CPU: none (no host of the inventory runs its workload)")
    else:
        extras = [f"+ {', '.join(advised.required)}"] if advised.required else []
        extras += [f"- {', '.join(advised.disabled)}"] if advised.disabled else []
        model = " ".join([advised.model, *extras])
        lines.append(f"  advised CPU: {model} ({advised.level or 'below x86-64-v1'}):")
        lines.extend(f"    {line}" for line in advised_cpu_xml(advised).splitlines())
        lines.append(f"  after the change: live {_hosts(advice.live_after)}; cold {_hosts(advice.cold_after)}")
        lines.append(f"  {TAKES_EFFECT}")
    lines.extend(f"  note: {note}" for note in advice.notes)
    return "\n".join([*head, *fit(lines)]) + "\n"


def summary(advices: Sequence[Advice]) -> str:
    counts = {standing: sum(1 for a in advices if a.standing is standing) for standing in Standing}
    parts = [f"{counts[s]} {s.value}" for s in Standing if counts[s]]
    return f"Advice for {len(advices)} VM{'s' if len(advices) != 1 else ''}: {', '.join(parts) or 'nothing'}"


def render_advice_text(advices: Sequence[Advice], problems: Sequence[Problem] = (), *, verbose: bool = False) -> str:
    blocks = [summary(advices) + "\n"] + [render_advice(a, verbose) for a in advices]
    if problems:  # incomplete first
        lines = [f"INCOMPLETE: {len(problems)} item{'s' if len(problems) != 1 else ''} could not be read:"]
        lines.extend(f"  {p.describe()}" for p in problems)
        blocks.insert(0, "\n".join(lines) + "\n")
    return "\n".join(blocks)
