"""HTML for ``cpuguard advise``: one self-contained page, as the planning reports are."""

from __future__ import annotations

from collections.abc import Sequence

from cpuguard.advice.advise import describe_current
from cpuguard.advice.records import Advice, Standing
from cpuguard.planning.records import Problem
from cpuguard.render.advice_text import TAKES_EFFECT, advised_cpu_xml, summary
from cpuguard.render.html import _e, _page
from cpuguard.render.verdict_text import by_origin

_KIND = {
    Standing.NOT_GIVEN: "bad",
    Standing.WORKLOAD: "bad",
    Standing.CONFIGURATION: "incomplete",
    Standing.FREE: "good",
}


def _hosts(names: Sequence[str]) -> str:
    return _e(", ".join(names) or "none")


def _section(advice: Advice) -> list[str]:
    lines = [
        f'<h2 id="vm-{_e(advice.vm)}" data-vm="{_e(advice.vm)}" data-standing="{_e(advice.standing.value)}">'
        f"{_e(advice.vm)} &mdash; {_e(advice.standing.value)}</h2>",
        f"<p>Runs on {_e(advice.host or 'an unknown host')}; current CPU: {_e(describe_current(advice))}.</p>",
    ]
    if advice.not_given:
        given = "; ".join(f"{', '.join(f)} ({o.detail})" for o, f in by_origin(advice.not_given))
        lines.append(f'<p class="summary bad">Its CPU definition does not give its workload: {_e(given)}</p>')
    lines.append("<table><tr><th></th><th>Live</th><th>Cold</th></tr>")
    lines.append(f"<tr><td>now</td><td>{_hosts(advice.live_now)}</td><td>{_hosts(advice.cold_now)}</td></tr>")
    lines.append(
        f"<tr><td>after the change</td><td>{_hosts(advice.live_after)}</td><td>{_hosts(advice.cold_after)}</td></tr>"
    )
    lines.append("</table>")
    level = f" ({advice.workload_level})" if advice.workload_level else ""
    lines.append(f"<p>Workload needs{_e(level)}:</p><ul>")
    lines += [f'<li>{_e(", ".join(f))} <span class="origin">&larr; {_e(o.detail)}</span></li>' for o, f in
              by_origin(advice.needs)]  # fmt: skip
    lines.append("</ul>")
    if advice.advised is not None:
        lines.append(f'<pre class="cpu" data-vm="{_e(advice.vm)}">{_e(advised_cpu_xml(advice.advised))}</pre>')
        lines.append(f"<p>It {_e(TAKES_EFFECT)}.</p>")
    return lines


def render_advice_html(advices: Sequence[Advice], problems: Sequence[Problem] = ()) -> str:
    worst = min((_KIND[a.standing] for a in advices), key=["bad", "incomplete", "good"].index, default="good")
    body = ["<h1>Guest CPU advice</h1>", f'<p class="summary {worst}" id="summary">{_e(summary(advices))}</p>']
    for advice in advices:
        body += _section(advice)
    if problems:
        body.append("<h2>Incomplete: items that could not be read</h2><ul>")
        body += [f"<li>{_e(p.describe())}</li>" for p in problems]
        body.append("</ul>")
    return _page("cpuguard: guest CPU advice", body, None)
