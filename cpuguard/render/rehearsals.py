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
from cpuguard.records import Rehearsed

#: Characters of a command shown (an Asterisk start has a long -C path).
COMMAND_CHARS = 60


@dataclass(frozen=True)
class RehearsalLine:
    outcome: str  # PASSED, FAILED-CPU...
    when: str  # 2026-12-06 10:00 UTC
    command: str
    detail: str  # the fault, or the reason


def _command(words: Sequence[str]) -> str:
    text = one_line(shlex.join(words))
    return text if len(text) <= COMMAND_CHARS else text[: COMMAND_CHARS - 1] + "…"


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
        lines.append(RehearsalLine(kept.outcome.upper(), when, _command(kept.command), one_line(detail)))
    return lines


def rehearsal_text(rehearsed: Sequence[Rehearsed], indent: str = "  ") -> list[str]:
    """``rehearsed on HOST:`` and two lines per kept rehearsal, for a terminal."""
    if not rehearsed:
        return []
    out = [f"{indent}rehearsed on {one_line(rehearsed[0].host)} (cpuguard rehearse, newest first):"]
    for line in rehearsal_lines(rehearsed):
        out.append(f"{indent}  {line.outcome} {line.when}: {line.command}")
        out.append(f"{indent}    {line.detail}")
    return out
