"""A guest scan as text: what was read (OS, disks, when), then every chosen file with why.

Guest file names are the customer's: every name goes through ``one_line`` so
that a newline or a terminal escape sequence in a file name is shown escaped,
never acted on by the terminal.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

from cpuguard.guest.errors import one_line
from cpuguard.guest.records import CHAIN_NONE, GuestScan
from cpuguard.scan.records import ScanReport
from cpuguard.scan.render import render_file, render_text


def _chain(scan: GuestScan) -> list[str]:
    lines = []
    for disk in scan.disks:
        layers = " -> ".join(f"{one_line(layer.path)} ({layer.format})" for layer in disk.layers)
        source = "" if disk.chain_from == CHAIN_NONE else f"; backing chain from the {disk.chain_from}"
        lines.append(f"  disk {disk.target}: {layers}{source}")
    return lines


def _reason_kind(reason: str) -> str:
    reason = reason.split("; ")[0]  # the first rule that chose the file
    if reason.startswith("library of"):
        return "libraries they load"
    if reason.startswith("run by enabled unit"):
        return "run by enabled units"
    return reason


def render_guest_text(scan: GuestScan, baseline: frozenset[str]) -> str:
    when = f"{scan.scanned_at:%Y-%m-%d %H:%M} UTC"
    reused = f", unchanged since: result of {scan.reused_from:%Y-%m-%d %H:%M} UTC reused" if scan.reused_from else ""
    lines = [f"guest {one_line(scan.vm)} (read {when}{reused})"]
    if scan.problems:  # said first: every figure below is then a lower bound
        lines.append("  INCOMPLETE: part of the guest could not be read:")
        lines.extend(f"    - {one_line(p)}" for p in scan.problems)
    if scan.os is not None:
        lines.append(f"  OS: {one_line(scan.os.name)} (root file system on {scan.os.root})")
    if scan.os_need is not None:
        need = scan.os_need
        lines.append(f"  guest OS needs {need.level} ({need.family}; sources: docs and --format json)")
    elif scan.os is not None:
        lines.append("  guest OS: no documented CPU floor above x86-64 in cpuguard's data")
    lines.extend(_chain(scan))
    kinds = Counter(_reason_kind(f.reason) for f in scan.files)
    summary = ", ".join(f"{count} {kind}" for kind, count in sorted(kinds.items()))
    plural = "s" if len(scan.files) != 1 else ""
    lines.append(f"  {len(scan.files)} file{plural} chosen" + (f": {summary}" if summary else ""))
    lines.append("")
    why = {f.path: f for f in scan.files}
    for file in scan.report.files:
        if file.skipped == "not an ELF file":
            continue
        chosen = why.get(file.path)
        shown = replace(file, path=one_line(file.path))
        body = render_file(shown, baseline)
        if chosen is not None:
            body.insert(1, f"  chosen: {one_line(chosen.reason)} (disk {chosen.disk})")
        lines.extend(body)
    quiet = ScanReport((), scan.report.totals, scan.report.scanned_at)
    lines.append(render_text(quiet, baseline).rstrip("\n"))
    if scan.notes:
        lines.append("notes:")
        lines.extend(f"  - {one_line(n)}" for n in scan.notes)
    return "\n".join(lines) + "\n"
