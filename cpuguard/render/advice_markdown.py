"""Markdown for ``cpuguard advise``: one table for the fleet, then the fix per VM that has one."""

from __future__ import annotations

from collections.abc import Sequence

from cpuguard.advice.advise import describe_current
from cpuguard.advice.records import Advice, Standing
from cpuguard.planning.records import Problem
from cpuguard.render.advice_text import TAKES_EFFECT, advised_cpu_xml, summary
from cpuguard.render.markdown import _cell
from cpuguard.render.verdict_text import by_origin


def _hosts(names: Sequence[str]) -> str:
    return _cell(", ".join(names)) or "**none**"


def _section(advice: Advice) -> list[str]:
    lines = ["", f"### `{_cell(advice.vm)}`: {advice.standing.value}", ""]
    if advice.not_given:
        given = "; ".join(f"{', '.join(f)} ({o.detail})" for o, f in by_origin(advice.not_given))
        lines += [f"**Its CPU definition does not give its workload:** {_cell(given)}", ""]
    level = f" ({advice.workload_level})" if advice.workload_level else ""
    needs = "; ".join(f"{', '.join(f)} ({o.detail})" for o, f in by_origin(advice.needs))
    lines += [f"Workload needs{level}: {_cell(needs) or 'nothing recorded'}", ""]
    for shortfall in advice.shortfalls:
        lacks = ", ".join(m.feature for m in shortfall.missing)
        lines.append(f"- {_cell(shortfall.host)} cannot run it: {_cell('; '.join([*shortfall.problems, lacks]))}")
    if advice.advised is not None:
        lines += ["", f"Advised CPU ({advice.advised.level or 'below x86-64-v1'}):", "", "```xml"]
        lines += [*advised_cpu_xml(advice.advised).splitlines(), "```", "", f"It {TAKES_EFFECT}."]
    return lines


def render_advice_markdown(advices: Sequence[Advice], problems: Sequence[Problem] = ()) -> str:
    lines = [f"## {summary(advices)}", ""]
    lines += [
        "| VM | Host | Current CPU | Standing | Live now | Cold now | Live after | Cold after |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for a in advices:
        standing = f"**{a.standing.value}**" if a.standing is not Standing.FREE else a.standing.value
        lines.append(
            f"| `{_cell(a.vm)}` | {_cell(a.host or '-')} | {_cell(describe_current(a))} | {standing} "
            f"| {_hosts(a.live_now)} | {_hosts(a.cold_now)} | {_hosts(a.live_after)} | {_hosts(a.cold_after)} |"
        )
    for advice in advices:
        if advice.standing is not Standing.FREE:
            lines += _section(advice)
    if problems:
        lines += ["", "### Incomplete: items that could not be read", ""]
        lines += [f"- {_cell(p.describe())}" for p in problems]
    return "\n".join(lines) + "\n"
