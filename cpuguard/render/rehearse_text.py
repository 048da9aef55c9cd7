"""A rehearsal as text: the outcome and why first, then what ran, on which CPU, and the limits.

The program's output and the guest's file names are the customer's: every
line goes through ``one_line`` so that a terminal escape sequence is shown
escaped, never acted on.
"""

from __future__ import annotations

import shlex

from cpuguard.guest.errors import one_line
from cpuguard.rehearse.records import Rehearsal

#: Lines of the program's own output shown under a failure.
OUTPUT_LINES = 8


def render_rehearsal_text(rehearsal: Rehearsal) -> str:
    lines = [f"{rehearsal.outcome.value.upper()}: {one_line(rehearsal.vm)} on {one_line(rehearsal.host)}"]
    lines.append(f"  {one_line(rehearsal.reason)}")
    fault = rehearsal.fault
    if fault is not None and fault.instruction is not None:
        lines.append(f"  file:        {one_line(fault.object_path or '?')}")
        function = fault.function or "?"
        lines.append(
            f"  function:    {one_line(function)}+{fault.function_offset or 0} (address {fault.vaddr or 0:#x})"
        )
        lines.append(f"  instruction: {fault.instruction}")
        if fault.missing:
            lines.append(f"  missing:     {', '.join(fault.missing)}")
    lines.append(f"  command:     {one_line(shlex.join(rehearsal.command))}")
    status = f"signal {rehearsal.signal}" if rehearsal.signal else f"exit status {rehearsal.exit_status}"
    lines.append(f"  ended:       {status} after {rehearsal.duration:.1f} s (limit {rehearsal.time_limit:.0f} s)")
    lines.append(f"  cpu:         qemu-x86_64 -cpu {rehearsal.cpu}")
    lines.append(f"  files:       {len(rehearsal.files)} copied from the guest into the sandbox")
    if rehearsal.outcome.value != "passed":
        for name, text in (("stdout", rehearsal.stdout_tail), ("stderr", rehearsal.stderr_tail)):
            shown = [one_line(line) for line in text.splitlines() if line.strip()][-OUTPUT_LINES:]
            if shown:
                lines.append(f"  {name} (last lines):")
                lines.extend(f"    {line}" for line in shown)
    lines.extend(f"  note: {one_line(note)}" for note in rehearsal.notes)
    return "\n".join(lines) + "\n"
