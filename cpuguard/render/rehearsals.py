"""Kept rehearsals as report lines: what ran, when, how it ended and where it faulted (pure).

Shared by the text, Markdown and HTML renderers of ``check`` and ``plan``;
each escapes the strings for its own format. Commands and fault places come
from guest files: every piece goes through ``one_line``.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass

from cpuguard.guest.errors import one_line
from cpuguard.records import Rehearsed, Verdict


@dataclass(frozen=True)
class RehearsalLine:
    outcome: str  # PASSED, FAILED-CPU...
    when: str  # 2026-12-06 10:00 UTC
    command: str
    detail: str  # the fault, or the reason


def rehearsal_lines(rehearsed: Sequence[Rehearsed]) -> list[RehearsalLine]:
    lines = []
    for kept in rehearsed:
        if kept.fault and kept.instruction:
            detail = f"{kept.fault}: `{kept.instruction}`"
            if kept.missing:
                detail += f" needs {', '.join(kept.missing)}"
        else:
            detail = kept.reason
        when = kept.time.strftime("%Y-%m-%d %H:%M %Z").strip()
        lines.append(RehearsalLine(kept.outcome.upper(), when, one_line(shlex.join(kept.command)), one_line(detail)))
    return lines


def failed_rehearsals(verdict: Verdict) -> list[RehearsalLine]:
    """The kept rehearsals of a verdict that failed on the CPU: why a target is not safe."""
    return rehearsal_lines([r for r in verdict.rehearsals if r.outcome == "failed-cpu"])


def rehearsal_text(rehearsed: Sequence[Rehearsed], indent: str = "  ") -> list[str]:
    """``rehearsed on HOST:`` and two lines per kept rehearsal (how and when it ended, what ran),
    for a terminal (wrapped by the caller)."""
    if not rehearsed:
        return []
    out = [f"{indent}rehearsed on {one_line(rehearsed[0].host)} (cpuguard rehearse, newest first):"]
    for line in rehearsal_lines(rehearsed):
        out.append(f"{indent}  {line.outcome} {line.when}: {line.detail}")
        out.append(f"{indent}    ran: {line.command}")
    return out
